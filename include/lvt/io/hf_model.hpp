#pragma once
// A Hugging Face model folder (config.json + model.safetensors or sharded safetensors) as lvt
// sees it: the ModelConfig, and the weights under canonical Llama names, visited one tensor at a
// time so that peak host memory is the largest tensor, not the model.
//
// Canonical names are Llama's (`model.layers.N.self_attn.q_proj.weight`, ...). phi3 stores
// fused `qkv_proj` ([q_dim + 2 kv_dim, hidden]: q rows, then k, then v) and `gate_up_proj`
// ([2 ffn, hidden]: gate rows, then up); lvt SPLITS them on load into q/k/v and gate/up, which
// is zero-copy because the parts are contiguous row ranges. Adapters and merges use the split
// names for every architecture; a merge writes back into the fused rows (see hf_merge.hpp).
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <sstream>
#include <type_traits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/hf_config.hpp"
#include "lvt/io/safetensors.hpp"
#include "lvt/model/config.hpp"

namespace lvt::io {

enum class WeightKind : std::uint8_t {
  embed, q, k, v, o, gate, up, down, q_bias, k_bias, v_bias, attn_norm, mlp_norm, final_norm,
  lm_head
};

// The projection kinds LoRA targets, in lvt::targets bit order (q_proj = bit 0, ...).
constexpr int target_index(WeightKind k) {
  switch (k) {
    case WeightKind::q: return 0;
    case WeightKind::k: return 1;
    case WeightKind::v: return 2;
    case WeightKind::o: return 3;
    case WeightKind::gate: return 4;
    case WeightKind::up: return 5;
    case WeightKind::down: return 6;
    default: return -1;
  }
}

// One weight the model needs: canonical name, shape ([out, in] for projections), and where
// it sits. layer is -1 for embeddings, final norm and lm_head.
struct WeightSlot {
  std::string name;
  WeightKind kind;
  int layer;
  std::vector<std::int64_t> shape;
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// What every weight source (HfModel, GgufModel) offers on top of its own `slots()` and
// `read(i, span)`: a slot as a new vector, lookup by name, and a visit of every weight through
// one reused buffer. Derived supplies slots() and read(std::size_t, std::span<float>).
template <class Derived>
class SlotReader {
 public:
  std::vector<float> read(std::size_t i) const {
    std::vector<float> v(std::size_t(self().slots()[i].numel()));
    self().read(i, std::span<float>(v));
    return v;
  }
  const WeightSlot* find_slot(std::string_view name) const {
    for (const auto& s : self().slots())
      if (s.name == name) return &s;
    return nullptr;
  }
  std::int64_t largest_slot_numel() const {
    std::int64_t m = 0;
    for (const auto& s : self().slots()) m = std::max(m, s.numel());
    return m;
  }

  // Visits every weight in order with its values as float, through ONE reused buffer of the
  // largest tensor's size: the host memory a load needs beyond the visitor's own output.
  // Quantizing loaders pass a visitor that quantizes `values` into their storage.
  void for_each_weight(
      const std::function<void(const WeightSlot&, std::span<const float>)>& visit) const {
    const auto& slots = self().slots();
    std::vector<float> buf(static_cast<std::size_t>(largest_slot_numel()));
    for (std::size_t i = 0; i < slots.size(); ++i) {
      std::span<float> v(buf.data(), std::size_t(slots[i].numel()));
      self().read(i, v);
      visit(slots[i], v);
    }
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

// Canonical name of a projection weight: model.layers.N.{self_attn|mlp}.NAME.weight.
inline std::string projection_name(int layer, int target) {
  const bool attn = target < 4;
  return "model.layers." + std::to_string(layer) + (attn ? ".self_attn." : ".mlp.") +
         targets::names[target] + ".weight";
}

// [out, in] of projection `target` (lvt::targets bit index).
inline std::pair<std::int64_t, std::int64_t> projection_shape(const ModelConfig& c, int target) {
  const std::int64_t h = c.hidden, f = c.ffn;
  switch (target) {
    case 0: return {c.q_dim(), h};
    case 1:
    case 2: return {c.kv_dim(), h};
    case 3: return {h, c.q_dim()};
    case 4:
    case 5: return {f, h};
    default: return {h, f};
  }
}

// Every weight of a model in file order of a typical checkpoint (embeddings, layers, norm, head).
inline std::vector<WeightSlot> weight_slots(const ModelConfig& c) {
  std::vector<WeightSlot> s;
  const std::int64_t h = c.hidden;
  s.push_back({"model.embed_tokens.weight", WeightKind::embed, -1, {c.vocab, h}});
  const WeightKind proj[7] = {WeightKind::q, WeightKind::k, WeightKind::v, WeightKind::o,
                              WeightKind::gate, WeightKind::up, WeightKind::down};
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", WeightKind::attn_norm, l, {h}});
    for (int t = 0; t < 7; ++t) {
      auto [o, i] = projection_shape(c, t);
      s.push_back({projection_name(l, t), proj[t], l, {o, i}});
    }
    if (c.qkv_bias) {
      s.push_back({p + "self_attn.q_proj.bias", WeightKind::q_bias, l, {c.q_dim()}});
      s.push_back({p + "self_attn.k_proj.bias", WeightKind::k_bias, l, {c.kv_dim()}});
      s.push_back({p + "self_attn.v_proj.bias", WeightKind::v_bias, l, {c.kv_dim()}});
    }
    s.push_back({p + "post_attention_layernorm.weight", WeightKind::mlp_norm, l, {h}});
  }
  s.push_back({"model.norm.weight", WeightKind::final_norm, -1, {h}});
  if (!c.tied_embeddings) s.push_back({"lm_head.weight", WeightKind::lm_head, -1, {c.vocab, h}});
  return s;
}

// Where a slot's values live in the folder: a file tensor, and the row range of it (all rows,
// except for phi3's fused tensors).
struct WeightSource {
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;
  std::string stored_name;    // the name in the checkpoint (fused name for phi3)
  std::int64_t row_begin = 0;
  std::int64_t rows = 0;      // rows taken; row length = stored shape[1] (1 for vectors)

