#pragma once
// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_ (norm_type 2,
// error_if_nonfinite=False, foreach off):
//   total_norm = sqrt(sum over every gradient tensor of sum g^2)
//   coef = min(max_norm / (total_norm + 1e-6), 1);  every g *= coef
// and it returns total_norm (NaN or Inf when a gradient is not finite, for the caller to stop on).
// The sum of squares comes in pieces (`sum_squares` per tensor, added by the caller) so
// gradients spread over devices or pinned memory can be reduced where they live.
// The CUDA part keeps the sum of squares in device memory and scales by a coefficient computed
// on the device from it, so a captured CUDA graph replays the clip without a host round trip.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "lvt/ops/common.hpp"
#include "lvt/ops/parallel.hpp"

namespace lvt::ops::grad_clip {

template <class T>
struct Grad {
  T* data;
  std::int64_t n;
};

// Chunks of sum_squares: each chunk's sum is one partial, the partials are added in chunk order,
// so the result does not depend on the thread count.
inline constexpr std::int64_t sum_chunks = 256;

template <class T>
double sum_squares(const T* g, std::int64_t n) {
  if (n < parallel::min_elems) {
    double s = 0;
    for (std::int64_t i = 0; i < n; i++) s += double(g[i]) * double(g[i]);
    return s;
  }
  const std::int64_t per = (n + sum_chunks - 1) / sum_chunks;
  double part[sum_chunks];
  LVT_PARALLEL_FOR
  for (std::int64_t c = 0; c < sum_chunks; c++) {
    double s = 0;
    const std::int64_t end = (c + 1) * per < n ? (c + 1) * per : n;
    for (std::int64_t i = c * per; i < end; i++) s += double(g[i]) * double(g[i]);
    part[c] = s;
  }
  double s = 0;
  for (std::int64_t c = 0; c < sum_chunks; c++) s += part[c];
  return s;
}

// Shared with the CUDA kernel, so host and device clip by the same double.
LVT_HD inline double clip_coef(double total_norm, double max_norm) {
  const double c = max_norm / (total_norm + 1e-6);
  return c > 1.0 ? 1.0 : c;  // a NaN norm gives a NaN coef, as torch's clamp(max=1) does
}

template <class T>
void scale(T* g, std::int64_t n, double coef) {
  const T c = T(coef);
  LVT_PARALLEL_FOR_IF(n >= parallel::min_elems)
  for (std::int64_t i = 0; i < n; i++) g[i] *= c;
}

// The whole clip over a list of gradient tensors; returns the total norm before clipping.
template <class T>
double clip(std::span<const Grad<T>> grads, double max_norm) {
  if (!(max_norm > 0))
    throw Error("grad_clip: max_norm must be positive (got " + std::to_string(max_norm) + ")");
  double ss = 0;
  for (const Grad<T>& g : grads) ss += sum_squares(g.data, g.n);
  const double total = std::sqrt(ss);
  const double coef = clip_coef(total, max_norm);
  for (const Grad<T>& g : grads) scale(g.data, g.n, coef);
  return total;
}

}  // namespace lvt::ops::grad_clip

#if LVT_CUDA
#include <cub/block/block_reduce.cuh>

#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: the sum of squares reduced deterministically (a fixed grid of per-block double
// partials, then one block summing them in a fixed order) into device memory, and the scale
// reading it there. Nothing synchronizes: both are safe inside a captured CUDA graph. ---------
namespace lvt::ops::grad_clip::cuda {

// Device scratch `sum_squares` needs: one double per block of its first pass.
inline constexpr int sum_squares_partials = 1024;

// Every kernel here is a template, even with one instantiation: a plain __global__ function in a
// header is defined again by each .cu that includes it, and the link fails.
template <class T>
__global__ void sum_squares_partials_kernel(const T* g, std::int64_t n, double* partials) {
  using Reduce = cub::BlockReduce<double, ops::cuda::threads>;
  __shared__ typename Reduce::TempStorage tmp;
  double s = 0;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    s += double(g[i]) * double(g[i]);
  s = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// One block of sum_squares_partials threads: thread t holds partial t, CUB sums them in its
// fixed tree order, so the result depends only on n (which fixes the grid), never on timing.
template <int BlockThreads>
__global__ void sum_partials_kernel(const double* partials, int count, double* out,
                                    bool accumulate) {
  using Reduce = cub::BlockReduce<double, BlockThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const double s = Reduce(tmp).Sum(int(threadIdx.x) < count ? partials[threadIdx.x] : 0.0);
  if (threadIdx.x == 0) *out = accumulate ? *out + s : s;
}

// *out = (or +=, with accumulate) sum of g[i]^2, in double. partials: sum_squares_partials
// doubles of device scratch; out: device.
inline void sum_squares(const float* g, std::int64_t n, double* partials, double* out,
                        bool accumulate, cudaStream_t stream) {
  require(n >= 0, "grad_clip", "the element count must be non-negative", n);
  require(partials != nullptr && out != nullptr, "grad_clip",
          "sum_squares needs device partials (sum_squares_partials doubles) and out", n);
  std::int64_t blocks = (n + ops::cuda::threads - 1) / ops::cuda::threads;
  if (blocks > sum_squares_partials) blocks = sum_squares_partials;
  if (blocks > 0) {
    sum_squares_partials_kernel<float><<<unsigned(blocks), ops::cuda::threads, 0, stream>>>(g, n, partials);
    LVT_CUDA_LAUNCHED("grad_clip::cuda::sum_squares_partials_kernel");
  }
  sum_partials_kernel<sum_squares_partials><<<1, sum_squares_partials, 0, stream>>>(partials, int(blocks), out,
                                                              accumulate);
  LVT_CUDA_LAUNCHED("grad_clip::cuda::sum_partials_kernel");
}

template <class T>
__global__ void scale_by_clip_kernel(T* g, std::int64_t n, const double* sum_sq, float max_norm) {
  __shared__ float coef;  // once per block: sqrt and a division in double
  if (threadIdx.x == 0) coef = float(clip_coef(::sqrt(*sum_sq), double(max_norm)));
  __syncthreads();
  const T c = T(coef);
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    g[i] *= c;
}

// g *= clip_coef(sqrt(*sum_sq), max_norm), sum_sq in device memory (a NaN norm gives NaN, as
// torch). The host's scale(g, n, clip_coef(...)) on the same sum, bit for bit.
inline void scale_by_clip(float* g, std::int64_t n, const double* sum_sq, float max_norm,
                          cudaStream_t stream) {
  require(n >= 0, "grad_clip", "the element count must be non-negative", n);
  if (!(max_norm > 0))
    throw Error("grad_clip: max_norm must be positive (got " + std::to_string(max_norm) + ")");
  if (n == 0) return;
  scale_by_clip_kernel<float><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(g, n, sum_sq,
                                                                                  max_norm);
  LVT_CUDA_LAUNCHED("grad_clip::cuda::scale_by_clip_kernel");
}

}  // namespace lvt::ops::grad_clip::cuda
#endif
