#pragma once
// RMSNorm as Hugging Face's LlamaRMSNorm:
//   rstd[n] = 1 / sqrt(mean_i x[n,i]^2 + eps),   out[n,i] = weight[i] * (x[n,i] * rstd[n])
// The sum of squares is accumulated in double on the host (the reference must not be the noisier
// side of a host-vs-CUDA comparison); everything else is in T (fp32 on the host backend).
// forward saves rstd [N] for backward. weight is frozen: backward gives dx only (and dweight if
// the caller passes a buffer, for completeness and the gradient check).
#include <cmath>
#include <cstdint>

#include "lvt/ops/common.hpp"
#include "lvt/ops/parallel.hpp"

namespace lvt::ops::rmsnorm {

template <class T>
void forward(T* out, T* rstd, const T* x, const T* weight, std::int64_t rows, std::int64_t dim,
             double eps) {
  require(dim > 0, "rmsnorm", "dim must be positive", dim);
  require(eps > 0, "rmsnorm", "eps (rms_norm_eps) must be positive", 0);
  LVT_PARALLEL_FOR_IF(rows * dim >= parallel::min_elems)
  for (std::int64_t n = 0; n < rows; n++) {
    const T* xr = x + n * dim;
    double ss = 0;
    for (std::int64_t i = 0; i < dim; i++) ss += double(xr[i]) * double(xr[i]);
    const T r = T(1.0 / std::sqrt(ss / double(dim) + eps));
    T* o = out + n * dim;
    for (std::int64_t i = 0; i < dim; i++) o[i] = weight[i] * (xr[i] * r);
    if (rstd) rstd[n] = r;
  }
}

// With xhat = x * r:  dx = r * (g - xhat * mean(g * xhat)),  g = dout * weight.
// dx += ...; dweight (optional, may be null) += sum_n dout * xhat.
template <class T>
void backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const T* rstd,
              std::int64_t rows, std::int64_t dim) {
  require(dim > 0, "rmsnorm", "dim must be positive", dim);
  // rows in parallel, unless dweight (a sum over rows) is wanted
  LVT_PARALLEL_FOR_IF(dweight == nullptr && rows * dim >= parallel::min_elems)
  for (std::int64_t n = 0; n < rows; n++) {
    const T* xr = x + n * dim;
    const T* dy = dout + n * dim;
    const T r = rstd[n];
    double dot = 0;  // sum_i dout * weight * xhat
    for (std::int64_t i = 0; i < dim; i++) dot += double(dy[i] * weight[i]) * double(xr[i] * r);
    const T mean_dot = T(dot / double(dim));
    T* d = dx + n * dim;
    for (std::int64_t i = 0; i < dim; i++) {
      const T xhat = xr[i] * r;
      d[i] += r * (dy[i] * weight[i] - xhat * mean_dot);
      if (dweight) dweight[i] += dy[i] * xhat;
    }
  }
}

}  // namespace lvt::ops::rmsnorm

#if LVT_CUDA
#include <cub/block/block_reduce.cuh>

#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: one block per row, CUB block reductions, fp32 math over S storage ----------------
namespace lvt::ops::rmsnorm::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

template <class S>
__global__ void forward_kernel(S* out, float* rstd, const S* x, const S* w, std::int64_t dim,
                               float eps) {
  using Reduce = cub::BlockReduce<float, ops::cuda::threads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float r_shared;
  const std::int64_t row = blockIdx.x;
  const S* xr = x + row * dim;
  float ss = 0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_float(xr[i]);
    ss += v * v;
  }
  const float total = Reduce(tmp).Sum(ss);
  if (threadIdx.x == 0) {
    r_shared = rsqrtf(total / float(dim) + eps);
    if (rstd) rstd[row] = r_shared;
  }
  __syncthreads();
  const float r = r_shared;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    out[row * dim + i] = from_float<S>(to_float(xr[i]) * r * to_float(w[i]));
}

// dx += r * (dy*w - xhat * mean(dy*w*xhat)), as the host reference (dweight: the norm is frozen).
template <class S>
__global__ void backward_kernel(S* dx, const S* dout, const S* x, const S* w, const float* rstd,
                                std::int64_t dim) {
  using Reduce = cub::BlockReduce<float, ops::cuda::threads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float mean_shared;
  const std::int64_t row = blockIdx.x;
  const float r = rstd[row];
  float dot = 0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    dot += to_float(dout[row * dim + i]) * to_float(w[i]) * to_float(x[row * dim + i]) * r;
  const float total = Reduce(tmp).Sum(dot);
  if (threadIdx.x == 0) mean_shared = total / float(dim);
  __syncthreads();
  const float mean_dot = mean_shared;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const std::int64_t j = row * dim + i;
    const float xhat = to_float(x[j]) * r;
    dx[j] = from_float<S>(to_float(dx[j]) + r * (to_float(dout[j]) * to_float(w[i]) - xhat * mean_dot));
  }
}

template <class S>
void forward(S* out, float* rstd, const S* x, const S* w, std::int64_t rows, std::int64_t dim,
             double eps, cudaStream_t stream) {
  if (rows == 0) return;
  forward_kernel<S><<<unsigned(rows), ops::cuda::threads, 0, stream>>>(out, rstd, x, w, dim, float(eps));
  LVT_CUDA_LAUNCHED("rmsnorm::cuda::forward_kernel");
}
template <class S>
void backward(S* dx, const S* dout, const S* x, const S* w, const float* rstd, std::int64_t rows,
              std::int64_t dim, cudaStream_t stream) {
  if (rows == 0) return;
  backward_kernel<S><<<unsigned(rows), ops::cuda::threads, 0, stream>>>(dx, dout, x, w, rstd, dim);
  LVT_CUDA_LAUNCHED("rmsnorm::cuda::backward_kernel");
}
}  // namespace lvt::ops::rmsnorm::cuda
#endif
