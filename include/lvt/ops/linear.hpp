#pragma once
// A frozen linear projection with a LoRA adapter, as PEFT's lora.Linear computes it:
//   y = x W^T (+ bias) + scale * dropout(x) A^T B^T
//   x [rows, in], W [out, in] (frozen, nn.Linear layout), bias [out] (frozen; qwen2 q/k/v),
//   A = lora_A.weight [rank, in], B = lora_B.weight [out, rank],
//   scale = alpha / rank, or alpha / sqrt(rank) with rsLoRA (lora_scale below).
// Dropout keeps x[n, k] with probability 1 - p and scales it by 1 / (1 - p); the mask is
// counter_uniform(seed, n * in + k) >= p, so backward regenerates it instead of storing it
// (n counts rows of this call: a caller that splits the rows differently between forward and
// backward must give each piece its own seed, or keep the split).
// backward gives dx, dA, dB (never dW: the base is frozen) and saves nothing but x: it
// recomputes h = dropout(x) A^T, which is rows x rank.
//
// `forward`/`backward` take W as T values. The `_dequant` variants take a callable
// `dequantize_rows(row_begin, row_end, T* dst)` that writes rows [row_begin, row_end) of W into
// dst ([row_end - row_begin, in]) and a scratch of `chunk_rows * in` elements: the weight is
// dequantized on use, one chunk of output rows at a time, and never whole.
#include <cmath>
#include <cstdint>
#include <string>

#include "lvt/ops/common.hpp"
#include "lvt/ops/matmul.hpp"