  std::int64_t row_elems() const { return info->shape.size() == 2 ? info->shape[1] : 1; }
  std::span<const std::byte> bytes() const {
    const std::uint64_t eb = std::uint64_t(st_dtype_bytes(info->dtype));
    return file->bytes(*info).subspan(std::uint64_t(row_begin * row_elems()) * eb,
                                      std::uint64_t(rows * row_elems()) * eb);
  }
};

// The fused phi3 tensor a canonical slot reads from, and its row offset in it.
inline bool fused_source(const ModelConfig& c, const WeightSlot& s, std::string& name,
                         std::int64_t& row_begin, std::vector<std::int64_t>& fused_shape) {
  if (c.arch != Arch::phi3) return false;
  const std::string p = "model.layers." + std::to_string(s.layer) + ".";
  const std::int64_t h = c.hidden;
  switch (s.kind) {
    case WeightKind::q:
    case WeightKind::k:
    case WeightKind::v:
      name = p + "self_attn.qkv_proj.weight";
      fused_shape = {c.q_dim() + 2 * c.kv_dim(), h};
      row_begin = s.kind == WeightKind::q ? 0
                  : s.kind == WeightKind::k ? c.q_dim()
                                            : c.q_dim() + c.kv_dim();
      return true;
    case WeightKind::gate:
    case WeightKind::up:
      name = p + "mlp.gate_up_proj.weight";
      fused_shape = {2 * std::int64_t(c.ffn), h};
      row_begin = s.kind == WeightKind::gate ? 0 : c.ffn;
      return true;
    default:
      return false;
  }
}

// Differences between two descriptions, as config.json field names: "" when equal.
inline std::string config_mismatch(const ModelConfig& expected, const ModelConfig& got) {
  std::string out;
  auto str = [](auto v) -> std::string {
    if constexpr (std::is_same_v<decltype(v), bool>) return v ? "true" : "false";
    std::ostringstream os;
    os << v;
    return os.str();
  };
  auto field = [&](const char* name, auto e, auto g) {
    if (e == g) return;
    if (!out.empty()) out += "; ";
    out += std::string("field '") + name + "' is " + str(g) +
           " but the model description says " + str(e);
  };
  auto text = [&](const char* name, const char* e, const char* g) {
    if (std::string(e) == g) return;
    if (!out.empty()) out += "; ";
    out += std::string("field '") + name + "' is " + g + " but the model description says " + e;
  };
  text("model_type", arch_name(expected.arch), arch_name(got.arch));
  field("num_hidden_layers", expected.layers, got.layers);
  field("hidden_size", expected.hidden, got.hidden);
  field("num_attention_heads", expected.heads, got.heads);
  field("num_key_value_heads", expected.kv_heads, got.kv_heads);
  field("head_dim", expected.head_dim, got.head_dim);
  field("intermediate_size", expected.ffn, got.ffn);
  field("vocab_size", expected.vocab, got.vocab);
  field("tie_word_embeddings", expected.tied_embeddings, got.tied_embeddings);
  field("rope_theta", expected.rope_theta, got.rope_theta);
  text("rope_scaling.rope_type", rope_scaling_name(expected.rope_scaling),
       rope_scaling_name(got.rope_scaling));
  field("rope_scaling.factor", expected.rope_factor, got.rope_factor);
  field("rope_scaling.low_freq_factor", expected.rope_low_freq_factor, got.rope_low_freq_factor);
  field("rope_scaling.high_freq_factor", expected.rope_high_freq_factor,
        got.rope_high_freq_factor);
  field("original_max_position_embeddings", expected.rope_original_max_position,
        got.rope_original_max_position);
  field("partial_rotary_factor", expected.partial_rotary_factor, got.partial_rotary_factor);
  field("rms_norm_eps", expected.norm_eps, got.norm_eps);
  field("qkv_bias (model_type qwen2)", expected.qkv_bias, got.qkv_bias);
  field("max_position_embeddings", expected.max_position, got.max_position);
  return out;
}

// An opened Hugging Face folder. Construction reads config.json, compares it with `expected`
// when given, maps the safetensors files and checks that every weight the config implies is
// there with the right shape and a floating dtype, before a single value is read.
class HfModel : public SlotReader<HfModel> {
 public:
  explicit HfModel(const std::filesystem::path& dir, const ModelConfig* expected = nullptr)
      : dir_(dir), config_(read_hf_config(dir / "config.json")),
        weights_(SafetensorsSet::open_dir(dir)) {
    if (expected) {
      const std::string diff = config_mismatch(*expected, config_);
      if (!diff.empty()) throw Error((dir / "config.json").string() + ": " + diff);
    }
    slots_ = weight_slots(config_);
    for (const auto& s : slots_) sources_.push_back(locate(s));
  }

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const SafetensorsSet& weights() const { return weights_; }
  const std::vector<WeightSlot>& slots() const { return slots_; }
  const WeightSource& source(std::size_t slot) const { return sources_[slot]; }

