#pragma once
// `Llama<config>`: a model description as a type, for Trainer<...>. Any Llama-family config
// (llama, mistral, qwen2, phi3) goes here; presets.hpp has the published ones.
#include "lvt/model/config.hpp"
#include "lvt/model/presets.hpp"

namespace lvt {

template <ModelConfig C>
struct Llama {
  static constexpr ModelConfig config = C;
  static_assert(validate(C) == nullptr,
                "Llama<config>: the description is inconsistent; lvt::validate(config) names the "
                "field (heads must be a multiple of kv_heads, head_dim even, ...)");
};

}  // namespace lvt
