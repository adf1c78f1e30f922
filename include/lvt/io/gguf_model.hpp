#pragma once
// A llama-architecture GGUF file as lvt sees it: the ModelConfig from its metadata, and the
// weights under canonical Hugging Face names (io/hf_model.hpp's WeightSlot), dequantized to fp32
// one tensor at a time, so a GGUF model loads through the same door as a Hugging Face folder.
//
// Names: token_embd -> model.embed_tokens, blk.N.attn_{q,k,v,output} -> self_attn.{q,k,v,o}_proj,
// blk.N.ffn_{gate,up,down} -> mlp.*_proj, blk.N.attn_norm -> input_layernorm, blk.N.ffn_norm ->
// post_attention_layernorm, output_norm -> model.norm, output -> lm_head (absent: tied).
// Shapes: ggml ne is innermost first, so an HF [out, in] weight has ne = {in, out}.
//
// Q/K rows: llama.cpp's convert_hf_to_gguf.py reorders the rows of q_proj and k_proj for llama
// (LlamaModel.permute: reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2), with the kv
// head count for k_proj), from Hugging Face's rotate-half pairing to ggml's interleaved pairs.
// Within a head of size hd, HF row j * hd/2 + i sits at GGUF row 2 i + j; reading undoes it.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/gguf.hpp"
#include "lvt/io/hf_model.hpp"
#include "lvt/model/config.hpp"
#include "lvt/model/rope_freq.hpp"

