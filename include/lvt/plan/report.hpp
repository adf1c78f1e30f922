#pragma once
// The memory report of a plan: a breakdown table (text), JSON, and an SVG map of the device
// arena (buffers as rectangles over step time x address, coloured by kind). Run-time only.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "lvt/plan/planner.hpp"

namespace lvt::plan {

// A plan as spans, so the report serves the run-time Plan and the compile-time FixedPlan.
struct PlanView {
  ModelConfig model;
  PlanOptions options;
  PlanError error;
  std::span<const Action> actions;
  std::span<const Buffer> buffers;
  Summary summary;

  PlanView(const Plan& p)  // NOLINT: implicit on purpose
      : model(p.model), options(p.options), error(p.error), actions(p.actions),
        buffers(p.buffers), summary(p.summary) {}
  template <int A, int B, int U>
  PlanView(const FixedPlan<A, B, U>& p)  // NOLINT
      : model(p.model), options(p.options), error(p.error), actions(p.actions),
        buffers(p.buffers), summary(p.summary) {}
};

inline std::string format_bytes(i64 b) {
  char s[32];
  const double x = double(b < 0 ? -b : b);
  if (x >= double(gib)) std::snprintf(s, sizeof s, "%.2f GiB", x / double(gib));
  else if (x >= double(mib)) std::snprintf(s, sizeof s, "%.1f MiB", x / double(mib));
  else if (x >= 1024) std::snprintf(s, sizeof s, "%.1f KiB", x / 1024.0);
  else std::snprintf(s, sizeof s, "%lld B", static_cast<long long>(x));
  return b < 0 ? "-" + std::string(s) : std::string(s);
}

inline std::string buffer_name(const PlanView& p, const Buffer& b) {
  std::string n = kind_name(b.kind);
  if (b.kind == Kind::weights && b.memory == Memory::device && b.layer < 0) {
    // A ring slot: which one is its position among the slots.
    int k = 0;
    for (const Buffer& o : p.buffers) {
      if (&o == &b) break;
      k += o.kind == Kind::weights && o.memory == Memory::device && o.layer < 0;
    }
    return "weights.slot" + std::to_string(k);
  }
  if (b.kind == Kind::workspace && b.role == Role::generation) return n + ".generate";
  if (b.kind == Kind::workspace && b.first >= 0)
    n += std::string(".") + op_name(p.actions[std::size_t(b.first)].op);
  if (b.kind == Kind::residual && b.memory == Memory::pinned) n = "checkpoint";
  if (b.layer >= 0) n += ".L" + std::to_string(b.layer);
  if (b.memory == Memory::pinned) n += "@host";
  return n;
}

inline std::string targets_list(unsigned t) {
  std::string s;
  for (int i = 0; i < 7; ++i)
    if (t & (1u << i)) s += std::string(s.empty() ? "" : ",") + targets::names[i];
  return s;
}

inline std::string describe_options(const ModelConfig& m, const PlanOptions& o) {
  char buf[512];
  std::string q = o.quant == QuantKind::none
                      ? std::string("no quantization (") + dtype_name(o.precision) + " weights)"
                      : std::string(quant_name(o.quant)) + (o.double_quant ? " + double quant" : "") +
                            " (block " + std::to_string(o.quant_block) + ")";
  std::string sparse = o.sparse_first < 0
                           ? "all " + std::to_string(m.layers) + " layers"
                           : "first " + std::to_string(o.sparse_first) + " + last " +
                                 std::to_string(o.sparse_last) + " layers";
  std::snprintf(buf, sizeof buf,
                "%s; weights %s; checkpoint %s%s; LoRA r=%d alpha=%g%s on %s, %s; %s; batch %d x "
                "seq %d; AdamW %s",
                q.c_str(),
                o.offload_weights ? ("streamed from pinned memory (" + std::to_string(o.weight_slots) + " slots)").c_str()
                                  : "resident",
                o.checkpoint_every ? ("every " + std::to_string(o.checkpoint_every)).c_str() : "none",
                o.offload_checkpoints ? " (offloaded)" : "", o.lora_rank, o.lora_alpha,
                o.rslora ? " (rsLoRA)" : "", targets_list(o.lora_targets).c_str(), sparse.c_str(),
                dtype_name(o.precision), o.batch, o.seq,
                o.offload_optimizer ? "states in pinned memory (host step)" : "on the device");
  if (o.generate_context > 0)
    return std::string(buf) + "; KV cache for " + std::to_string(o.generate_context) +
           " tokens per sequence";
  return buf;
}

// The breakdown table: per kind, device bytes live at the peak and summed over the step.
inline std::string table(const PlanView& p) {
  std::string out;
  char line[256];
  const ModelConfig& m = p.model;
  std::snprintf(line, sizeof line,
                "model: %s, %d layers, hidden %d, heads %d/%d, ffn %d, vocab %d (%.2f B params)\n",
                arch_name(m.arch), m.layers, m.hidden, m.heads, m.kv_heads, m.ffn, m.vocab,
                double(m.params()) / 1e9);
  out += line;
  out += "policies: " + describe_options(m, p.options) + "\n";
  if (p.error != PlanError::ok) return out + "error: " + message(p.error) + "\n";
  const Summary& s = p.summary;
  std::snprintf(line, sizeof line, "\n%-24s %14s %14s\n", "device memory", "at peak", "most live");
  out += line;
  for (int k = 0; k < kind_count; ++k) {
    if (s.kind_bytes[k] == 0) continue;
    std::snprintf(line, sizeof line, "  %-22s %14s %14s\n", kind_name(Kind(k)),
                  format_bytes(s.kind_at_peak[k]).c_str(), format_bytes(s.kind_max_live[k]).c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-22s %14s   (lower bound %s, x%.4f)\n", "arena (packed)",
                format_bytes(s.arena_bytes).c_str(), format_bytes(s.live_lower_bound).c_str(),
                s.packing_ratio());
  out += line;
  std::snprintf(line, sizeof line, "  %-22s %14s\n", "CUDA context reserve",
                format_bytes(s.context_reserve_bytes).c_str());
  out += line;
  std::snprintf(line, sizeof line, "  %-22s %14s", "total", format_bytes(s.device_bytes()).c_str());
  out += line;
  if (s.budget_bytes) {
    std::snprintf(line, sizeof line, "   of %s%s: %s %s\n", format_bytes(s.budget_bytes).c_str(),
                  p.options.sm ? (" (sm_" + std::to_string(p.options.sm) + ")").c_str() : "",
                  s.fits() ? "fits," : "DOES NOT FIT,",
                  s.fits() ? (format_bytes(s.budget_bytes - s.device_bytes()) + " headroom").c_str()
                           : (format_bytes(s.missing_bytes()) + " missing").c_str());
    out += line;
  } else {
    out += "   (no budget given)\n";
  }
  if (s.pinned_bytes) {
    std::snprintf(line, sizeof line, "\npinned host memory: %s (", format_bytes(s.pinned_bytes).c_str());
    out += line;
    bool first = true;
    for (int k = 0; k < kind_count; ++k) {
      if (!s.pinned_kind_bytes[k]) continue;
      out += std::string(first ? "" : ", ") + kind_name(Kind(k)) + " " +
             format_bytes(s.pinned_kind_bytes[k]);
      first = false;
    }
    out += ")\n";
  }
  int fetches = 0;
  for (const Action& a : p.actions) fetches += a.op == Op::fetch_weights;
  std::snprintf(line, sizeof line,
                "\nper step: %lld tokens, %d actions, %d weight fetches, %s host<->device, %d of "
                "%d layers backward, %d recomputed; %lld LoRA params; base weights %s\n",
                static_cast<long long>(s.tokens), s.actions, fetches,
                format_bytes(s.streamed_bytes).c_str(), s.backward_layers, m.layers,
                s.recompute_layers, static_cast<long long>(s.lora_params),
                format_bytes(s.base_weight_bytes).c_str());
  out += line;
  return out;
}

inline nlohmann::json to_json(const ModelConfig& m) {
  return {{"arch", arch_name(m.arch)}, {"layers", m.layers}, {"hidden", m.hidden},
          {"heads", m.heads}, {"kv_heads", m.kv_heads}, {"head_dim", m.head_dim},
          {"ffn", m.ffn}, {"vocab", m.vocab}, {"tied_embeddings", m.tied_embeddings},
          {"rope_theta", m.rope_theta}, {"rope_scaling", rope_scaling_name(m.rope_scaling)},
          {"partial_rotary_factor", m.partial_rotary_factor}, {"norm_eps", m.norm_eps},
          {"qkv_bias", m.qkv_bias}, {"max_position", m.max_position}, {"params", m.params()}};
}

inline nlohmann::json to_json(const PlanOptions& o) {
  nlohmann::json j = {{"quant", quant_name(o.quant)}, {"double_quant", o.double_quant},
          {"quant_block", o.quant_block}, {"offload_weights", o.offload_weights},
          {"weight_slots", o.weight_slots}, {"offload_checkpoints", o.offload_checkpoints},
          {"checkpoint_every", o.checkpoint_every}, {"sparse_first", o.sparse_first},
          {"sparse_last", o.sparse_last}, {"lora_rank", o.lora_rank},
          {"lora_alpha", o.lora_alpha}, {"lora_targets", targets_list(o.lora_targets)},
          {"rslora", o.rslora}, {"precision", dtype_name(o.precision)}, {"batch", o.batch},
          {"seq", o.seq}, {"offload_optimizer", o.offload_optimizer},
          {"budget_bytes", o.budget_bytes}, {"sm", o.sm}};
  if (o.generate_context > 0) j["generate_context"] = o.generate_context;  // absent: no cache
  if (o.precision == DType::fp32 && o.host_threads > 1) j["host_threads"] = o.host_threads;
  return j;
}

inline nlohmann::json to_json(const PlanView& p) {
  nlohmann::json j;
  j["model"] = to_json(p.model);
  j["options"] = to_json(p.options);
  j["error"] = p.error == PlanError::ok ? nlohmann::json(nullptr) : nlohmann::json(message(p.error));
  const Summary& s = p.summary;
  nlohmann::json kinds = nlohmann::json::object();
  for (int k = 0; k < kind_count; ++k)
    if (s.kind_bytes[k] || s.pinned_kind_bytes[k])
      kinds[kind_name(Kind(k))] = {{"device_sum_bytes", s.kind_bytes[k]},
                                   {"max_live_bytes", s.kind_max_live[k]},
                                   {"at_peak_bytes", s.kind_at_peak[k]},
                                   {"pinned_bytes", s.pinned_kind_bytes[k]}};
  j["summary"] = {{"arena_bytes", s.arena_bytes}, {"live_lower_bound", s.live_lower_bound},
                  {"packing_ratio", s.packing_ratio()}, {"pinned_bytes", s.pinned_bytes},
                  {"context_reserve_bytes", s.context_reserve_bytes},
                  {"device_bytes", s.device_bytes()}, {"budget_bytes", s.budget_bytes},
                  {"fits", s.fits()}, {"missing_bytes", s.missing_bytes()},
                  {"peak_action", s.peak_action}, {"streamed_bytes", s.streamed_bytes},
                  {"recompute_layers", s.recompute_layers},
                  {"backward_layers", s.backward_layers}, {"tokens", s.tokens},
                  {"lora_params", s.lora_params}, {"base_weight_bytes", s.base_weight_bytes},
                  {"kinds", kinds}};
  nlohmann::json bufs = nlohmann::json::array();
  for (const Buffer& b : p.buffers)
    bufs.push_back({{"name", buffer_name(p, b)}, {"kind", kind_name(b.kind)},
                    {"memory", b.memory == Memory::device ? "device" : "pinned"},
                    {"layer", b.layer}, {"bytes", b.bytes}, {"offset", b.offset},
                    {"first", b.first}, {"last", b.last}});
  j["buffers"] = bufs;
  nlohmann::json acts = nlohmann::json::array();
  for (std::size_t i = 0; i < p.actions.size(); ++i) {
    const Action& a = p.actions[i];
    nlohmann::json waits = nlohmann::json::object();
    for (int s2 = 0; s2 < stream_count; ++s2)
      if (a.wait[s2] >= 0) waits[stream_name(Stream(s2))] = a.wait[s2];
    acts.push_back({{"index", i}, {"op", op_name(a.op)}, {"stream", stream_name(a.stream)},
                    {"layer", a.layer}, {"slot", a.slot}, {"bytes", a.bytes}, {"waits", waits}});
  }
  j["actions"] = acts;
  return j;
}

inline const char* kind_colour(Kind k) {
  constexpr const char* c[kind_count] = {"#4e79a7", "#59a14f", "#edc948", "#f28e2b", "#e15759",
                                         "#76b7b2", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
                                         "#8cd17d", "#d37295"};
  return c[int(k)];
}

inline std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// SVG map of the device arena: x is step time (actions in program order), y the address.
inline std::string svg(const PlanView& p) {
  const double W = 1100, H = 560, left = 80, top = 50, legend_w = 190;
  const double n_act = p.actions.empty() ? 1 : double(p.actions.size());
  const i64 cap = std::max<i64>(p.summary.arena_bytes, 1);
  auto X = [&](double t) { return left + t / n_act * W; };
  auto Y = [&](double addr) { return top + H - addr / double(cap) * H; };
  std::string o;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n",
                left + W + legend_w + 20, top + H + 70);
  o += buf;
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.0f\" y=\"22\" font-size=\"15\">lvt device arena: %s packed "
                "(lower bound %s), %s %d layers, batch %d x seq %d</text>\n",
                left, format_bytes(p.summary.arena_bytes).c_str(),
                format_bytes(p.summary.live_lower_bound).c_str(), arch_name(p.model.arch),
                p.model.layers, p.options.batch, p.options.seq);
  o += buf;
  // Phases along the time axis: where forward ends, the loss, the backward.
  for (std::size_t i = 0; i < p.actions.size(); ++i)
    if (p.actions[i].op == Op::loss) {
      std::snprintf(buf, sizeof buf,
                    "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#888\" "
                    "stroke-dasharray=\"4 3\"/><text x=\"%.1f\" y=\"%.0f\" fill=\"#555\">loss</text>\n",
                    X(double(i)), top, X(double(i)), top + H, X(double(i)) + 3, top + 12);
      o += buf;
    }
  for (const Buffer& b : p.buffers) {
    if (b.memory != Memory::device || b.first < 0) continue;
    const double x0 = X(b.first), x1 = X(b.last + 1);
    const double y0 = Y(double(b.offset + b.bytes)), y1 = Y(double(b.offset));
    std::snprintf(buf, sizeof buf,
                  "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\" "
                  "stroke=\"white\" stroke-width=\"0.3\"><title>%s: %s at %s, actions %d-%d</title>"
                  "</rect>\n",
                  x0, y0, std::max(x1 - x0, 0.5), std::max(y1 - y0, 0.5), kind_colour(b.kind),
                  xml_escape(buffer_name(p, b)).c_str(), format_bytes(b.bytes).c_str(),
                  format_bytes(b.offset).c_str(), b.first, b.last);
    o += buf;
  }
  // Axes.
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
                "<text x=\"%.0f\" y=\"%.0f\">step time (actions in program order: %zu) &#8594;</text>\n"
                "<text x=\"14\" y=\"%.0f\" transform=\"rotate(-90 14 %.0f)\">address &#8594;</text>\n",
                left, top + H, left + W, top + H, left, top, left, top + H, left, top + H + 30,
                p.actions.size(), top + H / 2, top + H / 2);
  o += buf;
  for (int i = 0; i <= 4; ++i) {
    const double a = double(cap) * i / 4;
    std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  left - 4, Y(a) + 4, format_bytes(i64(a)).c_str());
    o += buf;
  }
  // Legend.
  int row = 0;
  for (int k = 0; k < kind_count; ++k) {
    if (!p.summary.kind_bytes[k]) continue;
    const double y = top + 10 + row * 20;
    std::snprintf(buf, sizeof buf,
                  "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"14\" fill=\"%s\"/>"
                  "<text x=\"%.0f\" y=\"%.0f\">%s (%s)</text>\n",
                  left + W + 20, y, kind_colour(Kind(k)), left + W + 40, y + 12, kind_name(Kind(k)),
                  format_bytes(p.summary.kind_bytes[k]).c_str());
    o += buf;
    ++row;
  }
  o += "</svg>\n";
  return o;
}

}  // namespace lvt::plan
