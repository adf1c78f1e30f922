#pragma once
// The lm-head and the cross-entropy loss fused and chunked over tokens, so the [tokens, vocab]
// logits never exist whole: one chunk of `chunk_tokens` rows of logits lives in scratch, turns
// into its own gradient in place, and is folded into d hidden before the next chunk.
//
//   hidden [N, C] (after the final norm), W = lm_head.weight [V, C] (frozen; the embedding table
//   when tied), labels [N] already shifted (labels[n] is the token that follows position n),
//   ignore_index (-100) skips a position.
//   loss = sum over kept n of (logsumexp(logits[n]) - logits[n, labels[n]]), count = kept n;
//   the mean loss is loss / count, as torch.nn.functional.cross_entropy(reduction='mean').
//   dhidden (if not null) is WRITTEN (=, it starts the backward) with grad_scale * d mean / d hidden:
//     dlogits[n, v] = (softmax(logits[n])[v] - [v == labels[n]]) / count,  dhidden = dlogits W.
//   Positions with ignored labels get dhidden = 0 and no logits are computed for them.
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "lvt/ops/common.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/parallel.hpp"
#include "lvt/ops/vmath.hpp"

namespace lvt::ops::cross_entropy {

struct Result {
  double loss_sum = 0;      // sum of per-token losses over kept positions
  std::int64_t count = 0;   // kept positions (labels != ignore_index)
  double mean() const { return count > 0 ? loss_sum / double(count) : 0.0; }
};

// Scratch: one chunk of logits [chunk_tokens, vocab] and of hidden rows [chunk_tokens, dim],
// then per row of the chunk its position and its loss in double (the losses are summed in row
// order, whichever thread computed them).
constexpr std::int64_t scratch_elems(std::int64_t chunk_tokens, std::int64_t vocab,
                                     std::int64_t dim) {
  return chunk_tokens * (vocab + dim) + 4 * (chunk_tokens + 1);
}

// Number of labels that count, after checking each is ignore_index or in [0, vocab).
inline std::int64_t count_labels(const std::int32_t* labels, std::int64_t n_tokens,
                                 std::int64_t vocab) {
  std::int64_t count = 0;
  for (std::int64_t n = 0; n < n_tokens; n++) {
    const std::int32_t l = labels[n];
    if (l == ignore_index) continue;
    if (l < 0 || l >= vocab)
      throw Error("cross_entropy: label " + std::to_string(l) + " at position " +
                  std::to_string(n) + " is outside the vocabulary (vocab_size " +
                  std::to_string(vocab) + "); use -100 to ignore a position");
    count++;
  }
  return count;
}

// One row: turns logits into d loss_row / d logits in place, returns the row's loss.
template <class T>
inline double row_loss_and_grad(T* logits, std::int64_t vocab, std::int32_t label, T scale,
                                bool want_grad) {
  if constexpr (std::is_same_v<T, float>) {  // the host backend: vectorized exp (ops/vmath.hpp)
    const float m = vmath::max_of(logits, vocab), at_label = logits[label];
    const double sum = vmath::exp_shift_sum(logits, vocab, m);  // logits now exp(l - m)
    const double lse = double(m) + std::log(sum);
    if (want_grad) {
      vmath::scale(logits, vocab, float(double(scale) / sum));  // softmax * scale
      logits[label] -= scale;
    }
    return lse - double(at_label);
  } else {
    T m = logits[0];
    for (std::int64_t v = 1; v < vocab; v++) m = logits[v] > m ? logits[v] : m;
    double sum = 0;
    // exp in T (double: the gradient checks), sums and the loss in double
    for (std::int64_t v = 0; v < vocab; v++) sum += double(std::exp(logits[v] - m));
    const double lse = double(m) + std::log(sum);
    const double loss = lse - double(logits[label]);
    if (want_grad) {
      const T lse_t = T(lse);
      for (std::int64_t v = 0; v < vocab; v++)
        logits[v] = std::exp(logits[v] - lse_t) * scale;
      logits[label] -= scale;
    }
    return loss;
  }
}

// dhidden may be null (evaluation: loss only). scratch: scratch_elems(chunk_tokens, vocab, dim).
template <class T>
Result forward_backward(T* dhidden, T* scratch, const T* hidden, const T* W,
                        const std::int32_t* labels, std::int64_t n_tokens, std::int64_t dim,
                        std::int64_t vocab, std::int64_t chunk_tokens, double grad_scale = 1.0) {
  require(n_tokens >= 0, "cross_entropy", "the token count must be non-negative", n_tokens);
  require(dim > 0, "cross_entropy", "hidden size must be positive", dim);
  require(vocab > 0, "cross_entropy", "vocab_size must be positive", vocab);
  require(chunk_tokens > 0, "cross_entropy", "chunk_tokens must be positive", chunk_tokens);
  require(scratch != nullptr, "cross_entropy", "scratch (scratch_elems(chunk_tokens, vocab, dim)) is null",
          chunk_tokens);
  Result res;
  res.count = count_labels(labels, n_tokens, vocab);
  const T scale = T(res.count > 0 ? grad_scale / double(res.count) : 0.0);
  if (dhidden) {
    LVT_PARALLEL_FOR_IF(n_tokens * dim >= parallel::min_elems)
    for (std::int64_t i = 0; i < n_tokens * dim; i++) dhidden[i] = 0;
  }
  T* logits = scratch;                   // [chunk_tokens, vocab]
  T* rows = scratch + chunk_tokens * vocab;  // [chunk_tokens, dim]: hidden rows, then their grads
  double* row_loss = reinterpret_cast<double*>(  // [chunk_tokens], 8-byte aligned
      (reinterpret_cast<std::uintptr_t>(rows + chunk_tokens * dim) + 7) & ~std::uintptr_t(7));
  std::int64_t* row_of = reinterpret_cast<std::int64_t*>(row_loss + chunk_tokens);  // positions
  for (std::int64_t n0 = 0; n0 < n_tokens;) {
    // Gather up to chunk_tokens kept positions (ignored ones cost nothing).
    std::int64_t kept = 0, n = n0;
    for (; n < n_tokens && kept < chunk_tokens; n++)
      if (labels[n] != ignore_index) row_of[kept++] = n;
    // No ignored label in the chunk: its hidden rows and their gradients are used in place.
    const bool dense = kept == n - n0;
    if (!dense) {
      LVT_PARALLEL_FOR_IF(kept * dim >= parallel::min_elems)
      for (std::int64_t r = 0; r < kept; r++)
        for (std::int64_t i = 0; i < dim; i++) rows[r * dim + i] = hidden[row_of[r] * dim + i];
    }
    matmul::forward(logits, vocab, dense ? hidden + n0 * dim : (const T*)rows, dim, W, dim,
                    (const T*)nullptr, kept, vocab, dim, T(1), false);
    LVT_PARALLEL_FOR_IF(kept * vocab >= parallel::min_elems)
    for (std::int64_t r = 0; r < kept; r++)
      row_loss[r] = row_loss_and_grad(logits + r * vocab, vocab, labels[row_of[r]], scale,
                                      dhidden != nullptr);
    for (std::int64_t r = 0; r < kept; r++) res.loss_sum += row_loss[r];
    if (dhidden) {  // d rows = dlogits W, scattered back to the kept positions
      matmul::gemm(false, false, kept, dim, vocab, T(1), (const T*)logits, vocab, W, dim, T(0),
                   dense ? dhidden + n0 * dim : rows, dim);
      if (!dense) {
        LVT_PARALLEL_FOR_IF(kept * dim >= parallel::min_elems)
        for (std::int64_t r = 0; r < kept; r++) {
          const std::int64_t p = row_of[r];
          for (std::int64_t i = 0; i < dim; i++) dhidden[p * dim + i] = rows[r * dim + i];
        }
      }
    }
    n0 = n;
  }
  return res;
}

// Loss only (evaluation).
template <class T>
Result forward(T* scratch, const T* hidden, const T* W, const std::int32_t* labels,
               std::int64_t n_tokens, std::int64_t dim, std::int64_t vocab,
               std::int64_t chunk_tokens) {
  return forward_backward<T>(nullptr, scratch, hidden, W, labels, n_tokens, dim, vocab,
                             chunk_tokens);
}

}  // namespace lvt::ops::cross_entropy