namespace lvt::io {

namespace detail_ggm {

[[noreturn]] inline void key_error(const std::string& source, const GgufKv* kv,
                                   const std::string& key, const std::string& what) {
  throw Error(source + ": key '" + key + "': " + what +
              (kv ? " (at byte " + std::to_string(kv->file_offset) + ")" : std::string()));
}

inline const GgufKv* find_kv(const GgufHeader& h, const std::string& key) {
  for (const auto& kv : h.metadata)
    if (kv.key == key) return &kv;
  return nullptr;
}

// A count: any integer type, non-negative, at most `max`.
inline std::int64_t get_count(const GgufHeader& h, const std::string& key,
                              const std::string& source, std::int64_t max) {
  const GgufKv* kv = find_kv(h, key);
  if (!kv) key_error(source, nullptr, key, "missing (required)");
  const GgufValue& v = kv->value;
  std::int64_t x = 0;
  if (v.is_unsigned()) {
    if (v.u > std::uint64_t(max)) key_error(source, kv, key, std::to_string(v.u) +
                                                " exceeds lvt's limit of " + std::to_string(max));
    x = std::int64_t(v.u);
  } else if (v.is_signed()) {
    if (v.i < 0) key_error(source, kv, key, "negative (" + std::to_string(v.i) + ")");
    if (v.i > max) key_error(source, kv, key, std::to_string(v.i) + " exceeds lvt's limit of " +
                                                  std::to_string(max));
    x = v.i;
  } else if (v.type == GgufValueType::array) {
    key_error(source, kv, key, "an array (per-layer values are not supported: lvt's layers are "
                               "all alike)");
  } else {
    key_error(source, kv, key, std::string("expected an integer, got ") +
                                   gguf_value_type_name(v.type));
  }
  return x;
}
inline std::int64_t get_count_or(const GgufHeader& h, const std::string& key, std::int64_t fallback,
                                 const std::string& source, std::int64_t max) {
  return find_kv(h, key) ? get_count(h, key, source, max) : fallback;
}

inline double get_real_or(const GgufHeader& h, const std::string& key, double fallback,
                          const std::string& source) {
  const GgufKv* kv = find_kv(h, key);
  if (!kv) return fallback;
  if (!kv->value.is_float())
    key_error(source, kv, key, std::string("expected a float32 or float64, got ") +
                                   gguf_value_type_name(kv->value.type));
  if (!std::isfinite(kv->value.f)) key_error(source, kv, key, "not finite");
  if (kv->value.type == GgufValueType::f64) return kv->value.f;
  // The converter stores config.json's doubles as float32 (1e-5 -> 9.99999974e-6). The shortest
  // decimal that round-trips the float gives config.json's number back, as read_hf_config has it.
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, float(kv->value.f));
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

inline std::string get_string(const GgufHeader& h, const std::string& key,
                              const std::string& source) {
  const GgufKv* kv = find_kv(h, key);
  if (!kv) key_error(source, nullptr, key, "missing (required)");
  if (kv->value.type != GgufValueType::string)
    key_error(source, kv, key, std::string("expected a string, got ") +
                                   gguf_value_type_name(kv->value.type));
  return kv->value.s;
}

}  // namespace detail_ggm

// The GGUF tensor name of a canonical weight slot (llama.cpp's llama tensor names).
inline std::string gguf_tensor_name(const WeightSlot& s) {
  const std::string b = "blk." + std::to_string(s.layer) + ".";
  switch (s.kind) {
    case WeightKind::embed: return "token_embd.weight";
    case WeightKind::q: return b + "attn_q.weight";
    case WeightKind::k: return b + "attn_k.weight";
    case WeightKind::v: return b + "attn_v.weight";
    case WeightKind::o: return b + "attn_output.weight";
    case WeightKind::gate: return b + "ffn_gate.weight";
    case WeightKind::up: return b + "ffn_up.weight";
    case WeightKind::down: return b + "ffn_down.weight";
    case WeightKind::attn_norm: return b + "attn_norm.weight";
    case WeightKind::mlp_norm: return b + "ffn_norm.weight";
    case WeightKind::final_norm: return "output_norm.weight";
    case WeightKind::lm_head: return "output.weight";
    case WeightKind::q_bias: return b + "attn_q.bias";
    case WeightKind::k_bias: return b + "attn_k.bias";
    case WeightKind::v_bias: return b + "attn_v.bias";
  }
  return "?";
}

// The GGUF row that holds Hugging Face row `hf_row` of a q_proj / k_proj weight with `n_head`
// heads (kv heads for k_proj) of `head_dim` rows each: the inverse of the converter's permute.
constexpr std::int64_t gguf_permuted_row(std::int64_t hf_row, std::int64_t head_dim) {
  const std::int64_t half = head_dim / 2;
  const std::int64_t head = hf_row / head_dim, r = hf_row % head_dim;
  return head * head_dim + 2 * (r % half) + r / half;
}

// Llama 3.1's RoPE in a GGUF file: convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors)
// writes no llama3 keys but rope_freqs.weight, one factor per rotated pair that divides the
// frequency (ggml's freq_factors): 1 for high frequencies, `factor` for low ones, and
// 1 / ((1 - s) / factor + s) between, s = (old_len / wavelen - low) / (high - low). The
// factors depend on old_len, low and high only through the wavelength bounds old_len / low and
// old_len / high, so they give factor, those two bounds, and no more: low_freq_factor is taken
// as 1 (every Llama 3.x), unless the file has llama.rope.scaling.original_context_length (lvt
// writes it when low_freq_factor is not 1), which fixes old_len. The result must reproduce every
// factor through lvt's own table (model/rope_freq.hpp) to 1e-6 relative, else an error.
inline void gguf_llama3_from_rope_freqs(ModelConfig& c, std::span<const float> factors, const std::string& what) {
  const int n = rope_inv_freq_elems(c);
  if (std::int64_t(factors.size()) != n)
    throw Error(what + ": " + std::to_string(factors.size()) + " factors, the rotary dimension " +
                std::to_string(c.rotary_dim()) + " needs " + std::to_string(n));
  for (std::size_t i = 0; i < factors.size(); ++i)
    if (!(factors[i] > 0) || !std::isfinite(factors[i]))
      throw Error(what + ": factor " + std::to_string(i) + " is " + std::to_string(factors[i]) +
                  " (RoPE factors are positive)");
  constexpr double tol = 1e-6;
  std::vector<double> base(static_cast<std::size_t>(n)), scaled(static_cast<std::size_t>(n));
  rope_inv_freq(base.data(), c, /*unscaled=*/true);
  auto reproduces = [&](const ModelConfig& t) {
    if (validate(t)) return false;
    rope_inv_freq(scaled.data(), t);
    for (int i = 0; i < n; ++i)
      if (std::fabs(base[std::size_t(i)] / scaled[std::size_t(i)] - factors[std::size_t(i)]) > tol * factors[std::size_t(i)])
        return false;
    return true;
  };
  if (reproduces(c)) return;  // all ones: no scaling
  const double pi = 3.14159265358979323846;
  const double factor = *std::max_element(factors.begin(), factors.end());
  ModelConfig t = c;
  t.rope_scaling = RopeScaling::llama3;
  t.rope_factor = double(float(factor));
  const int given_old = c.rope_original_max_position;
  // The medium band: 1 < r < factor, where s = old_len/(high-low) / wavelen - low/(high-low).
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const double r = factors[std::size_t(i)];
    if (r <= 1 + tol || r >= factor * (1 - tol)) continue;
    const double s = (1 / r - 1 / factor) / (1 - 1 / factor);
    const double x = base[std::size_t(i)] / (2 * pi);  // 1 / wavelen
    sx += x, sy += s, sxx += x * x, sxy += x * s, ++m;
  }
  std::vector<ModelConfig> candidates;
  if (m >= 2 && sxx * m - sx * sx > 0) {
    const double alpha = (m * sxy - sx * sy) / (m * sxx - sx * sx), beta = (sy - alpha * sx) / m;
    if (alpha > 0 && beta < 0) {
      const double low_wavelen = -alpha / beta, high_over_low = 1 - 1 / beta;
      // The shortest decimals that still reproduce (4 rather than 4.0000001).
      for (int digits = 1; digits <= 17; ++digits) {
        auto round_to = [&](double x) {
          const double scale = std::pow(10.0, digits - 1 - std::floor(std::log10(std::fabs(x))));
          return std::round(x * scale) / scale;
        };
        ModelConfig u = t;
        if (given_old > 0) {
          u.rope_low_freq_factor = round_to(given_old / low_wavelen);
          u.rope_original_max_position = given_old;
        } else {
          u.rope_low_freq_factor = 1.0;
          u.rope_original_max_position = int(std::lround(low_wavelen));
        }
        u.rope_high_freq_factor = round_to(u.rope_low_freq_factor * high_over_low);
        candidates.push_back(u);
      }
    }
  }
  // Too few medium factors to fit: Llama 3's published values.
  ModelConfig standard = t;
  standard.rope_low_freq_factor = 1.0;
  standard.rope_high_freq_factor = 4.0;
  standard.rope_original_max_position = given_old > 0 ? given_old : 8192;
  candidates.push_back(standard);
  for (const auto& u : candidates)
    if (reproduces(u)) {
      c = u;
      return;
    }
  throw Error(what + ": no llama3 RoPE scaling (factor, low/high_freq_factor, "
              "original_max_position_embeddings) reproduces these per-dimension factors to 1e-6 relative");
}

