#pragma once
// Gradient accumulation over micro-batches: backward passes accumulate (+=) into the same
// gradient buffers, then `finish` scales by 1 / steps so the update sees the mean of the
// micro-batch gradients (each micro-batch's loss already a mean over its tokens), as
// `loss / gradient_accumulation_steps` before backward does in a PyTorch loop.
#include <cstdint>

#include "lvt/ops/common.hpp"

namespace lvt::ops::grad_accum {

// dst += src (adds one micro-batch's gradient where backward did not accumulate in place).
template <class T>
void add(T* dst, const T* src, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i++) dst[i] += src[i];
}

// g *= 1 / steps after the last micro-batch of an optimizer step.
template <class T>
void finish(T* g, std::int64_t n, std::int64_t steps) {
  require(steps >= 1, "grad_accum", "gradient accumulation steps must be >= 1", steps);
  if (steps == 1) return;
  const T s = T(1.0 / double(steps));
  for (std::int64_t i = 0; i < n; i++) g[i] *= s;
}

}  // namespace lvt::ops::grad_accum
