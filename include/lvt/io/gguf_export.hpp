#pragma once
// A model as one llama GGUF file, laid out as llama.cpp's convert_hf_to_gguf.py writes it
// (LlamaModel; Mistral converts to the same architecture), optionally with a LoRA adapter merged
// in first (the merge math of io/hf_merge.hpp). The base is any weight source with canonical
// slots (HfModel: a Hugging Face folder; GgufModel: a .gguf file). Streams: one tensor as float
// at a time into io::GgufWriter (temp file renamed at the end).
//
// Tensors: rope_freqs.weight first when the config has llama3 RoPE scaling (the converter's
// generate_extra_tensors), then token_embd, blk.N.{attn_q, attn_k, attn_v, attn_output,
// ffn_gate, ffn_up, ffn_down, attn_norm, ffn_norm}, output_norm, output (absent when tied);
// ne is the HF shape reversed, and the q/k rows are permuted per head as the converter's
// LlamaModel.permute does (the inverse of what io/gguf_model.hpp undoes).
//
// Types (convert_hf_to_gguf.py's prepare_tensors): 1-D tensors and *_norm.weight F32; every
// other tensor the --type (f32, f16, bf16, q8_0; f16 is the converter's default), except that a
// row length not a multiple of the block size falls back to F16 (gguf-py's QuantError path).
// q4_0 is not a converter type but llama-quantize's: it keeps output.weight (token_embd when
// tied) at Q6_K, which lvt does not write, so there Q8_0 (llama-quantize's own choice when the
// rows are not multiples of 256).
//
// Metadata: general.architecture, type, name, file_type (llama_ftype), quantization_version;
// llama.block_count, context_length, embedding_length, feed_forward_length,
// attention.head_count(_kv), rope.freq_base, attention.layer_norm_rms_epsilon,
// attention.key_length / value_length, vocab_size, rope.dimension_count, rope.scaling.type and
// factor for linear scaling; then the caller's tokenizer.* keys. llama3 scaling has no keys (the
// factors are the tensor) except rope.scaling.original_context_length, written when the
// config's low_freq_factor is not 1 so that the reader gets the same numbers back.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/gguf.hpp"
#include "lvt/io/gguf_model.hpp"
#include "lvt/io/gguf_quant.hpp"
#include "lvt/io/hf_merge.hpp"
#include "lvt/io/hf_model.hpp"
#include "lvt/io/peft.hpp"
#include "lvt/model/config.hpp"

