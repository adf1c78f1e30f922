#pragma once
// AdamW exactly as torch.optim.AdamW (amsgrad=False, maximize=False), one tensor at a time:
//   step += 1
//   p *= 1 - lr * weight_decay                  (decoupled weight decay, before the update)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// Parameters, gradients and both states are T (fp32 on the host backend: LoRA masters and
// optimizer states are always fp32, whatever the compute precision).
#include <cmath>
#include <cstdint>
#include <string>

#include "lvt/ops/common.hpp"

namespace lvt::ops::adamw {

struct Hyper {
  double lr = 1e-3;  // torch's defaults
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// The per-step scalars, computed once per step in double as torch computes them on the host.
struct StepScalars {
  double decay;       // 1 - lr * weight_decay
  double step_size;   // lr / bias_correction1
  double bc2_sqrt;    // sqrt(bias_correction2)
};

inline StepScalars scalars(const Hyper& h, std::int64_t step) {
  require(step >= 1, "adamw", "step must be >= 1 (torch counts from 1 after incrementing)", step);
  if (!(h.lr >= 0) || !(h.eps >= 0) || !(h.weight_decay >= 0) || !(h.beta1 >= 0 && h.beta1 < 1) ||
      !(h.beta2 >= 0 && h.beta2 < 1))
    throw Error("adamw: invalid hyper-parameters (lr " + std::to_string(h.lr) + ", betas (" +
                std::to_string(h.beta1) + ", " + std::to_string(h.beta2) + "), eps " +
                std::to_string(h.eps) + ", weight_decay " + std::to_string(h.weight_decay) +
                "): lr, eps, weight_decay >= 0 and betas in [0, 1)");
  const double bc1 = 1 - std::pow(h.beta1, double(step));
  const double bc2 = 1 - std::pow(h.beta2, double(step));
  return {1 - h.lr * h.weight_decay, h.lr / bc1, std::sqrt(bc2)};
}

// One element, shared with the CUDA kernel.
template <class T>
LVT_HD inline void update(T& p, T& m, T& v, T g, T beta1, T beta2, T eps, T decay, T step_size,
                          T bc2_sqrt) {
  using std::sqrt;
  p *= decay;
  m += (g - m) * (T(1) - beta1);  // torch: exp_avg.lerp_(grad, 1 - beta1)
  v = v * beta2 + (T(1) - beta2) * g * g;
  p -= step_size * m / (sqrt(v) / bc2_sqrt + eps);
}

// p, m, v updated in place; `step` is the 1-based step count after this update.
template <class T>
void step(T* p, T* m, T* v, const T* g, std::int64_t n, const Hyper& h, std::int64_t step) {
  require(n >= 0, "adamw", "the element count must be non-negative", n);
  const StepScalars s = scalars(h, step);
  for (std::int64_t i = 0; i < n; i++)
    update(p[i], m[i], v[i], g[i], T(h.beta1), T(h.beta2), T(h.eps), T(s.decay), T(s.step_size),
           T(s.bc2_sqrt));
}

}  // namespace lvt::ops::adamw

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: the fused AdamW over the flat fp32 LoRA buffer, the host's per-element update ----
namespace lvt::ops::adamw::cuda {
__global__ void step_kernel(float* p, float* m, float* v, const float* g, std::int64_t n,
                                   float beta1, float beta2, float eps, float decay,
                                   float step_size, float bc2_sqrt) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    update(p[i], m[i], v[i], g[i], beta1, beta2, eps, decay, step_size, bc2_sqrt);
}
inline void step(float* p, float* m, float* v, const float* g, std::int64_t n, const Hyper& h,
                 std::int64_t step_count, cudaStream_t stream) {
  const StepScalars s = scalars(h, step_count);
  if (n == 0) return;
  step_kernel<<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(
      p, m, v, g, n, float(h.beta1), float(h.beta2), float(h.eps), float(s.decay),
      float(s.step_size), float(s.bc2_sqrt));
  LVT_CUDA_LAUNCHED("adamw::cuda::step_kernel");
}
}  // namespace lvt::ops::adamw::cuda
#endif
