#pragma once
// RMSNorm as Hugging Face's LlamaRMSNorm:
//   rstd[n] = 1 / sqrt(mean_i x[n,i]^2 + eps),   out[n,i] = weight[i] * (x[n,i] * rstd[n])
// The sum of squares is accumulated in double on the host (the reference must not be the noisier
// side of a host-vs-CUDA comparison); everything else is in T (fp32 on the host backend).
// forward saves rstd [N] for backward. weight is frozen: backward gives dx only (and dweight if
// the caller passes a buffer, for completeness and the gradient check).
#include <cmath>
#include <cstdint>

#include "lvt/ops/common.hpp"

namespace lvt::ops::rmsnorm {

template <class T>
void forward(T* out, T* rstd, const T* x, const T* weight, std::int64_t rows, std::int64_t dim,
             double eps) {
  require(dim > 0, "rmsnorm", "dim must be positive", dim);
  require(eps > 0, "rmsnorm", "eps (rms_norm_eps) must be positive", 0);
  for (std::int64_t n = 0; n < rows; n++) {
    const T* xr = x + n * dim;
    double ss = 0;
    for (std::int64_t i = 0; i < dim; i++) ss += double(xr[i]) * double(xr[i]);
    const T r = T(1.0 / std::sqrt(ss / double(dim) + eps));
    T* o = out + n * dim;
    for (std::int64_t i = 0; i < dim; i++) o[i] = weight[i] * (xr[i] * r);
    if (rstd) rstd[n] = r;
  }
}

// With xhat = x * r:  dx = r * (g - xhat * mean(g * xhat)),  g = dout * weight.
// dx += ...; dweight (optional, may be null) += sum_n dout * xhat.
template <class T>
void backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const T* rstd,
              std::int64_t rows, std::int64_t dim) {
  require(dim > 0, "rmsnorm", "dim must be positive", dim);
  for (std::int64_t n = 0; n < rows; n++) {
    const T* xr = x + n * dim;
    const T* dy = dout + n * dim;
    const T r = rstd[n];
    double dot = 0;  // sum_i dout * weight * xhat
    for (std::int64_t i = 0; i < dim; i++) dot += double(dy[i] * weight[i]) * double(xr[i] * r);
    const T mean_dot = T(dot / double(dim));
    T* d = dx + n * dim;
    for (std::int64_t i = 0; i < dim; i++) {
      const T xhat = xr[i] * r;
      d[i] += r * (dy[i] * weight[i] - xhat * mean_dot);
      if (dweight) dweight[i] += dy[i] * xhat;
    }
  }
}

}  // namespace lvt::ops::rmsnorm
