#pragma once
// Causal attention of a few new query rows over a KV cache: the decode step of generation (one
// row) and the chunks of a prefill (up to plan::prefill_chunk_tokens rows). Grouped-query heads
// as in ops/attention.hpp, and the same softmax (the max, exp in T, the sum in double); the dot
// products are summed in another order than the forward's matrix products, so a cached decode
// gives what a full forward gives to rounding (the tests allow 1e-5). One head per thread, each
// with its own score row.
//
//   q [rows, H, D]: the queries of positions pos0 .. pos0 + rows - 1 of one sequence (RoPE applied)
//   k, v [context, KV, D]: that sequence's cache, filled for positions 0 .. pos0 + rows - 1
//   out [rows, H, D]; row i attends keys j <= pos0 + i; query head h reads kv head h / (H / KV)
// No log-sum-exp is kept: nothing runs backward through generation.
#include <cmath>
#include <cstdint>

#include "lvt/ops/common.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/parallel.hpp"

namespace lvt::ops::decode_attention {

// Scratch elements: one score row over the whole context per thread.
constexpr std::int64_t scratch_elems(std::int64_t context, int threads = 1) {
  return context * (threads > 1 ? threads : 1);
}

namespace detail {
// The shape checks of both versions (host and CUDA), in this order.
inline void check(std::int64_t rows, std::int64_t pos0, std::int64_t heads, std::int64_t kv_heads,
                  std::int64_t head_dim) {
  require(rows > 0, "decode_attention", "rows must be positive", rows);
  require(pos0 >= 0, "decode_attention", "pos0 must be non-negative", pos0);
  require(head_dim > 0, "decode_attention", "head_dim must be positive", head_dim);
  require(kv_heads > 0 && heads % kv_heads == 0, "decode_attention",
          "heads must be a multiple of kv_heads (grouped-query attention)", kv_heads);
}
}  // namespace detail

template <class T>
void forward(T* out, T* scratch, const T* q, const T* k, const T* v, std::int64_t rows,
             std::int64_t pos0, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
             int threads = 1) {
  require(scratch != nullptr, "decode_attention",
          "scratch (scratch_elems(context) = context elements) is null", rows);
  detail::check(rows, pos0, heads, kv_heads, head_dim);
  const std::int64_t D = head_dim, group = heads / kv_heads;
  const T scale = T(1.0 / std::sqrt(double(D)));
  const std::int64_t context = pos0 + rows;  // the score row's length, at most
  const int team = parallel::threads() < threads ? parallel::threads() : threads;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(team) schedule(static) if(team > 1 && heads * context * D >= parallel::min_elems)
#endif
  for (std::int64_t h = 0; h < heads; h++) {
    const std::int64_t g = h / group;
    T* s = scratch + std::int64_t(parallel::thread_id()) * context;
    for (std::int64_t i = 0; i < rows; i++) {
      const std::int64_t t = pos0 + i;
      const T* qt = q + (i * heads + h) * D;
      for (std::int64_t j = 0; j <= t; j++)
        s[j] = scale * matmul::dot(qt, k + (j * kv_heads + g) * D, D);
      const T m = attention::detail::softmax_max(s, t + 1);
      const double sum = attention::detail::softmax_exp_sum(s, t + 1, m);
      const T inv = T(1.0 / sum);
      T* o = out + (i * heads + h) * D;
      for (std::int64_t d = 0; d < D; d++) o[d] = 0;
      for (std::int64_t j = 0; j <= t; j++) {
        const T p = s[j] * inv;
        const T* vj = v + (j * kv_heads + g) * D;
        for (std::int64_t d = 0; d < D; d++) o[d] += p * vj[d];
      }
    }
  }
}

}  // namespace lvt::ops::decode_attention

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: one block per (query row, head), its keys split over the block's warps ------------
// Each warp walks keys j = warp, warp + warps, ... <= pos0 + row with an online softmax in fp32
// (running max m, sum l, the output row acc over the 32 lanes, head_dim / 32 values each), so no
// score row is stored; at the end the warps' (m, l, acc) are merged through shared memory. The
// same math as the host above in another order: fp32 storage agrees to ~1e-6 relative.
// q, out [rows, heads, head_dim]; k, v [context, kv_heads, head_dim] of one sequence; S is fp32,
// bf16 or fp16. Reads every cached key and value row once per query head (a group's heads read
// the same kv row; L2 serves the repeats).
namespace lvt::ops::decode_attention::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

