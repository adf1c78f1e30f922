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

#include "lvt/ops/common.hpp"
#include "lvt/ops/matmul.hpp"

namespace lvt::ops::cross_entropy {

struct Result {
  double loss_sum = 0;      // sum of per-token losses over kept positions
  std::int64_t count = 0;   // kept positions (labels != ignore_index)
  double mean() const { return count > 0 ? loss_sum / double(count) : 0.0; }
};

// Scratch: one chunk of logits [chunk_tokens, vocab] and of hidden rows [chunk_tokens, dim].
constexpr std::int64_t scratch_elems(std::int64_t chunk_tokens, std::int64_t vocab,
                                     std::int64_t dim) {
  return chunk_tokens * (vocab + dim);
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
  T m = logits[0];
  for (std::int64_t v = 1; v < vocab; v++) m = logits[v] > m ? logits[v] : m;
  double sum = 0;
  // exp in T (expf on the host backend: 32000 per token), sums and the loss in double
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
  if (dhidden)
    for (std::int64_t i = 0; i < n_tokens * dim; i++) dhidden[i] = 0;
  T* logits = scratch;                   // [chunk_tokens, vocab]
  T* rows = scratch + chunk_tokens * vocab;  // [chunk_tokens, dim]: hidden rows, then their grads
  for (std::int64_t n0 = 0; n0 < n_tokens;) {
    // Gather up to chunk_tokens kept positions (ignored ones cost nothing).
    std::int64_t kept = 0, n = n0;
    for (; n < n_tokens && kept < chunk_tokens; n++) {
      if (labels[n] == ignore_index) continue;
      for (std::int64_t i = 0; i < dim; i++) rows[kept * dim + i] = hidden[n * dim + i];
      kept++;
    }
    matmul::forward(logits, vocab, rows, dim, W, dim, (const T*)nullptr, kept, vocab, dim, T(1),
                    false);
    std::int64_t r = 0;
    for (std::int64_t p = n0; p < n; p++) {
      if (labels[p] == ignore_index) continue;
      res.loss_sum += row_loss_and_grad(logits + r * vocab, vocab, labels[p], scale,
                                        dhidden != nullptr);
      r++;
    }
    if (dhidden) {  // d rows = dlogits W, scattered back to the kept positions
      for (std::int64_t i = 0; i < kept * dim; i++) rows[i] = 0;
      matmul::backward_input(rows, dim, logits, vocab, W, dim, kept, vocab, dim, T(1));
      r = 0;
      for (std::int64_t p = n0; p < n; p++) {
        if (labels[p] == ignore_index) continue;
        for (std::int64_t i = 0; i < dim; i++) dhidden[p * dim + i] = rows[r * dim + i];
        r++;
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