namespace lvt::ops::linear {

// PEFT's `scaling`: lora_alpha / r, or lora_alpha / sqrt(r) when use_rslora.
inline double lora_scale(double alpha, int rank, bool rslora) {
  return rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
}

template <class T>
struct Lora {
  const T* A = nullptr;  // [rank, in]; null (or rank 0): no adapter on this projection
  const T* B = nullptr;  // [out, rank]
  std::int64_t rank = 0;
  T scale = 1;           // lora_scale(alpha, rank, rslora)
  float dropout = 0;     // p in [0, 1)
  std::uint64_t seed = 0;  // dropout_seed(run seed, step, layer, projection)
  bool active() const { return A != nullptr && rank > 0; }
};

template <class T>
struct LoraGrads {
  T* dA = nullptr;  // [rank, in], accumulated
  T* dB = nullptr;  // [out, rank], accumulated
};

// Rows of x the LoRA path drops out at a time (its dropped-out copy lives in scratch). Without
// dropout there is no copy: each LoRA product is one matrix product over all the rows.
inline constexpr std::int64_t lora_row_block = 256;
constexpr std::int64_t lora_block_rows(std::int64_t rows) {
  return rows < lora_row_block ? rows : lora_row_block;
}

// Scratch of forward and backward: h and dh [rows, rank] and a block of dropped-out rows of x
// [lora_block_rows(rows), in].
constexpr std::int64_t scratch_elems(std::int64_t rows, std::int64_t in, std::int64_t rank) {
  return 2 * rows * rank + lora_block_rows(rows) * in;
}

// Dropout's keep decision and factor for one element (shared with the CUDA kernel).
template <class T>
LVT_HD inline T dropout_factor(std::uint64_t seed, std::uint64_t index, float p) {
  if (p <= 0.0f) return T(1);
  return counter_uniform(seed, index) >= p ? T(1) / T(1 - p) : T(0);
}

namespace detail {

template <class T>
void check(const T* x, const T* scratch, const Lora<T>& lora, std::int64_t rows, std::int64_t in,
           std::int64_t out) {
  require(rows >= 0, "linear", "rows must be non-negative", rows);
  require(in > 0, "linear", "in_features must be positive", in);
  require(out > 0, "linear", "out_features must be positive", out);
  require(x != nullptr || rows == 0, "linear", "input x is null", rows);
  if (lora.A != nullptr || lora.rank != 0) {
    require(lora.rank > 0, "linear", "LoRA rank must be positive", lora.rank);
    require(lora.A != nullptr && lora.B != nullptr, "linear",
            "LoRA needs both lora_A and lora_B", lora.rank);
    if (scratch == nullptr)
      throw Error("linear: LoRA needs a scratch of scratch_elems(rows, in, rank) = " +
                  std::to_string(scratch_elems(rows, in, lora.rank)) + " elements (got null)");
    if (!(lora.dropout >= 0 && lora.dropout < 1))
      throw Error("linear: lora_dropout must be in [0, 1) (got " + std::to_string(lora.dropout) +
                  ")");
  }
}

// The dropped-out rows [n0, n1) of x, written to blk (or x itself when p = 0).
template <class T>
const T* dropped_rows(T* blk, const T* x, std::int64_t n0, std::int64_t n1, std::int64_t in,
                      const Lora<T>& lora) {
  if (lora.dropout <= 0) return x + n0 * in;
  LVT_PARALLEL_FOR_IF((n1 - n0) * in >= parallel::min_elems)
  for (std::int64_t n = n0; n < n1; n++)
    for (std::int64_t k = 0; k < in; k++)
      blk[(n - n0) * in + k] =
          x[n * in + k] * dropout_factor<T>(lora.seed, std::uint64_t(n * in + k), lora.dropout);
  return blk;
}

// h[n, r] = dropout(x[n, :]) . A[r, :]
template <class T>
void lora_down(T* h, T* blk, const T* x, const Lora<T>& lora, std::int64_t rows, std::int64_t in) {
  const std::int64_t R = lora.rank;
  if (lora.dropout <= 0)
    return matmul::gemm(false, true, rows, R, in, T(1), x, in, lora.A, in, T(0), h, R);
  for (std::int64_t n0 = 0; n0 < rows; n0 += lora_row_block) {
    const std::int64_t n1 = n0 + lora_row_block < rows ? n0 + lora_row_block : rows;
    const T* xd = dropped_rows(blk, x, n0, n1, in, lora);
    matmul::gemm(false, true, n1 - n0, R, in, T(1), xd, in, lora.A, in, T(0), h + n0 * R, R);
  }
}

template <class T>
void lora_forward(T* y, T* scratch, const T* x, const Lora<T>& lora, std::int64_t rows,
                  std::int64_t in, std::int64_t out) {
  T* h = scratch;
  T* blk = scratch + 2 * rows * lora.rank;
  lora_down(h, blk, x, lora, rows, in);
  // y += scale h B^T
  matmul::gemm(false, true, rows, out, lora.rank, lora.scale, (const T*)h, lora.rank, lora.B,
               lora.rank, T(1), y, out);
}

template <class T>
void lora_backward(T* dx, LoraGrads<T> g, T* scratch, const T* dy, const T* x,
                   const Lora<T>& lora, std::int64_t rows, std::int64_t in, std::int64_t out) {
  const std::int64_t R = lora.rank;
  T* h = scratch;
  T* dh = scratch + rows * R;
  T* blk = scratch + 2 * rows * R;
  // dh = scale * dy B
  matmul::gemm(false, false, rows, R, out, lora.scale, dy, out, lora.B, R, T(0), dh, R);
  if (lora.dropout <= 0) {
    // h = x A^T (for dB), dA += dh^T x, dx += dh A: each one product over all the rows
    if (g.dB) matmul::gemm(false, true, rows, R, in, T(1), x, in, lora.A, in, T(0), h, R);
    if (g.dA) matmul::gemm(true, false, R, in, rows, T(1), (const T*)dh, R, x, in, T(1), g.dA, in);
    if (dx) matmul::gemm(false, false, rows, in, R, T(1), (const T*)dh, R, lora.A, in, T(1), dx, in);
  } else {
    // per block of rows, one dropped-out copy of x serves h (recomputed) and dA += dh^T
    // dropout(x); then the block buffer takes dh A for dx += dropout'(dh A)
    for (std::int64_t n0 = 0; n0 < rows; n0 += lora_row_block) {
      const std::int64_t n1 = n0 + lora_row_block < rows ? n0 + lora_row_block : rows, nb = n1 - n0;
      const T* xd = dropped_rows(blk, x, n0, n1, in, lora);
      if (g.dB) matmul::gemm(false, true, nb, R, in, T(1), xd, in, lora.A, in, T(0), h + n0 * R, R);
      if (g.dA)
        matmul::gemm(true, false, R, in, nb, T(1), (const T*)(dh + n0 * R), R, xd, in, T(1), g.dA, in);
      if (dx) {
        matmul::gemm(false, false, nb, in, R, T(1), (const T*)(dh + n0 * R), R, lora.A, in, T(0),
                     blk, in);
        LVT_PARALLEL_FOR_IF(nb * in >= parallel::min_elems)
        for (std::int64_t n = n0; n < n1; n++)
          for (std::int64_t k = 0; k < in; k++)
            dx[n * in + k] += blk[(n - n0) * in + k] *
                              dropout_factor<T>(lora.seed, std::uint64_t(n * in + k), lora.dropout);
      }
    }
  }
  // dB += scale dy^T h
  if (g.dB) matmul::gemm(true, false, out, R, rows, lora.scale, dy, out, (const T*)h, R, T(1), g.dB, R);
}

}  // namespace detail

// y = x W^T + bias + scale * dropout(x) A^T B^T. bias may be null.
template <class T>
void forward(T* y, T* scratch, const T* x, const T* W, const T* bias, const Lora<T>& lora,
             std::int64_t rows, std::int64_t in, std::int64_t out) {
  detail::check(x, scratch, lora, rows, in, out);
  require(W != nullptr, "linear", "base weight W is null", out);
  matmul::forward(y, out, x, in, W, in, bias, rows, out, in, T(1), false);
  if (lora.active()) detail::lora_forward(y, scratch, x, lora, rows, in, out);
}

// dx += dy W + LoRA's part (dx may be null when no gradient flows below); dA, dB +=.
template <class T>
void backward(T* dx, LoraGrads<T> grads, T* scratch, const T* dy, const T* x, const T* W,
              const Lora<T>& lora, std::int64_t rows, std::int64_t in, std::int64_t out) {
  detail::check(x, scratch, lora, rows, in, out);
  require(W != nullptr || dx == nullptr, "linear", "base weight W is null", out);
  if (dx) matmul::backward_input(dx, in, dy, out, W, in, rows, out, in, T(1));
  if (lora.active()) detail::lora_backward(dx, grads, scratch, dy, x, lora, rows, in, out);
}

// ---- dequantize on use -------------------------------------------------------------------

constexpr std::int64_t weight_scratch_elems(std::int64_t chunk_rows, std::int64_t in) {
  return chunk_rows * in;
}

template <class T, class Dequant>
void forward_dequant(T* y, T* scratch, T* w_scratch, std::int64_t chunk_rows, const T* x,
                     Dequant&& dequantize_rows, const T* bias, const Lora<T>& lora,
                     std::int64_t rows, std::int64_t in, std::int64_t out) {
  detail::check(x, scratch, lora, rows, in, out);
  require(chunk_rows > 0, "linear", "chunk_rows (weight rows per dequantized chunk) must be positive",
          chunk_rows);
  require(w_scratch != nullptr, "linear", "w_scratch (weight_scratch_elems) is null", chunk_rows);
  for (std::int64_t m0 = 0; m0 < out; m0 += chunk_rows) {
    const std::int64_t m1 = m0 + chunk_rows < out ? m0 + chunk_rows : out;
    dequantize_rows(m0, m1, w_scratch);
    matmul::forward(y + m0, out, x, in, (const T*)w_scratch, in, bias ? bias + m0 : bias, rows,
                    m1 - m0, in, T(1), false);
  }
  if (lora.active()) detail::lora_forward(y, scratch, x, lora, rows, in, out);
}

template <class T, class Dequant>
void backward_dequant(T* dx, LoraGrads<T> grads, T* scratch, T* w_scratch,
                      std::int64_t chunk_rows, const T* dy, const T* x, Dequant&& dequantize_rows,
                      const Lora<T>& lora, std::int64_t rows, std::int64_t in, std::int64_t out) {
  detail::check(x, scratch, lora, rows, in, out);
  require(chunk_rows > 0, "linear", "chunk_rows (weight rows per dequantized chunk) must be positive",
          chunk_rows);
  require(w_scratch != nullptr || dx == nullptr, "linear",
          "w_scratch (weight_scratch_elems) is null", chunk_rows);
  if (dx)
    for (std::int64_t m0 = 0; m0 < out; m0 += chunk_rows) {
      const std::int64_t m1 = m0 + chunk_rows < out ? m0 + chunk_rows : out;
      dequantize_rows(m0, m1, w_scratch);
      matmul::backward_input(dx, in, dy + m0, out, (const T*)w_scratch, in, rows, m1 - m0, in,
                             T(1));
    }
  if (lora.active()) detail::lora_backward(dx, grads, scratch, dy, x, lora, rows, in, out);
}

}  // namespace lvt::ops::linear

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: the pieces of the linear layer cuBLASLt does not do. The GEMMs themselves
// (x W^T, dy W, and LoRA's small ones) are matmul::cuda::Gemm calls in backend/cuda.hpp. Dropout
// seeds are read from device memory (`seed_state` = {run seed, step index}) so a captured graph
// uses the current step's masks: seed = dropout_seed(run seed, step, layer, projection), as the
// host binds it. ----------------------------------------------------------------------------
namespace lvt::ops::linear::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