inline constexpr int max_head_dim = 256;
inline constexpr int per_lane = max_head_dim / 32;
inline constexpr int warps = 4;

template <class S>
__global__ void forward_kernel(S* out, const S* q, const S* k, const S* v, std::int64_t pos0,
                               int heads, int kv_heads, int D, float scale) {
  __shared__ float warp_m[warps], warp_l[warps];
  extern __shared__ float warp_acc[];  // [warps, D]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int h = blockIdx.x, g = h / (heads / kv_heads);
  const std::int64_t i = blockIdx.y, keys = pos0 + i + 1;
  float qr[per_lane], acc[per_lane];
  const S* qt = q + (i * heads + h) * D;
  for (int c = 0; c < per_lane; ++c) {
    const int d = lane + 32 * c;
    qr[c] = d < D ? to_float(qt[d]) : 0.0f;
    acc[c] = 0.0f;
  }
  float m = -INFINITY, l = 0;
  for (std::int64_t j = warp; j < keys; j += warps) {
    const std::int64_t row = (j * kv_heads + g) * D;
    float s = 0;
    for (int c = 0; c < per_lane; ++c) {
      const int d = lane + 32 * c;
      if (d < D) s += qr[c] * to_float(k[row + d]);
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), p = expf(s - m_new);  // corr 0 at the first key
    l = l * corr + p;
    for (int c = 0; c < per_lane; ++c) {
      const int d = lane + 32 * c;
      if (d < D) acc[c] = acc[c] * corr + p * to_float(v[row + d]);
    }
    m = m_new;
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  for (int c = 0; c < per_lane; ++c) {
    const int d = lane + 32 * c;
    if (d < D) warp_acc[warp * D + d] = acc[c];
  }
  __syncthreads();
  // Warp 0 always saw key 0, so M is finite; a warp that saw no key (l = 0) adds nothing.
  float M = -INFINITY;
  for (int w = 0; w < warps; ++w) M = fmaxf(M, warp_m[w]);
  float L = 0, f[warps];
  for (int w = 0; w < warps; ++w) {
    f[w] = warp_l[w] > 0 ? expf(warp_m[w] - M) : 0.0f;
    L += warp_l[w] * f[w];
  }
  S* o = out + (i * heads + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float x = 0;
    for (int w = 0; w < warps; ++w) x += warp_acc[w * D + d] * f[w];
    o[d] = from_float<S>(x / L);
  }
}

// The host function's contract (no scratch: the softmax is online); head_dim <= 256.
template <class S>
void forward(S* out, const S* q, const S* k, const S* v, std::int64_t rows, std::int64_t pos0,
             std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, cudaStream_t stream) {
  detail::check(rows, pos0, heads, kv_heads, head_dim);
  require(head_dim <= max_head_dim, "decode_attention",
          "head_dim must be at most 256 (the CUDA kernel's 8 values per lane)", head_dim);
  require(rows <= 65535 && heads <= 65535, "decode_attention",
          "rows and heads must be at most 65535 (grid dimensions)", rows > heads ? rows : heads);
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  const dim3 grid{unsigned(heads), unsigned(rows)};
  forward_kernel<S><<<grid, 32 * warps, std::size_t(warps * head_dim) * sizeof(float), stream>>>(
      out, q, k, v, pos0, int(heads), int(kv_heads), int(head_dim), scale);
  LVT_CUDA_LAUNCHED("decode_attention::cuda::forward_kernel");
}

}  // namespace lvt::ops::decode_attention::cuda
#endif
