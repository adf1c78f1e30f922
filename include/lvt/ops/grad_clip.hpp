#pragma once
// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_ (norm_type 2,
// error_if_nonfinite=False, foreach off):
//   total_norm = sqrt(sum over every gradient tensor of sum g^2)
//   coef = min(max_norm / (total_norm + 1e-6), 1);  every g *= coef
// and it returns total_norm (NaN or Inf when a gradient is not finite, for the caller to stop on).
// The sum of squares comes in pieces (`sum_squares` per tensor, added by the caller) so
// gradients spread over devices or pinned memory can be reduced where they live.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "lvt/ops/common.hpp"

namespace lvt::ops::grad_clip {

template <class T>
struct Grad {
  T* data;
  std::int64_t n;
};

template <class T>
double sum_squares(const T* g, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; i++) s += double(g[i]) * double(g[i]);
  return s;
}

inline double clip_coef(double total_norm, double max_norm) {
  const double c = max_norm / (total_norm + 1e-6);
  return c > 1.0 ? 1.0 : c;  // a NaN norm gives a NaN coef, as torch's clamp(max=1) does
}

template <class T>
void scale(T* g, std::int64_t n, double coef) {
  const T c = T(coef);
  for (std::int64_t i = 0; i < n; i++) g[i] *= c;
}

// The whole clip over a list of gradient tensors; returns the total norm before clipping.
template <class T>
double clip(std::span<const Grad<T>> grads, double max_norm) {
  if (!(max_norm > 0))
    throw Error("grad_clip: max_norm must be positive (got " + std::to_string(max_norm) + ")");
  double ss = 0;
  for (const Grad<T>& g : grads) ss += sum_squares(g.data, g.n);
  const double total = std::sqrt(ss);
  const double coef = clip_coef(total, max_norm);
  for (const Grad<T>& g : grads) scale(g.data, g.n, coef);
  return total;
}

}  // namespace lvt::ops::grad_clip
