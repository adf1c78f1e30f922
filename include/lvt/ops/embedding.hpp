#pragma once
// Token embedding: a gather of rows of the (frozen) table. No backward: with LoRA the embedding
// is frozen and no gradient flows past it.
//   out[n, :] = table[tokens[n], :]        tokens [N], table [vocab, dim], out [N, dim]
#include <cstdint>
#include <string>

#include "lvt/ops/common.hpp"

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
    const T* row = table + std::int64_t(id) * dim;
    T* o = out + n * dim;
    for (std::int64_t i = 0; i < dim; i++) o[i] = row[i];
  }
}

}  // namespace lvt::ops::embedding