#if LVT_CUDA
#include <cub/block/block_reduce.cuh>

#include <vector>

#include "lvt/ops/cuda_common.hpp"
#include "lvt/ops/matmul.hpp"

// ---- CUDA: the same fused, chunked loss: per chunk of tokens, fp32 logits by cuBLASLt, one
// block per row for max / sum / loss / gradient (CUB reductions), the gradient rounded to S and
// multiplied back by the lm head into d hidden. ----------------------------------------------
namespace lvt::ops::cross_entropy::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

// Device scratch: fp32 logits and S gradients of one chunk.
template <class S>
constexpr std::int64_t scratch_bytes(std::int64_t chunk_tokens, std::int64_t vocab) {
  return chunk_tokens * vocab * (4 + std::int64_t(sizeof(S)));
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// One block per row. The gradient scale is `scale`, or *device_scale when that is not null (a
// graph reads it at replay). A label outside [0, vocab) cannot throw here: its row's loss and
// gradient are NaN, so the loss and the gradient norm show it, and nothing is read out of bounds.
template <class S>
__global__ void rows_kernel(S* dlogits, float* row_loss, const float* logits,
                            const std::int32_t* labels, std::int64_t vocab, float scale,
                            const float* device_scale) {
  using Reduce = cub::BlockReduce<float, ops::cuda::threads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float shared_max, shared_lse;
  const std::int64_t r = blockIdx.x;
  const float* lr = logits + r * vocab;
  S* dr = dlogits + r * vocab;
  const std::int32_t label = labels[r];
  if (label == ignore_index || label < 0 || label >= vocab) {
    const float fill = label == ignore_index ? 0.0f : NAN;
    for (std::int64_t v = threadIdx.x; v < vocab; v += blockDim.x) dr[v] = from_float<S>(fill);
    if (threadIdx.x == 0) row_loss[r] = fill;
    return;
  }
  if (device_scale) scale = *device_scale;
  float m = -INFINITY;
  for (std::int64_t v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, lr[v]);
  m = Reduce(tmp).Reduce(m, MaxOp{});
  if (threadIdx.x == 0) shared_max = m;
  __syncthreads();
  m = shared_max;
  float sum = 0;
  for (std::int64_t v = threadIdx.x; v < vocab; v += blockDim.x) sum += expf(lr[v] - m);
  __syncthreads();  // tmp is reused
  sum = Reduce(tmp).Sum(sum);
  if (threadIdx.x == 0) {
    shared_lse = m + logf(sum);
    row_loss[r] = shared_lse - lr[label];
  }
  __syncthreads();
  const float lse = shared_lse;
  for (std::int64_t v = threadIdx.x; v < vocab; v += blockDim.x)
    dr[v] = from_float<S>((expf(lr[v] - lse) - (v == label ? 1.0f : 0.0f)) * scale);
}

// As the host forward_backward: labels (device) already shifted, -100 ignored; `count` is the
// number of kept labels (the caller has the labels on the host); dhidden (may be null) written.
// Returns the loss summed over kept positions (synchronizes `stream` to read it).
template <class S>
Result forward_backward(S* dhidden, void* scratch, float* row_loss, const S* hidden, const S* W,
                        const std::int32_t* labels, std::int64_t n_tokens, std::int64_t dim,
                        std::int64_t vocab, std::int64_t chunk_tokens, std::int64_t count,
                        double grad_scale, matmul::cuda::Gemm& gemm, cudaStream_t stream) {
  require(chunk_tokens > 0, "cross_entropy", "chunk_tokens must be positive", chunk_tokens);
  auto* logits = static_cast<float*>(scratch);
  auto* dlogits = reinterpret_cast<S*>(logits + chunk_tokens * vocab);
  const float scale = float(count > 0 ? grad_scale / double(count) : 0.0);
  for (std::int64_t r0 = 0; r0 < n_tokens; r0 += chunk_tokens) {
    const std::int64_t c = n_tokens - r0 < chunk_tokens ? n_tokens - r0 : chunk_tokens;
    gemm.run<S, float>(logits, hidden + r0 * dim, W, c, vocab, dim, false, true, 1.0f, 0.0f, stream);
    rows_kernel<S><<<unsigned(c), ops::cuda::threads, 0, stream>>>(dlogits, row_loss + r0, logits,
                                                                   labels + r0, vocab, scale,
                                                                   nullptr);
    LVT_CUDA_LAUNCHED("cross_entropy::cuda::rows_kernel");
    if (dhidden)
      gemm.run<S>(dhidden + r0 * dim, dlogits, W, c, dim, vocab, false, false, 1.0f, 0.0f, stream);
  }
  std::vector<float> losses(static_cast<std::size_t>(n_tokens));
  LVT_CUDA_CHECK(cudaMemcpyAsync(losses.data(), row_loss, std::size_t(n_tokens) * 4,
                                 cudaMemcpyDeviceToHost, stream));
  LVT_CUDA_CHECK(cudaStreamSynchronize(stream));
  Result res;
  res.count = count;
  for (float l : losses) res.loss_sum += double(l);
  return res;
}

// One block: *loss_sum = the row losses of kept rows summed in double in a fixed order (CUB's
// tree over a fixed block), *kept = the number of labels != ignore_index. A template, so every
// .cu including this header shares one definition.
template <int BlockThreads>
__global__ void sum_rows_kernel(const float* row_loss, const std::int32_t* labels,
                                std::int64_t n_tokens, float* loss_sum, float* kept) {
  using Reduce = cub::BlockReduce<double, BlockThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  double sum = 0, count = 0;
  for (std::int64_t r = threadIdx.x; r < n_tokens; r += blockDim.x)
    if (labels[r] != ignore_index) {
      sum += double(row_loss[r]);
      count += 1;
    }
  sum = Reduce(tmp).Sum(sum);
  __syncthreads();  // tmp is reused
  count = Reduce(tmp).Sum(count);
  if (threadIdx.x == 0) {
    *loss_sum = float(sum);
    *kept = float(count);
  }
}

// The same fused loss for a captured CUDA graph: nothing synchronizes or copies to the host.
// grad_scale (device) is the d loss multiplier already divided by the kept-label count (the
// host knows the labels when it fills the batch); loss_sum and kept (device) receive the summed
// loss over kept rows and their count, for the caller to read when it wants to.
template <class S>
void forward_backward_device(S* dhidden, void* scratch, float* row_loss, const S* hidden,
                             const S* W, const std::int32_t* labels, std::int64_t n_tokens,
                             std::int64_t dim, std::int64_t vocab, std::int64_t chunk_tokens,
                             const float* grad_scale, float* loss_sum, float* kept,
                             matmul::cuda::Gemm& gemm, cudaStream_t stream) {
  require(n_tokens >= 0, "cross_entropy", "the token count must be non-negative", n_tokens);
  require(dim > 0, "cross_entropy", "hidden size must be positive", dim);
  require(vocab > 0, "cross_entropy", "vocab_size must be positive", vocab);
  require(chunk_tokens > 0, "cross_entropy", "chunk_tokens must be positive", chunk_tokens);
  require(scratch != nullptr && row_loss != nullptr, "cross_entropy",
          "scratch (scratch_bytes(chunk_tokens, vocab)) or row_loss (n_tokens floats) is null",
          n_tokens);
  require(grad_scale != nullptr && loss_sum != nullptr && kept != nullptr, "cross_entropy",
          "grad_scale, loss_sum and kept must be device pointers", n_tokens);
  auto* logits = static_cast<float*>(scratch);
  auto* dlogits = reinterpret_cast<S*>(logits + chunk_tokens * vocab);
  for (std::int64_t r0 = 0; r0 < n_tokens; r0 += chunk_tokens) {
    const std::int64_t c = n_tokens - r0 < chunk_tokens ? n_tokens - r0 : chunk_tokens;
    gemm.run<S, float>(logits, hidden + r0 * dim, W, c, vocab, dim, false, true, 1.0f, 0.0f, stream);
    rows_kernel<S><<<unsigned(c), ops::cuda::threads, 0, stream>>>(dlogits, row_loss + r0, logits,
                                                                   labels + r0, vocab, 0.0f,
                                                                   grad_scale);
    LVT_CUDA_LAUNCHED("cross_entropy::cuda::rows_kernel");
    if (dhidden)
      gemm.run<S>(dhidden + r0 * dim, dlogits, W, c, dim, vocab, false, false, 1.0f, 0.0f, stream);
  }
  sum_rows_kernel<ops::cuda::threads><<<1, ops::cuda::threads, 0, stream>>>(row_loss, labels, n_tokens, loss_sum, kept);
  LVT_CUDA_LAUNCHED("cross_entropy::cuda::sum_rows_kernel");
}
}  // namespace lvt::ops::cross_entropy::cuda
#endif