// llama-architecture metadata -> ModelConfig. `tensors` decides tied output (no output.weight)
// and, failing llama.vocab_size and tokenizer.ggml.tokens, the vocab size (token_embd rows).
// `image` (the whole file) is needed only when the file carries rope_freqs.weight.
inline ModelConfig gguf_llama_config(const GgufHeader& h, const std::string& source,
                                     std::span<const std::byte> image = {}) {
  using namespace detail_ggm;
  const std::string arch = get_string(h, "general.architecture", source);
  if (arch != "llama")
    key_error(source, find_kv(h, "general.architecture"), "general.architecture",
              "architecture '" + arch + "' is not supported (lvt reads llama GGUF files; "
              "Mistral and Llama 2/3 convert to llama)");
  const std::string p = "llama.";
  ModelConfig c{};
  c.arch = Arch::llama;
  c.layers = int(get_count(h, p + "block_count", source, 4096));
  c.hidden = int(get_count(h, p + "embedding_length", source, 1 << 24));
  c.ffn = int(get_count(h, p + "feed_forward_length", source, 1 << 24));
  c.heads = int(get_count(h, p + "attention.head_count", source, 4096));
  if (c.heads <= 0)
    key_error(source, find_kv(h, p + "attention.head_count"), p + "attention.head_count",
              "must be positive");
  c.kv_heads = int(get_count_or(h, p + "attention.head_count_kv", c.heads, source, 4096));
  if (find_kv(h, p + "attention.key_length")) {
    c.head_dim = int(get_count(h, p + "attention.key_length", source, 4096));
    const std::int64_t vl = get_count_or(h, p + "attention.value_length", c.head_dim, source, 4096);
    if (vl != c.head_dim)
      key_error(source, find_kv(h, p + "attention.value_length"), p + "attention.value_length",
                std::to_string(vl) + " differs from attention.key_length " +
                    std::to_string(c.head_dim) + " (lvt's heads have one size)");
  } else {
    if (c.hidden % c.heads != 0)
      key_error(source, find_kv(h, p + "embedding_length"), p + "embedding_length",
                "not a multiple of attention.head_count and no attention.key_length given");
    c.head_dim = c.hidden / c.heads;
  }
  const std::int64_t rot = get_count_or(h, p + "rope.dimension_count", c.head_dim, source, 4096);
  if (rot <= 0 || rot > c.head_dim)
    key_error(source, find_kv(h, p + "rope.dimension_count"), p + "rope.dimension_count",
              std::to_string(rot) + " is not in [1, head dim " + std::to_string(c.head_dim) + "]");
  c.partial_rotary_factor = double(rot) / double(c.head_dim);
  if (!find_kv(h, p + "attention.layer_norm_rms_epsilon"))
    key_error(source, nullptr, p + "attention.layer_norm_rms_epsilon", "missing (required)");
  c.norm_eps = get_real_or(h, p + "attention.layer_norm_rms_epsilon", 1e-5, source);
  c.rope_theta = get_real_or(h, p + "rope.freq_base", 10000.0, source);
  c.max_position = int(get_count(h, p + "context_length", source, 1 << 28));

  // RoPE scaling: rope.scaling.type (none, linear) or the older rope.scale_linear.
  c.rope_original_max_position =
      int(get_count_or(h, p + "rope.scaling.original_context_length", 0, source, 1 << 28));
  if (find_kv(h, p + "rope.scaling.type")) {
    const std::string t = get_string(h, p + "rope.scaling.type", source);
    if (t == "linear") {
      c.rope_scaling = RopeScaling::linear;
      if (!find_kv(h, p + "rope.scaling.factor"))
        key_error(source, nullptr, p + "rope.scaling.factor", "missing (required for linear)");
      c.rope_factor = get_real_or(h, p + "rope.scaling.factor", 1.0, source);
    } else if (t != "none") {
      key_error(source, find_kv(h, p + "rope.scaling.type"), p + "rope.scaling.type",
                "'" + t + "' is not supported (lvt reads none and linear)");
    }
  } else if (find_kv(h, p + "rope.scale_linear")) {
    c.rope_scaling = RopeScaling::linear;
    c.rope_factor = get_real_or(h, p + "rope.scale_linear", 1.0, source);
  }
  if (c.rope_scaling == RopeScaling::linear && c.rope_factor == 1.0) c.rope_scaling = RopeScaling::none;

  // Vocab: llama.vocab_size, else the tokenizer's token list, else the embedding's rows.
  if (find_kv(h, p + "vocab_size")) {
    c.vocab = int(get_count(h, p + "vocab_size", source, 1 << 24));
  } else if (const GgufKv* tok = find_kv(h, "tokenizer.ggml.tokens")) {
    if (tok->value.type != GgufValueType::array)
      key_error(source, tok, "tokenizer.ggml.tokens", "expected an array of strings");
    if (tok->value.array.size() > (1u << 24))
      key_error(source, tok, "tokenizer.ggml.tokens", "more than 2^24 tokens");
    c.vocab = int(tok->value.array.size());
  } else if (const GgufTensorInfo* e = h.find_tensor("token_embd.weight")) {
    if (e->ne.size() != 2 || e->ne[1] > (1u << 24))
      throw Error(source + ": tensor 'token_embd.weight': expected [vocab <= 2^24, hidden], got " +
                  shape_str(e->shape()));
    c.vocab = int(e->ne[1]);
  } else {
    key_error(source, nullptr, p + "vocab_size",
              "missing, and no tokenizer.ggml.tokens or token_embd.weight to count");
  }
  c.tied_embeddings = h.find_tensor("output.weight") == nullptr;
  if (std::int64_t(c.heads) * c.head_dim > (1 << 24))
    key_error(source, nullptr, p + "attention.head_count", "head_count * head dim exceeds 2^24");
  if (const char* why = validate(c)) throw Error(source + ": " + why);
  if (const GgufTensorInfo* t = h.find_tensor("rope_freqs.weight")) {
    const std::string what = source + ": tensor 'rope_freqs.weight'";
    if (c.rope_scaling != RopeScaling::none)
      throw Error(what + ": per-dimension RoPE factors together with rope.scaling.type '" +
                  rope_scaling_name(c.rope_scaling) + "' are not supported");
    if (image.empty())
      throw Error(what + ": the file's data is needed to read the RoPE factors (lvt reads them as "
                  "Llama 3.1's 'llama3' scaling)");
    if (t->ne.size() != 1 || !ggml_type_info(t->type).dequantizable)
      throw Error(what + ": expected a 1-D float tensor, got ne " + shape_str(t->shape()) + " of type " +
                  ggml_type_name(t->type));
    if (std::int64_t(t->numel()) != rope_inv_freq_elems(c))
      throw Error(what + ": " + std::to_string(t->numel()) + " factors, the rotary dimension " +
                  std::to_string(c.rotary_dim()) + " needs " + std::to_string(rope_inv_freq_elems(c)));
    if (h.data_offset + t->offset + t->nbytes > image.size())
      throw Error(what + ": data runs past the end of the file");
    std::vector<float> factors(std::size_t(t->numel()));
    ggml_dequantize(t->type, image.data() + h.data_offset + t->offset, factors.size(), factors.data(), what);
    gguf_llama3_from_rope_freqs(c, factors, what);
  }
  return c;
}

