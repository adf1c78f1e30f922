#pragma once
// Rotary position embedding as Hugging Face Llama applies it (`apply_rotary_pos_emb` with
// `rotate_half`): the rotated part of a head is split into halves x1 = x[:h], x2 = x[h:2h]
// (h = rotary_dim / 2), NOT interleaved pairs, and
//   out[i]     = x1[i] * cos[t,i] - x2[i] * sin[t,i]
//   out[i + h] = x2[i] * cos[t,i] + x1[i] * sin[t,i]
// Dimensions from rotary_dim to head_dim pass through unchanged (partial rotary, phi3).
//
// inv_freq[i] = theta^(-2i / rotary_dim), i < rotary_dim/2, then scaled as
// transformers/modeling_rope_utils.py does: `linear` divides by factor (same as positions /
// factor), `llama3` (_compute_llama3_parameters) divides low frequencies by factor, keeps high
// ones, and interpolates smoothly between. `longrope` needs per-dimension factor lists that
// ModelConfig does not carry: inv_freq() rejects it.
//
// Layout: x [B, T, heads, head_dim] (a q/k projection's output, viewed per head); cos/sin
// tables [T, rotary_dim/2] for positions 0..T-1. Packed rows: positions [B, T] (optional; null:
// 0..T-1 in every row) gives each token's position within its example, and token (b, t) is
// rotated by the table row positions[b, t] instead of t (every position is below T).
#include <cmath>
#include <cstdint>
#include <string>

#include "lvt/model/config.hpp"
#include "lvt/model/rope_freq.hpp"
#include "lvt/ops/common.hpp"
#include "lvt/ops/parallel.hpp"

namespace lvt::ops::rope {

constexpr int inv_freq_elems(const ModelConfig& c) { return rope_inv_freq_elems(c); }

// inv_freq [rotary_dim/2], computed in double (model/rope_freq.hpp: shared with the GGUF reader).
template <class T>
void inv_freq(T* out, const ModelConfig& c) {
  rope_inv_freq(out, c);
}

// cos/sin tables [seq, half] for positions 0..seq-1. The angle pos * inv_freq[i] is rounded to
// float32 as Hugging Face computes it (inv_freq @ position_ids in float32), so at position 8000
// the table matches HF's to an ulp instead of differing by ~1e-3 rad; cos/sin of it in double.
template <class T>
void tables(T* cos_out, T* sin_out, const T* inv_freq, std::int64_t seq, int half) {
  require(half > 0, "rope", "rotary_dim / 2 must be positive", half);
  for (std::int64_t t = 0; t < seq; t++)
    for (int i = 0; i < half; i++) {
      const double a = double(float(t) * float(inv_freq[i]));
      cos_out[t * half + i] = T(std::cos(a));
      sin_out[t * half + i] = T(std::sin(a));
    }
}

// One rotation pair, shared with the CUDA kernel. Backward is the transpose: rotate by -angle.
template <class T>
LVT_HD inline void rotate(T& o1, T& o2, T x1, T x2, T c, T s) {
  o1 = x1 * c - x2 * s;
  o2 = x2 * c + x1 * s;
}

// The table row of token (b, t): its position within its example (t without positions).
LVT_HD inline std::int64_t position(const std::int32_t* positions, std::int64_t b, std::int64_t seq,
                                    std::int64_t t) {
  return positions ? positions[b * seq + t] : t;
}

namespace detail {
inline void check(std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim) {
  require(heads > 0, "rope", "heads must be positive", heads);
  require(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "rope",
          "rotary_dim must be even and in (0, head_dim]", rotary_dim);
}
}  // namespace detail

// out may alias x (in place). x, out [B, T, heads, head_dim]; cos, sin [T, rotary_dim/2].
template <class T>
void forward(T* out, const T* x, const T* cos, const T* sin, std::int64_t batch, std::int64_t seq,
             std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
             const std::int32_t* positions = nullptr) {
  detail::check(heads, head_dim, rotary_dim);
  const std::int64_t half = rotary_dim / 2;
  LVT_PARALLEL_FOR_IF(batch * seq * heads * head_dim >= parallel::min_elems)
  for (std::int64_t bt = 0; bt < batch * seq; bt++) {
    const std::int64_t b = bt / seq, t = bt % seq;
    const std::int64_t pos = position(positions, b, seq, t);
    const T* c = cos + pos * half;
    const T* s = sin + pos * half;
    for (std::int64_t h = 0; h < heads; h++) {
      const std::int64_t off = ((b * seq + t) * heads + h) * head_dim;
      const T* xi = x + off;
      T* o = out + off;
      for (std::int64_t i = 0; i < half; i++) {
        const T x1 = xi[i], x2 = xi[i + half];
        rotate(o[i], o[i + half], x1, x2, c[i], s[i]);
      }
      if (o != xi)
        for (std::int64_t i = rotary_dim; i < head_dim; i++) o[i] = xi[i];
    }
  }
}

// dx += R(-angle) dout. dx must not alias dout.
template <class T>
void backward(T* dx, const T* dout, const T* cos, const T* sin, std::int64_t batch,
              std::int64_t seq, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
              const std::int32_t* positions = nullptr) {
  detail::check(heads, head_dim, rotary_dim);
  const std::int64_t half = rotary_dim / 2;
  LVT_PARALLEL_FOR_IF(batch * seq * heads * head_dim >= parallel::min_elems)
  for (std::int64_t bt = 0; bt < batch * seq; bt++) {
    const std::int64_t b = bt / seq, t = bt % seq;
    const std::int64_t pos = position(positions, b, seq, t);
    const T* c = cos + pos * half;
    const T* s = sin + pos * half;
    for (std::int64_t h = 0; h < heads; h++) {
      const std::int64_t off = ((b * seq + t) * heads + h) * head_dim;
      const T* dy = dout + off;
      T* d = dx + off;
      for (std::int64_t i = 0; i < half; i++) {
        T d1, d2;
        rotate(d1, d2, dy[i], dy[i + half], c[i], T(-s[i]));
        d[i] += d1;
        d[i + half] += d2;
      }
      for (std::int64_t i = rotary_dim; i < head_dim; i++) d[i] += dy[i];
    }
  }
}

}  // namespace lvt::ops::rope

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: one thread per rotated pair; out may alias x; backward accumulates ---------------
// positions: device memory [batch * seq], or null (0..seq-1 in every row).
namespace lvt::ops::rope::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

