#pragma once
// Command-line flags shared by `lvt plan`, `lvt train` and `lvt eval`: the model, the budget and
// every policy, filled into lvt::PlanOptions (the same struct the compile-time policies fill).
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/gguf_model.hpp"
#include "lvt/io/hf_config.hpp"
#include "lvt/model/presets.hpp"
#include "lvt/policies.hpp"

namespace lvt::cli {

// argv as flag -> value ("" for switches), with positional arguments kept in order.
struct Args {
  std::string command;
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;

  bool has(const std::string& f) const { return flags.count(f) != 0; }
  std::string get(const std::string& f, const std::string& fallback = "") const {
    auto it = flags.find(f);
    return it == flags.end() ? fallback : it->second;
  }
};

// `switches` take no value; every other --flag takes the next argument (or --flag=value).
inline Args parse_args(int argc, char** argv, const std::vector<std::string>& switches,
                       const std::vector<std::string>& valued) {
  Args a;
  a.command = argv[0];
  auto known = [](const std::vector<std::string>& v, const std::string& f) {
    for (const auto& s : v)
      if (s == f) return true;
    return false;
  };
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      a.positional.push_back(s);
      continue;
    }
    std::string value;
    const auto eq = s.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = s.substr(eq + 1);
      s = s.substr(0, eq);
    }
    if (known(switches, s)) {
      if (inline_value) throw Error(s + " takes no value");
      a.flags[s] = "";
    } else if (known(valued, s)) {
      if (!inline_value) {
        if (i + 1 >= argc) throw Error(s + " needs a value");
        value = argv[++i];
      }
      a.flags[s] = value;
    } else {
      throw Error("unknown option " + s + " (see lvt " + a.command + " --help)");
    }
  }
  return a;
}

inline long long parse_int(const std::string& flag, const std::string& v, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != 0 || errno != 0 || x < lo || x > hi)
    throw Error(flag + " '" + v + "': expected an integer from " + std::to_string(lo) + " to " +
                std::to_string(hi));
  return x;
}

inline double parse_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != 0 || !std::isfinite(x)) throw Error(flag + " '" + v + "': expected a number");
  return x;
}

// "8GiB", "7.5G", "8192MiB", "8000000000", "8GB" (decimal), or a GPU name (gpu::tiers).
struct Budget {
  std::int64_t bytes = 0;
  int sm = 0;
};
inline Budget parse_budget(const std::string& v) {
  std::string low;
  for (char c : v) low += char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& t : gpu::tiers)
    if (low == t.name) return {std::int64_t(t.gib) << 30, t.sm};
  std::size_t i = 0;
  while (i < v.size() && (std::isdigit(static_cast<unsigned char>(v[i])) || v[i] == '.')) ++i;
  std::string num = v.substr(0, i), unit = v.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  const std::map<std::string, double> units = {
      {"", 1},          {"b", 1},           {"k", 1024.0},    {"kib", 1024.0},
      {"kb", 1e3},      {"m", 1048576.0},   {"mib", 1048576.0}, {"mb", 1e6},
      {"g", 1073741824.0}, {"gib", 1073741824.0}, {"gb", 1e9}, {"t", 1099511627776.0},
      {"tib", 1099511627776.0}, {"tb", 1e12}};
  std::string ulow;
  for (char c : unit) ulow += char(std::tolower(static_cast<unsigned char>(c)));
  char* end = nullptr;
  const double x = num.empty() ? NAN : std::strtod(num.c_str(), &end);
  auto u = units.find(ulow);
  if (num.empty() || *end != 0 || !(x > 0) || u == units.end()) {
    std::string names;
    for (const auto& t : gpu::tiers) names += std::string(names.empty() ? "" : ", ") + t.name;
    throw Error("--budget '" + v + "': expected a size like 8GiB, 7.5G, 8192MiB or 8000000000, "
                "or a GPU name: " + names);
  }
  return {std::int64_t(x * u->second), 0};
}

