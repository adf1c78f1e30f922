#pragma once
// The three products every linear layer needs, on row-major raw pointers with leading
// dimensions, host reference only (the CUDA backend uses cuBLASLt):
//   forward     y[n, m]  (+)= bias[m] + sum_k x[n, k] W[m, k]      (x W^T, W as nn.Linear [out, in])
//   input grad  dx[n, k]  += sum_m dy[n, m] W[m, k]                 (dy W)
//   weight grad dW[m, k]  += sum_n dy[n, m] x[n, k]                 (dy^T x)
// Plain loops as llm.c's CPU matmul: the dot product keeps 8 partial sums so the compiler can
// vectorize it without -ffast-math; the two gradients are contiguous axpys.
#include <cstdint>

// Rows spread over threads when built with -fopenmp (as llm.c); serial otherwise.
#if defined(_OPENMP)
#define LVT_OMP_FOR _Pragma("omp parallel for")
#else
#define LVT_OMP_FOR
#endif

namespace lvt::ops::matmul {

template <class T>
inline T dot(const T* a, const T* b, std::int64_t n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int u = 0; u < 8; u++) acc[u] += a[k + u] * b[k + u];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; k < n; k++) s += a[k] * b[k];
  return s;
}

// y[n, m] = (accumulate ? y[n, m] : 0) + alpha * (x[n, :] . W[m, :]) + (bias ? bias[m] : 0)
template <class T>
void forward(T* y, std::int64_t ldy, const T* x, std::int64_t ldx, const T* W, std::int64_t ldw,
             const T* bias, std::int64_t rows, std::int64_t out, std::int64_t in, T alpha,
             bool accumulate) {
  LVT_OMP_FOR
  for (std::int64_t n = 0; n < rows; n++) {
    const T* xr = x + n * ldx;
    T* yr = y + n * ldy;
    for (std::int64_t m = 0; m < out; m++) {
      T v = alpha * dot(xr, W + m * ldw, in);
      if (bias) v += bias[m];
      yr[m] = accumulate ? yr[m] + v : v;
    }
  }
}

// dx[n, k] += alpha * sum_m dy[n, m] W[m, k]
template <class T>
void backward_input(T* dx, std::int64_t lddx, const T* dy, std::int64_t lddy, const T* W,
                    std::int64_t ldw, std::int64_t rows, std::int64_t out, std::int64_t in,
                    T alpha) {
  LVT_OMP_FOR
  for (std::int64_t n = 0; n < rows; n++) {
    T* d = dx + n * lddx;
    const T* g = dy + n * lddy;
    for (std::int64_t m = 0; m < out; m++) {
      const T a = alpha * g[m];
      const T* w = W + m * ldw;
      for (std::int64_t k = 0; k < in; k++) d[k] += a * w[k];
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
