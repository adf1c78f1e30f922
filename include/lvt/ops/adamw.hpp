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
#include "lvt/ops/parallel.hpp"

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

// The arithmetic of `scalars`, unchecked; the CUDA kernel that reads DeviceHyper runs it too.
LVT_HD inline StepScalars step_scalars(double lr, double beta1, double beta2, double weight_decay,
                                       std::int64_t step) {
  using std::pow;
  using std::sqrt;
  const double bc1 = 1 - pow(beta1, double(step));
  const double bc2 = 1 - pow(beta2, double(step));
  return {1 - lr * weight_decay, lr / bc1, sqrt(bc2)};
}

inline void check_hyper(const Hyper& h) {
  if (!(h.lr >= 0) || !(h.eps >= 0) || !(h.weight_decay >= 0) || !(h.beta1 >= 0 && h.beta1 < 1) ||
      !(h.beta2 >= 0 && h.beta2 < 1))
    throw Error("adamw: invalid hyper-parameters (lr " + std::to_string(h.lr) + ", betas (" +
                std::to_string(h.beta1) + ", " + std::to_string(h.beta2) + "), eps " +
                std::to_string(h.eps) + ", weight_decay " + std::to_string(h.weight_decay) +
                "): lr, eps, weight_decay >= 0 and betas in [0, 1)");
}

inline StepScalars scalars(const Hyper& h, std::int64_t step) {
  require(step >= 1, "adamw", "step must be >= 1 (torch counts from 1 after incrementing)", step);
  check_hyper(h);
  return step_scalars(h.lr, h.beta1, h.beta2, h.weight_decay, step);
}

// The hyper-parameters and step count as a CUDA graph reads them: a block in device memory the
// host rewrites between replays (the lr follows the schedule), so no kernel argument changes.
// `step` is the 1-based count of the update that reads it (advance_step increments it on the
// device, unless the step is skipped). Plain data, the same layout on host and device.
// Double, as the host's Hyper: the bias corrections come out bit-identical to the host's.
struct DeviceHyper {
  double lr, beta1, beta2, eps, weight_decay;
  std::int64_t step;
};
static_assert(sizeof(DeviceHyper) == 48, "DeviceHyper is copied to the device byte for byte");

// A checked DeviceHyper for `h` at `step` (0 before the first advance_step).
inline DeviceHyper device_hyper(const Hyper& h, std::int64_t step) {
  require(step >= 0, "adamw", "the device step count must be >= 0 (0 before the first update)",
          step);
  check_hyper(h);
  return {h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step};
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
  LVT_PARALLEL_FOR_IF(n >= parallel::min_elems)
  for (std::int64_t i = 0; i < n; i++)
    update(p[i], m[i], v[i], g[i], T(h.beta1), T(h.beta2), T(h.eps), T(s.decay), T(s.step_size),
           T(s.bc2_sqrt));
}

}  // namespace lvt::ops::adamw

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: the fused AdamW over the flat fp32 LoRA buffer, the host's per-element update ----
namespace lvt::ops::adamw::cuda {
// The kernels are templates (instantiated for float) so that every .cu including this header
// shares one definition: a plain __global__ function here would be defined once per file.
template <class T>
__global__ void step_kernel(T* p, T* m, T* v, const T* g, std::int64_t n, T beta1, T beta2, T eps,
                            T decay, T step_size, T bc2_sqrt) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    update(p[i], m[i], v[i], g[i], beta1, beta2, eps, decay, step_size, bc2_sqrt);
}
inline void step(float* p, float* m, float* v, const float* g, std::int64_t n, const Hyper& h,
                 std::int64_t step_count, cudaStream_t stream) {
  const StepScalars s = scalars(h, step_count);
  if (n == 0) return;
  step_kernel<float><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(
      p, m, v, g, n, float(h.beta1), float(h.beta2), float(h.eps), float(s.decay),
      float(s.step_size), float(s.bc2_sqrt));
  LVT_CUDA_LAUNCHED("adamw::cuda::step_kernel");
}

// The same update with the hyper-parameters and step read from device memory (graph replay).
// Thread 0 of each block computes the step scalars in double, as the host does, into shared.
// A non-zero *skip (the loss scaler's found_inf) leaves p, m, v untouched.
template <class T>
__global__ void step_device_kernel(T* p, T* m, T* v, const T* g, std::int64_t n,
                                   const DeviceHyper* h, const float* skip) {
  __shared__ T beta1, beta2, eps, decay, step_size, bc2_sqrt;
  __shared__ bool skipped;
  if (threadIdx.x == 0) {
    const DeviceHyper hp = *h;
    const StepScalars s = step_scalars(hp.lr, hp.beta1, hp.beta2, hp.weight_decay, hp.step);
    beta1 = T(hp.beta1);
    beta2 = T(hp.beta2);
    eps = T(hp.eps);
    decay = T(s.decay);
    step_size = T(s.step_size);
    bc2_sqrt = T(s.bc2_sqrt);
    skipped = skip != nullptr && *skip != 0.0f;
  }
  __syncthreads();
  if (skipped) return;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    update(p[i], m[i], v[i], g[i], beta1, beta2, eps, decay, step_size, bc2_sqrt);
}

// h: device DeviceHyper (filled by device_hyper on the host, step >= 1 by now); skip_if_nonzero:
// device float, may be null.
inline void step(float* p, float* m, float* v, const float* g, std::int64_t n,
                 const DeviceHyper* h, const float* skip_if_nonzero, cudaStream_t stream) {
  require(n >= 0, "adamw", "the element count must be non-negative", n);
  require(h != nullptr, "adamw", "the device hyper-parameter block is null", n);
  if (n == 0) return;
  step_device_kernel<float><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(
      p, m, v, g, n, h, skip_if_nonzero);
  LVT_CUDA_LAUNCHED("adamw::cuda::step_device_kernel");
}
inline void step(float* p, float* m, float* v, const float* g, std::int64_t n,
                 const DeviceHyper* h, cudaStream_t stream) {
  step(p, m, v, g, n, h, nullptr, stream);
}

template <class H>
__global__ void advance_step_kernel(H* h, const float* skip) {
  if (skip == nullptr || *skip == 0.0f) h->step += 1;
}

// torch's `step += 1` before the update, on the device: once per optimizer step, before the
// step calls that read h; a skipped step (non-zero *skip_if_nonzero) does not count, as torch
// does not call optimizer.step() when GradScaler finds an inf.
inline void advance_step(DeviceHyper* h, const float* skip_if_nonzero, cudaStream_t stream) {
  require(h != nullptr, "adamw", "the device hyper-parameter block is null", 0);
  advance_step_kernel<DeviceHyper><<<1, 1, 0, stream>>>(h, skip_if_nonzero);
  LVT_CUDA_LAUNCHED("adamw::cuda::advance_step_kernel");
}
}  // namespace lvt::ops::adamw::cuda
#endif
