#pragma once
// What the ops' CUDA kernels share: storage types (fp32, bf16, fp16) converted to fp32 for the
// math (quant/numeric.hpp), grid sizes, and launch checks. Included only under LVT_CUDA (nvcc).
#include <cuda_runtime.h>

#include <cstdint>

#include "lvt/cuda_check.hpp"
#include "lvt/quant/numeric.hpp"

namespace lvt::ops::cuda {

using lvt::from_float;
using lvt::to_float;

inline constexpr int threads = 256;

inline unsigned grid_for(std::int64_t n, int per_block = threads) {
  const std::int64_t g = (n + per_block - 1) / per_block;
  return unsigned(g < 1 ? 1 : (g > 65535 * 16 ? 65535 * 16 : g));
}

}  // namespace lvt::ops::cuda
