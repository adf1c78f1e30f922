#pragma once
// The three products every linear layer needs, on row-major raw pointers with leading
// dimensions, host reference only (the CUDA backend uses cuBLASLt):
//   forward     y[n, m]  (+)= alpha * sum_k x[n, k] W[m, k] + bias[m]   (x W^T, W as nn.Linear [out, in])
//   input grad  dx[n, k]  += alpha * sum_m dy[n, m] W[m, k]             (dy W)
//   weight grad dW[m, k]  += alpha * sum_n dy[n, m] x[n, k]             (dy^T x)
// Plain loops as llm.c's CPU matmul, blocked for the cache: a block of `row_block` input rows
// stays in L1/L2 while each weight row is read once per block (so the lm-head's 32000-row weight
// streams once per block, not once per token); the input gradient shares each weight load among
// four rows. The dot product keeps 8 partial sums so the compiler vectorizes it without
// -ffast-math (measured: a four-row dot variant does not vectorize with GCC 12 and runs 4x slower).
#include <cstdint>

// Rows spread over threads when built with -fopenmp (as llm.c); serial otherwise.
#if defined(_OPENMP)
#define LVT_OMP_FOR _Pragma("omp parallel for")
#else
#define LVT_OMP_FOR
#endif

namespace lvt::ops::matmul {

inline constexpr std::int64_t row_block = 32;

template <class T>
inline T dot(const T* a, const T* b, std::int64_t n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const std::int64_t n8 = n - n % 8;
  for (std::int64_t k = 0; k < n8; k += 8)
    for (int u = 0; u < 8; u++) acc[u] += a[k + u] * b[k + u];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (std::int64_t k = n8; k < n; k++) s += a[k] * b[k];
  return s;
}

// y[n, m] = (accumulate ? y[n, m] : 0) + alpha * (x[n, :] . W[m, :]) + (bias ? bias[m] : 0)
template <class T>
void forward(T* y, std::int64_t ldy, const T* x, std::int64_t ldx, const T* W, std::int64_t ldw,
             const T* bias, std::int64_t rows, std::int64_t out, std::int64_t in, T alpha,
             bool accumulate) {
  auto store = [&](std::int64_t n, std::int64_t m, T d) {
    T v = alpha * d;
    if (bias) v += bias[m];
    T& yv = y[n * ldy + m];
    yv = accumulate ? yv + v : v;
  };
  LVT_OMP_FOR
  for (std::int64_t n0 = 0; n0 < rows; n0 += row_block) {
    const std::int64_t n1 = n0 + row_block < rows ? n0 + row_block : rows;
    for (std::int64_t m = 0; m < out; m++) {
      const T* w = W + m * ldw;
      for (std::int64_t n = n0; n < n1; n++) store(n, m, dot(x + n * ldx, w, in));
    }
  }
}

// dx[n, k] += alpha * sum_m dy[n, m] W[m, k]
template <class T>
void backward_input(T* dx, std::int64_t lddx, const T* dy, std::int64_t lddy, const T* W,
                    std::int64_t ldw, std::int64_t rows, std::int64_t out, std::int64_t in,
                    T alpha) {
  LVT_OMP_FOR
  for (std::int64_t n0 = 0; n0 < rows; n0 += row_block) {
    const std::int64_t n1 = n0 + row_block < rows ? n0 + row_block : rows;
    for (std::int64_t m = 0; m < out; m++) {
      const T* w = W + m * ldw;
      std::int64_t n = n0;
      for (; n + 4 <= n1; n += 4) {
        const T a0 = alpha * dy[n * lddy + m], a1 = alpha * dy[(n + 1) * lddy + m],
                a2 = alpha * dy[(n + 2) * lddy + m], a3 = alpha * dy[(n + 3) * lddy + m];
        T* d0 = dx + n * lddx;
        T* d1 = d0 + lddx;
        T* d2 = d1 + lddx;
        T* d3 = d2 + lddx;
        for (std::int64_t k = 0; k < in; k++) {
          const T wk = w[k];
          d0[k] += a0 * wk;
          d1[k] += a1 * wk;
          d2[k] += a2 * wk;
          d3[k] += a3 * wk;
        }
      }
      for (; n < n1; n++) {
        const T a = alpha * dy[n * lddy + m];
        T* d = dx + n * lddx;
        for (std::int64_t k = 0; k < in; k++) d[k] += a * w[k];
      }
    }
  }
}

// dW[m, k] += alpha * sum_n dy[n, m] x[n, k]
template <class T>
void backward_weight(T* dW, std::int64_t lddw, const T* dy, std::int64_t lddy, const T* x,
                     std::int64_t ldx, std::int64_t rows, std::int64_t out, std::int64_t in,
                     T alpha) {
  LVT_OMP_FOR
  for (std::int64_t m = 0; m < out; m++) {
    T* d = dW + m * lddw;
    for (std::int64_t n = 0; n < rows; n++) {
      const T a = alpha * dy[n * lddy + m];
      const T* xr = x + n * ldx;
      for (std::int64_t k = 0; k < in; k++) d[k] += a * xr[k];
    }
  }
}

}  // namespace lvt::ops::matmul