struct DropoutSite {
  const std::uint64_t* seed_state = nullptr;  // device: {run seed, step index}
  std::uint64_t layer = 0, proj = 0;
  float p = 0;
  LVT_HD std::uint64_t seed() const {
    return dropout_seed(seed_state[0], seed_state[1], layer, proj);
  }
};

// Dropout over rows [n0, n1) of a [rows, in] tensor, with the mask of (n0 + r) * in + k:
//   forward (Add = false):  blk[r, k] = x[n0 + r, k] * factor
//   backward (Add = true):  x[n0 + r, k] += blk[r, k] * factor   (x is dx here)
template <bool Add, class S>
__global__ void dropout_rows_kernel(S* blk, S* x, std::int64_t n0, std::int64_t n1, std::int64_t in,
                                    DropoutSite site) {
  const std::uint64_t seed = site.seed();
  const std::int64_t total = (n1 - n0) * in;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t j = n0 * in + i;
    const float f = dropout_factor<float>(seed, std::uint64_t(j), site.p);
    if constexpr (Add) x[j] = from_float<S>(to_float(x[j]) + to_float(blk[i]) * f);
    else blk[i] = from_float<S>(to_float(x[j]) * f);
  }
}
template <bool Add, class S>
void dropout_rows(S* blk, S* x, std::int64_t n0, std::int64_t n1, std::int64_t in,
                  const DropoutSite& site, cudaStream_t stream) {
  if (n1 <= n0) return;
  dropout_rows_kernel<Add, S><<<ops::cuda::grid_for((n1 - n0) * in), ops::cuda::threads, 0, stream>>>(
      blk, x, n0, n1, in, site);
  LVT_CUDA_LAUNCHED("linear::cuda::dropout_rows_kernel");
}
// The dropped-out rows [n0, n1) of x into blk.
template <class S>
void dropped_rows(S* blk, const S* x, std::int64_t n0, std::int64_t n1, std::int64_t in,
                  const DropoutSite& site, cudaStream_t stream) {
  dropout_rows<false, S>(blk, const_cast<S*>(x), n0, n1, in, site, stream);  // x only read
}
// dx[n0 + r, k] += blk[r, k] * factor: dropout's backward for rows [n0, n1).
template <class S>
void add_dropped(S* dx, const S* blk, std::int64_t n0, std::int64_t n1, std::int64_t in,
                 const DropoutSite& site, cudaStream_t stream) {
  dropout_rows<true, S>(const_cast<S*>(blk), dx, n0, n1, in, site, stream);  // blk only read
}

