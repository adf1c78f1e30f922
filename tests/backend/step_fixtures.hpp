#pragma once
// What the whole-step tests of both backends share: frozen weights from one seeded stream written
// through the backends' setters, a LoRA with nonzero A and B (every gradient path runs), a
// batch with some ignored targets, and positions of packed rows.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "lvt/plan/layout.hpp"
#include "lvt/quant/numeric.hpp"

namespace lvt::test {

// Normal(0, std) weights, norms around 1; `bf16_exact` rounds every value to bf16 first so a
// 16-bit backend and the fp32 reference start from the same numbers.
template <class B>
void init_weights(B& b, std::uint64_t seed, float std = 0.08f, bool bf16_exact = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, std);
  const ModelConfig& m = b.model();
  auto values = [&](std::int64_t n, float base = 0.0f) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = bf16_exact ? to_float(to_bf16(base + nd(rng))) : base + nd(rng);
    return v;
  };
  const std::int64_t vh = std::int64_t(m.vocab) * m.hidden;
  b.set_embed_table(values(vh).data());
  if (!m.tied_embeddings) b.set_lm_head(values(vh).data());
  b.set_final_norm(values(m.hidden, 1.0f).data());
  for (int l = 0; l < m.layers; ++l) {
    for (int p = 0; p < plan::proj_count; ++p) {
      const auto sh = plan::proj_shape(m, p);
      b.set_projection(l, p, values(sh.out * sh.in).data(), "layer " + std::to_string(l));
    }
    for (int k = 0; k < 2; ++k) b.set_norm(l, k, values(m.hidden, 1.0f).data());
    if (m.qkv_bias)
      for (int p = 0; p < 3; ++p) b.set_bias(l, p, values(plan::proj_shape(m, p).out).data());
  }
}

template <class B>
void init_lora(B& b, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  b.sync_lora_from_device();
  for (float& x : b.lora_params()) x = nd(rng);
  b.sync_lora_to_device();
  b.zero_grads();
}

struct Batch {
  std::vector<std::int32_t> tokens, targets;
};
inline Batch make_batch(const PlanOptions& o, std::uint64_t seed, int vocab) {
  std::mt19937_64 rng(seed);
  Batch b;
  const int n = o.batch * o.seq;
  for (int i = 0; i < n; ++i) b.tokens.push_back(std::int32_t(rng() % vocab));
  for (int i = 0; i < n; ++i) b.targets.push_back(i % 7 == 3 ? -100 : std::int32_t(rng() % vocab));
  return b;
}

// Positions of packed rows: examples of random lengths in 1..max_len one after another (the last
// cut at the row's end); row 1, when there is one, is a single example filling it.
inline std::vector<std::int32_t> make_positions(const PlanOptions& o, std::uint64_t seed, int max_len) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> pos;
  for (int b = 0; b < o.batch; ++b) {
    int left = 0, p = 0;
    for (int t = 0; t < o.seq; ++t, ++p) {
      if (b == 1) {
        pos.push_back(t);
        continue;
      }
      if (left == 0) {
        left = 1 + int(rng() % std::uint64_t(max_len));
        p = 0;
      }
      --left;
      pos.push_back(p);
    }
  }
  return pos;
}

}  // namespace lvt::test