  // Slot `i` converted to float into `out` (numel elements).
  void read(std::size_t i, std::span<float> out) const {
    const WeightSource& src = sources_[i];
    const std::string what = src.file->path().string() + ": tensor '" + src.stored_name + "'";
    if (std::int64_t(out.size()) != slots_[i].numel())
      throw Error(what + ": output holds " + std::to_string(out.size()) + " floats, slot '" +
                  slots_[i].name + "' needs " + std::to_string(slots_[i].numel()));
    convert_to_float(src.info->dtype, src.bytes().data(), out.size(), out.data(), what);
  }
  using SlotReader<HfModel>::read;

 private:
  WeightSource locate(const WeightSlot& s) const {
    WeightSource src;
    std::vector<std::int64_t> stored_shape = s.shape;
    src.stored_name = s.name;
    src.row_begin = 0;
    src.rows = s.shape.empty() ? 1 : s.shape[0];
    std::int64_t fused_row = 0;
    if (fused_source(config_, s, src.stored_name, fused_row, stored_shape)) src.row_begin = fused_row;
    const SafetensorsSet::Ref* r = weights_.find(src.stored_name);
    if (!r)
      throw Error(dir_.string() + ": tensor '" + src.stored_name +
                  "' missing (config.json implies it; files: " + file_list() + ")");
    src.file = r->file;
    src.info = r->info;
    if (r->info->shape != stored_shape)
      throw Error(r->file->path().string() + ": tensor '" + src.stored_name + "' has shape " +
                  shape_str(r->info->shape) + " but config.json implies " +
                  shape_str(stored_shape));
    const StDtype d = r->info->dtype;
    if (d != StDtype::F32 && d != StDtype::F16 && d != StDtype::BF16)
      throw Error(r->file->path().string() + ": tensor '" + src.stored_name + "' has dtype " +
                  st_dtype_name(d) + " (expected BF16, F16 or F32)");
    return src;
  }
  std::string file_list() const {
    std::string s;
    for (const auto& f : weights_.files()) {
      if (!s.empty()) s += ", ";
      s += f->path().filename().string();
    }
    return s;
  }

  std::filesystem::path dir_;
  ModelConfig config_;
  SafetensorsSet weights_;
  std::vector<WeightSlot> slots_;
  std::vector<WeightSource> sources_;
};

}  // namespace lvt::io