// dst = S(src): the fp32 LoRA master parameters rounded to the GEMMs' 16-bit type.
template <class S>
__global__ void round_kernel(S* dst, const float* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_float<S>(src[i]);
}
template <class S>
void round_params(S* dst, const float* src, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  round_kernel<S><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(dst, src, n);
  LVT_CUDA_LAUNCHED("linear::cuda::round_kernel");
}

// ---- LoRA on the fp32 master adapters (generation) -----------------------------------------
// y += scale * (x A^T) B^T for a few rows (a decode step, a prefill chunk), reading A [rank, in]
// and B [out, rank] in fp32 where they live in the flat LoRA buffer: the decode scratch holds no
// 16-bit copy of a layer's adapters, and the adapters are small beside the weight. h [rows, rank]
// is fp32; every sum is fp32 (the host's lora_forward in another order). No dropout (eval mode).
// Down: one warp per h[n, r] (lanes stride `in`, so A's row is read coalesced); up: one thread
// per y[n, o]. A is read once per row: fine for a few rows, not a training GEMM.
template <class S>
__global__ void lora_down_fp32_kernel(float* h, const S* x, const float* A, std::int64_t rows,
                                      std::int64_t in, std::int64_t rank) {
  const int lane = threadIdx.x % 32;
  const std::int64_t warps = std::int64_t(gridDim.x) * (blockDim.x / 32);
  for (std::int64_t w = (blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x) / 32; w < rows * rank;
       w += warps) {
    const std::int64_t n = w / rank, r = w % rank;
    float s = 0;
    for (std::int64_t k = lane; k < in; k += 32) s += to_float(x[n * in + k]) * A[r * in + k];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) h[w] = s;
  }
}
template <class S>
__global__ void lora_up_fp32_kernel(S* y, const float* h, const float* B, std::int64_t rows,
                                    std::int64_t out, std::int64_t rank, float scale) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < rows * out;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / out, o = i % out;
    float s = 0;
    for (std::int64_t r = 0; r < rank; ++r) s += h[n * rank + r] * B[o * rank + r];
    y[i] = from_float<S>(to_float(y[i]) + scale * s);
  }
}
// h: rows * rank floats of scratch.
template <class S>
void lora_forward_fp32(S* y, float* h, const S* x, const float* A, const float* B, std::int64_t rows,
                       std::int64_t in, std::int64_t out, std::int64_t rank, float scale,
                       cudaStream_t stream) {
  if (rows == 0 || rank == 0) return;
  lora_down_fp32_kernel<S><<<ops::cuda::grid_for(rows * rank * 32), ops::cuda::threads, 0, stream>>>(
      h, x, A, rows, in, rank);
  LVT_CUDA_LAUNCHED("linear::cuda::lora_down_fp32_kernel");
  lora_up_fp32_kernel<S><<<ops::cuda::grid_for(rows * out), ops::cuda::threads, 0, stream>>>(
      y, h, B, rows, out, rank, scale);
  LVT_CUDA_LAUNCHED("linear::cuda::lora_up_fp32_kernel");
}

}  // namespace lvt::ops::linear::cuda
#endif
