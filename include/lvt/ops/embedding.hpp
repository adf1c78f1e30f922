#pragma once
// Token embedding: a gather of rows of the (frozen) table. No backward: with LoRA the embedding
// is frozen and no gradient flows past it.
//   out[n, :] = table[tokens[n], :]        tokens [N], table [vocab, dim], out [N, dim]
#include <cstdint>
#include <string>

#include "lvt/ops/common.hpp"
#include "lvt/ops/parallel.hpp"

namespace lvt::ops::embedding {

template <class T>
void forward(T* out, const std::int32_t* tokens, const T* table, std::int64_t n_tokens,
             std::int64_t vocab, std::int64_t dim) {
  require(n_tokens >= 0, "embedding", "the token count must be non-negative", n_tokens);
  require(vocab > 0 && dim > 0, "embedding", "vocab and dim must be positive", vocab > 0 ? dim : vocab);
  for (std::int64_t n = 0; n < n_tokens; n++) {
    const std::int32_t id = tokens[n];
    if (id < 0 || id >= vocab)
      throw Error("embedding: token id " + std::to_string(id) + " at position " +
                  std::to_string(n) + " is outside the vocabulary (vocab_size " +
                  std::to_string(vocab) + ")");
  }
  LVT_PARALLEL_FOR_IF(n_tokens * dim >= parallel::min_elems)
  for (std::int64_t n = 0; n < n_tokens; n++) {
    const std::int32_t id = tokens[n];
    const T* row = table + std::int64_t(id) * dim;
    T* o = out + n * dim;
    for (std::int64_t i = 0; i < dim; i++) o[i] = row[i];
  }
}

}  // namespace lvt::ops::embedding

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: rows gathered; token ids are checked on the host before the step (io/, backend) --
namespace lvt::ops::embedding::cuda {
template <class S>
__global__ void forward_kernel(S* out, const std::int32_t* tokens, const S* table, std::int64_t n_tokens,
                               std::int64_t dim) {
  const std::int64_t total = n_tokens * dim;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = table[std::int64_t(tokens[i / dim]) * dim + i % dim];
}
template <class S>
void forward(S* out, const std::int32_t* tokens, const S* table, std::int64_t n_tokens,
             std::int64_t dim, cudaStream_t stream) {
  if (n_tokens == 0) return;
  forward_kernel<S><<<ops::cuda::grid_for(n_tokens * dim), ops::cuda::threads, 0, stream>>>(
      out, tokens, table, n_tokens, dim);
  LVT_CUDA_LAUNCHED("embedding::cuda::forward_kernel");
}
}  // namespace lvt::ops::embedding::cuda
#endif