inline unsigned parse_targets(const std::string& v) {
  if (v == "all" || v == "all-linear") return targets::all;
  if (v == "attention") return targets::attention;
  if (v == "mlp") return targets::mlp;
  unsigned t = 0;
  std::size_t start = 0;
  while (start <= v.size()) {
    const auto comma = v.find(',', start);
    const std::string name = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    bool found = false;
    for (int i = 0; i < 7; ++i)
      if (name == targets::names[i]) t |= 1u << i, found = true;
    if (!found)
      throw Error("--targets: unknown projection '" + name +
                  "' (use q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, or all, "
                  "attention, mlp)");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return t;
}

// --model: a preset name, a Hugging Face folder, a config.json, or a llama .gguf file (its
// metadata, io/gguf_model.hpp).
inline ModelConfig load_model(const std::string& v) {
  if (const ModelConfig* p = presets::find(v.c_str())) return *p;
  namespace fs = std::filesystem;
  fs::path path(v);
  if (path.extension() == ".gguf" && fs::is_regular_file(path)) {
    const io::GgufFile f(path);
    return io::gguf_llama_config(f.header(), path.string(), f.image());
  }
  if (fs::is_directory(path)) path /= "config.json";
  if (!fs::exists(path)) {
    std::string names;
    for (const auto& p : presets::all) names += std::string(names.empty() ? "" : ", ") + p.name;
    throw Error("--model '" + v + "': neither a preset (" + names +
                ") nor a folder or file holding config.json, nor a .gguf file");
  }
  return io::read_hf_config(path);
}

inline const std::vector<std::string> policy_switches = {
    "--no-double-quant", "--offload-checkpoints", "--offload-optimizer", "--rslora"};
inline const std::vector<std::string> policy_flags = {
    "--budget", "--sm", "--quant", "--block", "--offload", "--slots", "--checkpoint-every",
    "--sparse", "--lora-r", "--lora-alpha", "--targets", "--precision", "--batch", "--seq",
    "--lora-dropout", "--generate-context"};

inline const char* policy_help =
    "  --budget SIZE|GPU       device memory: 8GiB, 7.5G, 8192MiB, or a GPU name (rtx4060, ...)\n"
    "  --sm N                  compute capability x10 (75, 80, 86, 89, 90)\n"
    "  --quant nf4|fp4|int8|none   base weight format (default nf4)\n"
    "  --no-double-quant       keep fp32 absmax (default: double quantization)\n"
    "  --block N               quantization block, 32..4096 (default 64)\n"
    "  --offload pinned|none   stream base weights from pinned host memory (default none)\n"
    "  --slots N               device ring slots for streamed layers (default 2)\n"
    "  --checkpoint-every N    checkpoint every N layers (default 0: keep all activations)\n"
    "  --offload-checkpoints   park checkpoints in pinned host memory\n"
    "  --sparse F,L            LoRA only in the first F and last L layers\n"
    "  --lora-r R --lora-alpha A --lora-dropout P --rslora\n"
    "  --targets LIST          q_proj,k_proj,...,down_proj | all | attention | mlp\n"
    "  --precision bf16|fp16   compute precision (fp16 for sm_75)\n"
    "  --batch B --seq T       micro-batch shape (default 1 x 512)\n"
    "  --offload-optimizer     AdamW states in pinned memory, step on the host\n"
    "  --generate-context N    plan a KV cache of N tokens per sequence (generation; default 0)\n";

inline PlanOptions plan_options(const Args& a) {
  PlanOptions o;
  if (a.has("--budget")) {
    const Budget b = parse_budget(a.get("--budget"));
    o.budget_bytes = b.bytes;
    o.sm = b.sm;
  }
  if (a.has("--sm")) o.sm = int(parse_int("--sm", a.get("--sm"), 30, 200));
  if (o.sm != 0 && o.sm < 80) o.precision = DType::fp16;  // bf16 needs sm_80
  if (a.has("--quant")) {
    const std::string q = a.get("--quant");
    if (q == "nf4") o.quant = QuantKind::nf4;
    else if (q == "fp4") o.quant = QuantKind::fp4;
    else if (q == "int8") o.quant = QuantKind::int8, o.double_quant = false;
    else if (q == "none") o.quant = QuantKind::none, o.double_quant = false;
    else throw Error("--quant '" + q + "': expected nf4, fp4, int8 or none");
  }
  if (a.has("--no-double-quant")) o.double_quant = false;
  if (a.has("--block")) o.quant_block = int(parse_int("--block", a.get("--block"), 1, 1 << 20));
  if (a.has("--offload")) {
    const std::string w = a.get("--offload");
    if (w == "pinned") o.offload_weights = true;
    else if (w != "none") throw Error("--offload '" + w + "': expected pinned or none");
  }
  if (a.has("--slots")) o.weight_slots = int(parse_int("--slots", a.get("--slots"), 1, 64));
  if (a.has("--checkpoint-every"))
    o.checkpoint_every = int(parse_int("--checkpoint-every", a.get("--checkpoint-every"), 0, 100000));
  if (a.has("--offload-checkpoints")) o.offload_checkpoints = true;
  if (a.has("--sparse")) {
    const std::string s = a.get("--sparse");
    const auto comma = s.find(',');
    if (comma == std::string::npos) throw Error("--sparse '" + s + "': expected F,L (e.g. 3,5)");
    o.sparse_first = int(parse_int("--sparse", s.substr(0, comma), 0, 100000));
    o.sparse_last = int(parse_int("--sparse", s.substr(comma + 1), 0, 100000));
  }
  if (a.has("--lora-r")) o.lora_rank = int(parse_int("--lora-r", a.get("--lora-r"), 1, 65536));
  if (a.has("--lora-alpha")) o.lora_alpha = parse_double("--lora-alpha", a.get("--lora-alpha"));
  if (a.has("--lora-dropout")) o.lora_dropout = parse_double("--lora-dropout", a.get("--lora-dropout"));
  if (a.has("--rslora")) o.rslora = true;
  if (a.has("--targets")) o.lora_targets = parse_targets(a.get("--targets"));
  if (a.has("--precision")) {
    const std::string p = a.get("--precision");
    if (p == "bf16") o.precision = DType::bf16;
    else if (p == "fp16") o.precision = DType::fp16;
    else throw Error("--precision '" + p + "': expected bf16 or fp16");
  }
  if (a.has("--batch")) o.batch = int(parse_int("--batch", a.get("--batch"), 1, 1 << 20));
  if (a.has("--seq")) o.seq = int(parse_int("--seq", a.get("--seq"), 1, 1 << 24));
  if (a.has("--offload-optimizer")) o.offload_optimizer = true;
  if (a.has("--generate-context"))
    o.generate_context = int(parse_int("--generate-context", a.get("--generate-context"), 0, 1 << 24));
  return o;
}

// The flags that turn `from` into `to` (for "fits with: ...").
inline std::string flag_changes(const PlanOptions& from, const PlanOptions& to) {
  std::string s;
  auto add = [&](const std::string& f) { s += (s.empty() ? "" : " ") + f; };
  if (to.offload_weights != from.offload_weights) add(to.offload_weights ? "--offload pinned" : "--offload none");
  if (to.checkpoint_every != from.checkpoint_every) add("--checkpoint-every " + std::to_string(to.checkpoint_every));
  if (to.offload_checkpoints && !from.offload_checkpoints) add("--offload-checkpoints");
  if (to.offload_optimizer && !from.offload_optimizer) add("--offload-optimizer");
  if (to.batch != from.batch) add("--batch " + std::to_string(to.batch));
  if (to.seq != from.seq) add("--seq " + std::to_string(to.seq));
  return s;
}

}  // namespace lvt::cli
