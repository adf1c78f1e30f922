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

template <class T>
void forward(T* out, T* scratch, const T* q, const T* k, const T* v, std::int64_t rows,
             std::int64_t pos0, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
             int threads = 1) {
  require(scratch != nullptr, "decode_attention",
          "scratch (scratch_elems(context) = context elements) is null", rows);
  require(rows > 0, "decode_attention", "rows must be positive", rows);
  require(pos0 >= 0, "decode_attention", "pos0 must be non-negative", pos0);
  require(head_dim > 0, "decode_attention", "head_dim must be positive", head_dim);
  require(kv_heads > 0 && heads % kv_heads == 0, "decode_attention",
          "heads must be a multiple of kv_heads (grouped-query attention)", kv_heads);
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