// An opened llama GGUF file: config from metadata, every weight slot located and checked for
// shape and a dequantizable type before any value is read.
class GgufModel : public SlotReader<GgufModel> {
 public:
  explicit GgufModel(const std::filesystem::path& path, const ModelConfig* expected = nullptr)
      : file_(path), config_(gguf_llama_config(file_.header(), path.string(), file_.image())) {
    const std::string src = path.string();
    if (expected) {
      const std::string diff = config_mismatch(*expected, config_);
      if (!diff.empty()) throw Error(src + ": " + diff);
    }
    slots_ = weight_slots(config_);
    std::vector<bool> used(file_.tensors().size(), false);
    for (const auto& s : slots_) {
      const std::string name = gguf_tensor_name(s);
      const GgufTensorInfo* t = file_.find(name);
      if (!t)
        throw Error(src + ": tensor '" + name + "' missing (the metadata implies it, as " + s.name +
                    ")");
      if (t->shape() != s.shape)
        throw Error(src + ": tensor '" + name + "' has shape " + shape_str(t->shape()) + " (ne " +
                    ne_str(t->ne) + ") but the metadata implies " + shape_str(s.shape) + " (ne " +
                    shape_str(std::vector<std::int64_t>(s.shape.rbegin(), s.shape.rend())) + ")");
      if (!ggml_type_info(t->type).dequantizable)
        throw Error(src + ": tensor '" + name + "' has ggml type " + ggml_type_name(t->type) +
                    ", which lvt cannot dequantize (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
                    "IQ4_NL, Q2_K..Q6_K)");
      used[std::size_t(t - file_.tensors().data())] = true;
      tensors_.push_back(t);
    }
    if (const GgufTensorInfo* t = file_.find("rope_freqs.weight"))  // read into config_ above
      used[std::size_t(t - file_.tensors().data())] = true;
    for (std::size_t i = 0; i < used.size(); ++i)
      if (!used[i])
        throw Error(src + ": tensor '" + file_.tensors()[i].name +
                    "' is not part of lvt's llama block (biases, experts and extra heads are not "
                    "supported)");
  }

