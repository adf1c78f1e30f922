#pragma once
// Llama-family model description: plain constexpr values, usable as a template argument
// (a C++20 structural type), and filled at run time from a Hugging Face config.json by io/.
#include <cstdint>

namespace lvt {

// The Hugging Face `model_type` values lvt reads. They share the decoder block; they differ in
// tensor names (phi3 fuses qkv_proj and gate_up_proj) and in q/k/v biases (qwen2).
enum class Arch : std::uint8_t { llama, mistral, qwen2, phi3 };

// rope_scaling.rope_type. `longrope` (Phi-4-mini) carries per-dimension factor lists that live in
// config.json; the description records only the kind.
enum class RopeScaling : std::uint8_t { none, linear, llama3, longrope };

constexpr const char* arch_name(Arch a) {
  switch (a) {
    case Arch::llama: return "llama";
    case Arch::mistral: return "mistral";
    case Arch::qwen2: return "qwen2";
    case Arch::phi3: return "phi3";
  }
  return "?";
}

constexpr const char* rope_scaling_name(RopeScaling r) {
  switch (r) {
    case RopeScaling::none: return "none";
    case RopeScaling::linear: return "linear";
    case RopeScaling::llama3: return "llama3";
    case RopeScaling::longrope: return "longrope";
  }
  return "?";
}

struct ModelConfig {
  Arch arch = Arch::llama;
  int layers = 0;
  int hidden = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;  // hidden / heads unless config.json says otherwise
  int ffn = 0;       // intermediate_size
  int vocab = 0;
  bool tied_embeddings = false;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::none;
  double rope_factor = 1.0;            // rope_scaling.factor
  double rope_low_freq_factor = 1.0;   // llama3
  double rope_high_freq_factor = 4.0;  // llama3
  int rope_original_max_position = 0;  // original_max_position_embeddings
  double partial_rotary_factor = 1.0;  // phi3 / Phi-4-mini: 0.75
  double norm_eps = 1e-5;              // rms_norm_eps
  bool qkv_bias = false;               // qwen2: true
  int max_position = 0;                // max_position_embeddings

  constexpr bool operator==(const ModelConfig&) const = default;

  constexpr std::int64_t q_dim() const { return std::int64_t(heads) * head_dim; }
  constexpr std::int64_t kv_dim() const { return std::int64_t(kv_heads) * head_dim; }
  // Rotated dimensions per head (even), as transformers computes int(head_dim * factor).
  constexpr int rotary_dim() const { return int(head_dim * partial_rotary_factor); }

  // Parameters of one decoder layer's linear projections (the quantized part).
  constexpr std::int64_t layer_linear_params() const {
    const std::int64_t h = hidden;
    return h * q_dim() + 2 * h * kv_dim() + q_dim() * h + 3 * h * std::int64_t(ffn);
  }
  // Norm weights and biases of one layer (kept in 16-bit, never quantized).
  constexpr std::int64_t layer_small_params() const {
    return 2 * std::int64_t(hidden) + (qkv_bias ? q_dim() + 2 * kv_dim() : 0);
  }
  constexpr std::int64_t embedding_params() const { return std::int64_t(vocab) * hidden; }
  constexpr std::int64_t params() const {
    return layers * (layer_linear_params() + layer_small_params()) + embedding_params() *
           (tied_embeddings ? 1 : 2) + hidden;
  }
};

// The first inconsistency of a description, or nullptr. Field names are config.json's, so the
// same message serves a compile-time preset and a file read at run time.
constexpr const char* validate(const ModelConfig& c) {
  if (c.layers <= 0) return "num_hidden_layers must be positive";
  if (c.hidden <= 0) return "hidden_size must be positive";
  if (c.heads <= 0) return "num_attention_heads must be positive";
  if (c.kv_heads <= 0) return "num_key_value_heads must be positive";
  if (c.ffn <= 0) return "intermediate_size must be positive";
  if (c.vocab <= 0) return "vocab_size must be positive";
  if (c.head_dim <= 0) return "head_dim must be positive";
  if (c.head_dim % 2 != 0) return "head_dim must be even (RoPE rotates pairs)";
  if (c.heads % c.kv_heads != 0)
    return "num_attention_heads must be a multiple of num_key_value_heads (grouped-query attention)";
  if (c.partial_rotary_factor <= 0 || c.partial_rotary_factor > 1)
    return "partial_rotary_factor must be in (0, 1]";
  if (c.rotary_dim() % 2 != 0) return "head_dim * partial_rotary_factor must be even";
  if (c.rope_theta <= 0) return "rope_theta must be positive";
  if (c.norm_eps <= 0) return "rms_norm_eps must be positive";
  if (c.rope_scaling == RopeScaling::llama3 &&
      (c.rope_factor <= 0 || c.rope_original_max_position <= 0 ||
       c.rope_high_freq_factor <= c.rope_low_freq_factor))
    return "rope_scaling (llama3) needs factor > 0, original_max_position_embeddings > 0 and "
           "high_freq_factor > low_freq_factor";
  if (c.rope_scaling == RopeScaling::linear && c.rope_factor <= 0)
    return "rope_scaling.factor must be positive";
  return nullptr;
}

}  // namespace lvt