namespace lvt::io {

enum class GgufOutType : std::uint8_t { f32, f16, bf16, q8_0, q4_0 };

struct GgufOutTypeInfo {
  GgufOutType type;
  const char* name;       // --type spelling (the converter's --outtype)
  GgmlType ggml;          // the tensors' type
  std::uint32_t ftype;    // general.file_type (llama_ftype / gguf-py LlamaFileType)
};

inline constexpr GgufOutTypeInfo gguf_out_types[] = {
    {GgufOutType::f32, "f32", GgmlType::F32, 0},   {GgufOutType::f16, "f16", GgmlType::F16, 1},
    {GgufOutType::bf16, "bf16", GgmlType::BF16, 32}, {GgufOutType::q8_0, "q8_0", GgmlType::Q8_0, 7},
    {GgufOutType::q4_0, "q4_0", GgmlType::Q4_0, 2},
};

inline const GgufOutTypeInfo& gguf_out_type_info(GgufOutType t) { return gguf_out_types[int(t)]; }

// "f16" -> GgufOutType::f16; `flag` names the option in the error.
inline GgufOutType parse_gguf_out_type(std::string_view s, const std::string& flag = "--type") {
  std::string names;
  for (const auto& t : gguf_out_types) {
    if (s == t.name) return t.type;
    names += (names.empty() ? "" : ", ") + std::string(t.name);
  }
  throw Error(flag + ": unknown GGUF type '" + std::string(s) + "' (lvt writes " + names + ")");
}

// The ggml type a tensor is written as (the rules above).
inline GgmlType gguf_export_tensor_type(std::string_view name, const std::vector<std::uint64_t>& ne, GgufOutType t,
                                        bool tied) {
  if (ne.size() <= 1 || name.ends_with("_norm.weight")) return GgmlType::F32;
  GgmlType g = gguf_out_type_info(t).ggml;
  if (t == GgufOutType::q4_0 && (name == "output.weight" || (tied && name == "token_embd.weight"))) g = GgmlType::Q8_0;
  if (ne[0] % std::uint64_t(ggml_type_info(g).block_elems) != 0) g = GgmlType::F16;
  return g;
}

// Why lvt cannot write this model as a llama GGUF, or nullptr.
inline const char* gguf_export_unsupported(const ModelConfig& c) {
  if (c.arch != Arch::llama && c.arch != Arch::mistral)
    return c.arch == Arch::qwen2 ? "qwen2 (q/k/v biases; llama.cpp's qwen2 architecture) is not exported: lvt writes "
                                   "llama GGUF files (Llama, Mistral)"
                                 : "phi3 (fused projections; llama.cpp's phi3 architecture) is not exported: lvt writes "
                                   "llama GGUF files (Llama, Mistral)";
  if (c.qkv_bias) return "q/k/v biases are not part of a llama GGUF file";
  if (c.partial_rotary_factor != 1.0) return "partial rotary embeddings are not part of a llama GGUF file";
  if (c.rope_scaling == RopeScaling::longrope) return "longrope RoPE scaling is not written (its factor lists are not kept)";
  return nullptr;
}

// The llama.* and general.* metadata of a config (the keys above, in the converter's order).
inline std::vector<std::pair<std::string, GgufValue>> gguf_llama_metadata(const ModelConfig& c, const std::string& name,
                                                                          GgufOutType t) {
  if (const char* why = gguf_export_unsupported(c)) throw Error(std::string("GGUF export: ") + why);
  if (const char* why = validate(c)) throw Error(std::string("GGUF export: ") + why);
  std::vector<std::pair<std::string, GgufValue>> m;
  auto u32 = [&](const std::string& k, std::int64_t v) { m.emplace_back(k, GgufValue::u32(std::uint32_t(v))); };
  auto f32 = [&](const std::string& k, double v) { m.emplace_back(k, GgufValue::f32(float(v))); };
  m.emplace_back("general.architecture", GgufValue::str("llama"));
  m.emplace_back("general.type", GgufValue::str("model"));
  m.emplace_back("general.name", GgufValue::str(name));
  const std::string p = "llama.";
  u32(p + "block_count", c.layers);
  u32(p + "context_length", c.max_position);
  u32(p + "embedding_length", c.hidden);
  u32(p + "feed_forward_length", c.ffn);
  u32(p + "attention.head_count", c.heads);
  u32(p + "attention.head_count_kv", c.kv_heads);
  if (c.rope_scaling == RopeScaling::linear) {
    m.emplace_back(p + "rope.scaling.type", GgufValue::str("linear"));
    f32(p + "rope.scaling.factor", c.rope_factor);
  }
  if (c.rope_original_max_position > 0 && (c.rope_scaling != RopeScaling::llama3 || c.rope_low_freq_factor != 1.0))
    u32(p + "rope.scaling.original_context_length", c.rope_original_max_position);
  f32(p + "rope.freq_base", c.rope_theta);
  f32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  u32(p + "attention.key_length", c.head_dim);
  u32(p + "attention.value_length", c.head_dim);
  u32("general.file_type", gguf_out_type_info(t).ftype);
  u32(p + "vocab_size", c.vocab);
  u32(p + "rope.dimension_count", c.head_dim);
  u32("general.quantization_version", 2);  // GGML_QUANT_VERSION
  return m;
}

// rope_freqs.weight of llama3 scaling, as LlamaModel.generate_extra_tensors computes it: torch
// float32 throughout (freqs = 1 / base ** (arange(0, dim, 2) / dim); wavelen = 2 pi / freq;
// 1 for high frequencies, factor for low, 1 / ((1 - smooth) / factor + smooth) between).
LVT_GGUF_NO_CONTRACT_FN inline std::vector<float> gguf_llama3_rope_freqs(const ModelConfig& c) {
  LVT_GGUF_NO_CONTRACT_BODY
  const int dim = c.head_dim;
  const float base = float(c.rope_theta), factor = float(c.rope_factor);
  const float low = float(c.rope_low_freq_factor);
  const float old_len = float(c.rope_original_max_position);
  const float low_wavelen = float(double(c.rope_original_max_position) / c.rope_low_freq_factor);
  const float high_wavelen = float(double(c.rope_original_max_position) / c.rope_high_freq_factor);
  const float span = float(c.rope_high_freq_factor - c.rope_low_freq_factor);
  std::vector<float> out;
  for (int i = 0; i < dim; i += 2) {
    const float freq = 1.0f / std::pow(base, float(i) / float(dim));
    const float wavelen = float(2 * 3.14159265358979323846) / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(factor);
    } else {
      const float smooth = (old_len / wavelen - low) / span;
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

// The tokenizer.* keys of a GGUF file, in file order: what a .gguf base passes on.
inline std::vector<std::pair<std::string, GgufValue>> gguf_tokenizer_keys(const GgufHeader& h) {
  std::vector<std::pair<std::string, GgufValue>> out;
  for (const auto& kv : h.metadata)
    if (kv.key.starts_with("tokenizer.")) out.emplace_back(kv.key, kv.value);
  return out;
}

struct GgufExportOptions {
  GgufOutType type = GgufOutType::f16;
  std::string name;                                              // general.name
  std::vector<std::pair<std::string, GgufValue>> tokenizer;      // tokenizer.* keys, appended
  const LoraAdapter* adapter = nullptr;                          // merged in when given
  std::function<void(std::size_t i, std::size_t n, const GgufTensorDecl&)> progress;  // before tensor i of n
};

struct GgufExportStats {
  std::size_t tensors = 0;
  int merged_pairs = 0;
  std::uint64_t file_bytes = 0;
};

// `model`: a weight source with config(), slots() and read(i, span) (ModelSource, HfModel, GgufModel).
template <class Model>
GgufExportStats export_gguf(const Model& model, const std::filesystem::path& out, const GgufExportOptions& o) {
  const ModelConfig& c = model.config();
  std::vector<std::pair<std::string, GgufValue>> meta = gguf_llama_metadata(c, o.name, o.type);
  for (const auto& kv : o.tokenizer) {
    if (!kv.first.starts_with("tokenizer."))
      throw Error(out.string() + ": tokenizer metadata key '" + kv.first + "' does not start with 'tokenizer.'");
    meta.push_back(kv);
  }
  const bool llama3 = c.rope_scaling == RopeScaling::llama3;
  std::vector<GgufTensorDecl> decls;
  if (llama3) decls.push_back({"rope_freqs.weight", GgmlType::F32, {std::uint64_t(c.head_dim / 2)}});
  const auto& slots = model.slots();
  for (const WeightSlot& s : slots) {
    GgufTensorDecl d{gguf_tensor_name(s), GgmlType::F32, {}};
    for (auto it = s.shape.rbegin(); it != s.shape.rend(); ++it) d.ne.push_back(std::uint64_t(*it));
    d.type = gguf_export_tensor_type(d.name, d.ne, o.type, c.tied_embeddings);
    decls.push_back(std::move(d));
  }
  GgufWriter w(out, meta, decls);
  GgufExportStats stats;
  std::size_t i = 0;
  auto step = [&] {
    if (o.progress) o.progress(i, decls.size(), decls[i]);
  };
  if (llama3) {
    step();
    const std::vector<float> f = gguf_llama3_rope_freqs(c);
    w.write_float(decls[i].name, f);
    ++i;
  }
  std::vector<float> buf(std::size_t(model.largest_slot_numel()));
  std::vector<float> head;  // one head's rows while they are permuted
  for (std::size_t k = 0; k < slots.size(); ++k, ++i) {
    const WeightSlot& s = slots[k];
    step();
    std::span<float> v(buf.data(), std::size_t(s.numel()));
    model.read(k, v);
    if (o.adapter && add_lora_to_slot(s, v, *o.adapter)) ++stats.merged_pairs;
    if (s.kind == WeightKind::q || s.kind == WeightKind::k) {  // the converter's permute, head by head
      const std::int64_t cols = s.shape[1], hd = c.head_dim, heads = s.shape[0] / hd;
      head.resize(std::size_t(hd * cols));
      for (std::int64_t h = 0; h < heads; ++h) {
        float* rows = v.data() + h * hd * cols;
        std::copy_n(rows, hd * cols, head.begin());
        for (std::int64_t r = 0; r < hd; ++r)
          std::copy_n(head.begin() + r * cols, cols, rows + gguf_permuted_row(r, hd) * cols);
      }
    }
    w.write_float(decls[i].name, v);
  }
  stats.tensors = decls.size();
  stats.file_bytes = w.file_bytes();
  w.finish();
  return stats;
}

}  // namespace lvt::io