  const GgufFile& file() const { return file_; }
  const ModelConfig& config() const { return config_; }
  const std::vector<WeightSlot>& slots() const { return slots_; }
  const GgufTensorInfo& tensor(std::size_t slot) const { return *tensors_[slot]; }

  // Slot `i` as fp32 in Hugging Face layout (q/k rows un-permuted) into `out` (numel elements).
  void read(std::size_t i, std::span<float> out) const {
    const WeightSlot& s = slots_[i];
    const GgufTensorInfo& t = *tensors_[i];
    const std::string what = file_.path().string() + ": tensor '" + t.name + "'";
    if (std::int64_t(out.size()) != s.numel())
      throw Error(what + ": output holds " + std::to_string(out.size()) + " floats, slot '" +
                  s.name + "' needs " + std::to_string(s.numel()));
    if (s.kind != WeightKind::q && s.kind != WeightKind::k) {
      ggml_dequantize(t.type, file_.bytes(t).data(), out.size(), out.data(), what);
      return;
    }
    const std::int64_t rows = s.shape[0], cols = s.shape[1];
    const std::uint64_t row_bytes = ggml_row_bytes(t.type, std::uint64_t(cols));
    const std::byte* base = file_.bytes(t).data();
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t g = gguf_permuted_row(r, config_.head_dim);
      ggml_dequantize(t.type, base + std::uint64_t(g) * row_bytes, std::size_t(cols),
                      out.data() + r * cols, what);
    }
  }
  using SlotReader<GgufModel>::read;

 private:
  static std::string ne_str(const std::vector<std::uint64_t>& ne) {
    std::vector<std::int64_t> v(ne.begin(), ne.end());
    return shape_str(v);
  }

  GgufFile file_;
  ModelConfig config_;
  std::vector<WeightSlot> slots_;
  std::vector<const GgufTensorInfo*> tensors_;
};

}  // namespace lvt::io
