#pragma once
// Published dimensions of common checkpoints, copied from each model's config.json on the
// Hugging Face Hub. tests/test_model.cpp pins the parameter counts these imply.
#include "lvt/model/config.hpp"

namespace lvt::presets {

inline constexpr ModelConfig tinyllama_1_1b{
    .arch = Arch::llama, .layers = 22, .hidden = 2048, .heads = 32, .kv_heads = 4, .head_dim = 64,
    .ffn = 5632, .vocab = 32000, .tied_embeddings = false, .rope_theta = 10000.0,
    .norm_eps = 1e-5, .max_position = 2048};

inline constexpr ModelConfig llama_3_2_1b{
    .arch = Arch::llama, .layers = 16, .hidden = 2048, .heads = 32, .kv_heads = 8, .head_dim = 64,
    .ffn = 8192, .vocab = 128256, .tied_embeddings = true, .rope_theta = 500000.0,
    .rope_scaling = RopeScaling::llama3, .rope_factor = 32.0, .rope_low_freq_factor = 1.0,
    .rope_high_freq_factor = 4.0, .rope_original_max_position = 8192, .norm_eps = 1e-5,
    .max_position = 131072};

inline constexpr ModelConfig llama_3_2_3b{
    .arch = Arch::llama, .layers = 28, .hidden = 3072, .heads = 24, .kv_heads = 8, .head_dim = 128,
    .ffn = 8192, .vocab = 128256, .tied_embeddings = true, .rope_theta = 500000.0,
    .rope_scaling = RopeScaling::llama3, .rope_factor = 32.0, .rope_low_freq_factor = 1.0,
    .rope_high_freq_factor = 4.0, .rope_original_max_position = 8192, .norm_eps = 1e-5,
    .max_position = 131072};

inline constexpr ModelConfig llama_3_1_8b{
    .arch = Arch::llama, .layers = 32, .hidden = 4096, .heads = 32, .kv_heads = 8, .head_dim = 128,
    .ffn = 14336, .vocab = 128256, .tied_embeddings = false, .rope_theta = 500000.0,
    .rope_scaling = RopeScaling::llama3, .rope_factor = 8.0, .rope_low_freq_factor = 1.0,
    .rope_high_freq_factor = 4.0, .rope_original_max_position = 8192, .norm_eps = 1e-5,
    .max_position = 131072};

// Mistral-7B-v0.3 (vocabulary 32768, theta 1e6).
inline constexpr ModelConfig mistral_7b{
    .arch = Arch::mistral, .layers = 32, .hidden = 4096, .heads = 32, .kv_heads = 8,
    .head_dim = 128, .ffn = 14336, .vocab = 32768, .tied_embeddings = false,
    .rope_theta = 1000000.0, .norm_eps = 1e-5, .max_position = 32768};

inline constexpr ModelConfig qwen2_5_7b{
    .arch = Arch::qwen2, .layers = 28, .hidden = 3584, .heads = 28, .kv_heads = 4, .head_dim = 128,
    .ffn = 18944, .vocab = 152064, .tied_embeddings = false, .rope_theta = 1000000.0,
    .norm_eps = 1e-6, .qkv_bias = true, .max_position = 131072};

inline constexpr ModelConfig llama_2_13b{
    .arch = Arch::llama, .layers = 40, .hidden = 5120, .heads = 40, .kv_heads = 40,
    .head_dim = 128, .ffn = 13824, .vocab = 32000, .tied_embeddings = false,
    .rope_theta = 10000.0, .norm_eps = 1e-5, .max_position = 4096};

// Phi-4-mini-instruct: fused qkv/gate_up, 3/4 of each head rotated, longrope scaling.
inline constexpr ModelConfig phi_4_mini{
    .arch = Arch::phi3, .layers = 32, .hidden = 3072, .heads = 24, .kv_heads = 8, .head_dim = 128,
    .ffn = 8192, .vocab = 200064, .tied_embeddings = true, .rope_theta = 10000.0,
    .rope_scaling = RopeScaling::longrope, .rope_original_max_position = 4096,
    .partial_rotary_factor = 0.75, .norm_eps = 1e-5, .max_position = 131072};

// Phi-4 (14B): phi3 architecture, full rotary.
inline constexpr ModelConfig phi_4{
    .arch = Arch::phi3, .layers = 40, .hidden = 5120, .heads = 40, .kv_heads = 10,
    .head_dim = 128, .ffn = 17920, .vocab = 100352, .tied_embeddings = false,
    .rope_theta = 250000.0, .norm_eps = 1e-5, .max_position = 16384};

inline constexpr ModelConfig llama_3_1_70b{
    .arch = Arch::llama, .layers = 80, .hidden = 8192, .heads = 64, .kv_heads = 8,
    .head_dim = 128, .ffn = 28672, .vocab = 128256, .tied_embeddings = false,
    .rope_theta = 500000.0, .rope_scaling = RopeScaling::llama3, .rope_factor = 8.0,
    .rope_low_freq_factor = 1.0, .rope_high_freq_factor = 4.0,
    .rope_original_max_position = 8192, .norm_eps = 1e-5, .max_position = 131072};

struct NamedPreset {
  const char* name;
  const ModelConfig* config;
};

// Names accepted by `lvt plan --model NAME` (Hub repository names, lower-cased, no owner).
inline constexpr NamedPreset all[] = {
    {"tinyllama-1.1b", &tinyllama_1_1b}, {"llama-3.2-1b", &llama_3_2_1b},
    {"llama-3.2-3b", &llama_3_2_3b},     {"llama-3.1-8b", &llama_3_1_8b},
    {"mistral-7b", &mistral_7b},         {"qwen2.5-7b", &qwen2_5_7b},
    {"llama-2-13b", &llama_2_13b},       {"phi-4-mini", &phi_4_mini},
    {"phi-4", &phi_4},                   {"llama-3.1-70b", &llama_3_1_70b},
};

constexpr const ModelConfig* find(const char* name) {
  for (const auto& p : all) {
    const char* a = p.name;
    const char* b = name;
    while (*a && *a == *b) ++a, ++b;
    if (*a == 0 && *b == 0) return p.config;
  }
  return nullptr;
}

}  // namespace lvt::presets
