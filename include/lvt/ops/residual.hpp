#pragma once
// Residual connection: out = a + b (out may alias a or b). Its backward is the identity on both
// branches, which the accumulate-into-gradient convention gives for free: both branches' backward
// add into the same d buffer, so there is no residual backward function.
#include <cstdint>

#include "lvt/ops/parallel.hpp"

namespace lvt::ops::residual {

template <class T>
void forward(T* out, const T* a, const T* b, std::int64_t n) {
  LVT_PARALLEL_FOR_IF(n >= parallel::min_elems)
  for (std::int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// x = 0 (a gradient buffer at the start of its lifetime).
template <class T>
void zero(T* x, std::int64_t n) {
  LVT_PARALLEL_FOR_IF(n >= parallel::min_elems)
  for (std::int64_t i = 0; i < n; i++) x[i] = T(0);
}

}  // namespace lvt::ops::residual

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

namespace lvt::ops::residual::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;
template <class S>
__global__ void forward_kernel(S* out, const S* a, const S* b, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<S>(to_float(a[i]) + to_float(b[i]));
}
template <class S>
void forward(S* out, const S* a, const S* b, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  forward_kernel<S><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(out, a, b, n);
  LVT_CUDA_LAUNCHED("residual::cuda::forward_kernel");
}
}  // namespace lvt::ops::residual::cuda
#endif
