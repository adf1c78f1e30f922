#pragma once
// SwiGLU of the Llama MLP: out = silu(gate) * up, silu(g) = g * sigmoid(g) (HF act "silu").
//   gate, up [rows, cols] with row stride `in_stride` (cols for separate gate_proj/up_proj
//   outputs; 2*cols with gate at +0 and up at +cols for phi3's fused gate_up_proj), out [rows, cols].
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "lvt/ops/common.hpp"
#include "lvt/ops/parallel.hpp"
#include "lvt/ops/vmath.hpp"

namespace lvt::ops::swiglu {

template <class T>
LVT_HD inline T sigmoid(T x) {
  using std::exp;
  return T(1) / (T(1) + exp(-x));
}

// Per element, shared with the CUDA kernel.
template <class T>
LVT_HD inline T value(T g, T u) {
  return g * sigmoid(g) * u;
}
// d out / d gate and d out / d up at (g, u).
template <class T>
LVT_HD inline void grads(T& dg, T& du, T g, T u) {
  const T s = sigmoid(g);
  dg = u * s * (T(1) + g * (T(1) - s));
  du = g * s;
}

template <class T>
void forward(T* out, const T* gate, const T* up, std::int64_t rows, std::int64_t cols,
             std::int64_t in_stride) {
  require(cols > 0 && in_stride >= cols, "swiglu", "cols must be positive and <= the row stride",
          cols);
  LVT_PARALLEL_FOR_IF(rows * cols >= parallel::min_elems)
  for (std::int64_t r = 0; r < rows; r++)
    if constexpr (std::is_same_v<T, float>)  // the host backend: vectorized (ops/vmath.hpp)
      vmath::swiglu_row(out + r * cols, gate + r * in_stride, up + r * in_stride, cols);
    else
      for (std::int64_t i = 0; i < cols; i++)
        out[r * cols + i] = value(gate[r * in_stride + i], up[r * in_stride + i]);
}
template <class T>
void forward(T* out, const T* gate, const T* up, std::int64_t rows, std::int64_t cols) {
  forward(out, gate, up, rows, cols, cols);
}

// dgate += dout * d/dg, dup += dout * silu(g); dgate/dup use the same stride as gate/up.
template <class T>
void backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t rows,
              std::int64_t cols, std::int64_t in_stride) {
  require(cols > 0 && in_stride >= cols, "swiglu", "cols must be positive and <= the row stride",
          cols);
  LVT_PARALLEL_FOR_IF(rows * cols >= parallel::min_elems)
  for (std::int64_t r = 0; r < rows; r++)
    if constexpr (std::is_same_v<T, float>)
      vmath::swiglu_grad_row(dgate + r * in_stride, dup + r * in_stride, dout + r * cols,
                             gate + r * in_stride, up + r * in_stride, cols);
    else
      for (std::int64_t i = 0; i < cols; i++) {
        const std::int64_t j = r * in_stride + i;
        T dg, du;
        grads(dg, du, gate[j], up[j]);
        dgate[j] += dout[r * cols + i] * dg;
        dup[j] += dout[r * cols + i] * du;
      }
}
template <class T>
void backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t rows,
              std::int64_t cols) {
  backward(dgate, dup, dout, gate, up, rows, cols, cols);
}

}  // namespace lvt::ops::swiglu

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: one thread per element, the same per-element math as the host ------------------
namespace lvt::ops::swiglu::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

template <class S>
__global__ void forward_kernel(S* out, const S* gate, const S* up, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<S>(value(to_float(gate[i]), to_float(up[i])));
}
template <class S>
__global__ void backward_kernel(S* dgate, S* dup, const S* dout, const S* gate, const S* up,
                                std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    float dg, du;
    grads(dg, du, to_float(gate[i]), to_float(up[i]));
    const float d = to_float(dout[i]);
    dgate[i] = from_float<S>(to_float(dgate[i]) + d * dg);
    dup[i] = from_float<S>(to_float(dup[i]) + d * du);
  }
}
template <class S>
void forward(S* out, const S* gate, const S* up, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  forward_kernel<S><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(out, gate, up, n);
  LVT_CUDA_LAUNCHED("swiglu::cuda::forward_kernel");
}
template <class S>
void backward(S* dgate, S* dup, const S* dout, const S* gate, const S* up, std::int64_t n,
              cudaStream_t stream) {
  if (n == 0) return;
  backward_kernel<S><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(dgate, dup, dout, gate, up, n);
  LVT_CUDA_LAUNCHED("swiglu::cuda::backward_kernel");
}
}  // namespace lvt::ops::swiglu::cuda
#endif