// The table row of pair row `row` = (b * seq + t) * heads + h.
__device__ __forceinline__ std::int64_t table_row(const std::int32_t* positions, std::int64_t row,
                                                  std::int64_t seq, std::int64_t heads) {
  const std::int64_t bt = row / heads;
  return positions ? std::int64_t(positions[bt]) : bt % seq;
}

template <class S>
__global__ void forward_kernel(S* out, const S* x, const float* cos, const float* sin,
                               const std::int32_t* positions, std::int64_t seq, std::int64_t heads,
                               std::int64_t head_dim, std::int64_t half, std::int64_t pairs) {
  for (std::int64_t p = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t i = p % half, row = p / half;  // row = (b * seq + t) * heads + h
    const std::int64_t t = table_row(positions, row, seq, heads);
    const std::int64_t off = row * head_dim;
    float o1, o2;
    rotate(o1, o2, to_float(x[off + i]), to_float(x[off + i + half]), cos[t * half + i], sin[t * half + i]);
    out[off + i] = from_float<S>(o1);
    out[off + i + half] = from_float<S>(o2);
    if (out != x && i == 0)
      for (std::int64_t k = 2 * half; k < head_dim; ++k) out[off + k] = x[off + k];
  }
}
template <class S>
__global__ void backward_kernel(S* dx, const S* dout, const float* cos, const float* sin,
                                const std::int32_t* positions, std::int64_t seq, std::int64_t heads,
                                std::int64_t head_dim, std::int64_t half, std::int64_t pairs) {
  for (std::int64_t p = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t i = p % half, row = p / half;
    const std::int64_t t = table_row(positions, row, seq, heads);
    const std::int64_t off = row * head_dim;
    float d1, d2;
    rotate(d1, d2, to_float(dout[off + i]), to_float(dout[off + i + half]), cos[t * half + i],
           -sin[t * half + i]);
    dx[off + i] = from_float<S>(to_float(dx[off + i]) + d1);
    dx[off + i + half] = from_float<S>(to_float(dx[off + i + half]) + d2);
    if (i == 0)
      for (std::int64_t k = 2 * half; k < head_dim; ++k)
        dx[off + k] = from_float<S>(to_float(dx[off + k]) + to_float(dout[off + k]));
  }
}
// cos/sin: fp32 tables [seq, rotary_dim / 2] (tables() on the host, copied once).
template <class S>
void forward(S* out, const S* x, const float* cos, const float* sin, std::int64_t batch,
             std::int64_t seq, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
             cudaStream_t stream, const std::int32_t* positions = nullptr) {
  detail::check(heads, head_dim, rotary_dim);
  const std::int64_t half = rotary_dim / 2, pairs = batch * seq * heads * half;
  if (pairs == 0) return;
  forward_kernel<S><<<ops::cuda::grid_for(pairs), ops::cuda::threads, 0, stream>>>(
      out, x, cos, sin, positions, seq, heads, head_dim, half, pairs);
  LVT_CUDA_LAUNCHED("rope::cuda::forward_kernel");
}
template <class S>
void backward(S* dx, const S* dout, const float* cos, const float* sin, std::int64_t batch,
              std::int64_t seq, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
              cudaStream_t stream, const std::int32_t* positions = nullptr) {
  detail::check(heads, head_dim, rotary_dim);
  const std::int64_t half = rotary_dim / 2, pairs = batch * seq * heads * half;
  if (pairs == 0) return;
  backward_kernel<S><<<ops::cuda::grid_for(pairs), ops::cuda::threads, 0, stream>>>(
      dx, dout, cos, sin, positions, seq, heads, head_dim, half, pairs);
  LVT_CUDA_LAUNCHED("rope::cuda::backward_kernel");
}

// The cos / sin tables of `tables` above, on the device: angle in fp32, cos and sin in double
// (inv_freq [half] in device memory, computed on the host by inv_freq).
// (A template, as every kernel in a header: one definition however many .cu files include it.)
template <class F = float>
__global__ void tables_kernel(F* cos_out, F* sin_out, const F* inv_freq, std::int64_t seq, int half) {
  const std::int64_t total = seq * half;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const double a = double(float(i / half) * inv_freq[i % half]);
    cos_out[i] = float(::cos(a));
    sin_out[i] = float(::sin(a));
  }
}
inline void tables(float* cos_out, float* sin_out, const float* inv_freq, std::int64_t seq, int half,
                   cudaStream_t stream) {
  require(half > 0, "rope", "rotary_dim / 2 must be positive", half);
  tables_kernel<float><<<ops::cuda::grid_for(seq * half), ops::cuda::threads, 0, stream>>>(
      cos_out, sin_out, inv_freq, seq, half);
  LVT_CUDA_LAUNCHED("rope::cuda::tables_kernel");
}
}  // namespace lvt::ops::rope::cuda
#endif
