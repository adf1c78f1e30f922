#pragma once
// Dynamic loss scaling for fp16 training, as torch.amp.GradScaler does it (init_scale 2^16,
// growth_factor 2, backoff_factor 0.5, growth_interval 2000). Per optimizer step:
//   begin:              found_inf = 0
//   backward            on loss * scale (the caller multiplies d loss by `scale`)
//   unscale_and_check:  per gradient tensor, g *= inv_scale and found_inf = 1 if any g is
//                       inf or NaN (torch's _amp_foreach_non_finite_check_and_unscale_; inv_scale
//                       is 1/scale computed in double, stored as fp32, as GradScaler.unscale_)
//   optimizer step,     skipped when found_inf (adamw::cuda::step's skip_if_nonzero)
//   update:             torch's _amp_update_scale_: found_inf -> scale *= backoff, tracker = 0;
//                       else tracker + 1, and at growth_interval scale *= growth (kept only if
//                       finite) and tracker = 0.
// The CUDA part keeps State in device memory, so a captured CUDA graph replays all of this with
// no host round trip.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "lvt/ops/common.hpp"

namespace lvt::ops::loss_scale {

// The scaler's state, the same bytes on host and device (torch: _scale, _growth_tracker and the
// per-step found_inf tensor).
struct State {
  float scale = 65536.0f;
  std::int32_t growth_tracker = 0;
  float found_inf = 0.0f;
};

struct Settings {
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  std::int32_t growth_interval = 2000;
};

inline void check_settings(const Settings& st) {
  if (!(st.growth_factor > 1.0f) || !(st.backoff_factor > 0.0f && st.backoff_factor < 1.0f))
    throw Error("loss_scale: growth_factor must be > 1 and backoff_factor in (0, 1) (got " +
                std::to_string(st.growth_factor) + " and " + std::to_string(st.backoff_factor) +
                ")");
  require(st.growth_interval > 0, "loss_scale", "growth_interval must be positive",
          st.growth_interval);
}

// 1 / scale as GradScaler computes it: in double, stored as fp32.
LVT_HD inline float inv_scale(float scale) { return float(1.0 / double(scale)); }

LVT_HD inline bool finite(float x) { return (float_bits(x) & 0x7f800000u) != 0x7f800000u; }

// torch's amp_update_scale_cuda_kernel: the factors are doubles there, so the product is taken
// in double and rounded to fp32. Shared by the host and the CUDA kernel.
LVT_HD inline void update_rule(float& scale, std::int32_t& growth_tracker, float found_inf,
                               const Settings& st) {
  if (found_inf != 0.0f) {
    scale = float(double(scale) * double(st.backoff_factor));
    growth_tracker = 0;
  } else {
    const std::int32_t successful = growth_tracker + 1;
    if (successful == st.growth_interval) {
      const float grown = float(double(scale) * double(st.growth_factor));
      if (finite(grown)) scale = grown;  // never grow past fp32's range to inf
      growth_tracker = 0;
    } else {
      growth_tracker = successful;
    }
  }
}

// Before the first unscale_and_check of a step.
inline void begin(State& s) { s.found_inf = 0.0f; }

// g *= 1/scale; found_inf = 1 when any g is inf or NaN (it is never reset here, so several
// gradient tensors add up into one flag).
template <class T>
void unscale_and_check(T* g, std::int64_t n, State& s) {
  require(n >= 0, "loss_scale", "the element count must be non-negative", n);
  const float inv = inv_scale(s.scale);
  for (std::int64_t i = 0; i < n; i++) {
    if (!std::isfinite(double(g[i]))) s.found_inf = 1.0f;
    if (inv != 1.0f) g[i] = g[i] * T(inv);
  }
}

inline void update(State& s, const Settings& st) {
  check_settings(st);
  update_rule(s.scale, s.growth_tracker, s.found_inf, st);
}

// Whether this step's optimizer update is skipped (GradScaler.step does not call the optimizer).
inline bool skipped(const State& s) { return s.found_inf != 0.0f; }

// Where found_inf sits in a device State, for adamw::cuda::step's skip_if_nonzero; pointer
// arithmetic only, nothing is read.
inline const float* found_inf_ptr(const State* s) {
  return reinterpret_cast<const float*>(reinterpret_cast<const char*>(s) +
                                        offsetof(State, found_inf));
}

}  // namespace lvt::ops::loss_scale

#if LVT_CUDA
#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: the same three steps on a State in device memory; nothing synchronizes. ----------
namespace lvt::ops::loss_scale::cuda {

// found_inf = 0 (a memset node in a captured graph).
inline void begin(State* s, cudaStream_t stream) {
  require(s != nullptr, "loss_scale", "the device State is null", 0);
  LVT_CUDA_CHECK(cudaMemsetAsync(const_cast<float*>(found_inf_ptr(s)), 0, sizeof(float), stream));
}

// Templates (one instantiation each) so that every .cu including this header shares one
// definition: a plain __global__ function here would be defined once per file.
template <class T>
__global__ void unscale_and_check_kernel(T* g, std::int64_t n, State* s) {
  __shared__ float inv;  // once per block: a division in double
  if (threadIdx.x == 0) inv = inv_scale(s->scale);
  __syncthreads();
  bool found = false;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const T x = g[i];
    found |= !finite(x);
    if (inv != 1.0f) g[i] = x * T(inv);
  }
  if (found) s->found_inf = 1.0f;  // every writer writes the same value, as torch's kernel
}

// g *= 1/s->scale; s->found_inf = 1 when any g is inf or NaN (after begin()).
inline void unscale_and_check(float* g, std::int64_t n, State* s, cudaStream_t stream) {
  require(n >= 0, "loss_scale", "the element count must be non-negative", n);
  require(s != nullptr, "loss_scale", "the device State is null", n);
  if (n == 0) return;
  unscale_and_check_kernel<float><<<ops::cuda::grid_for(n), ops::cuda::threads, 0, stream>>>(g, n, s);
  LVT_CUDA_LAUNCHED("loss_scale::cuda::unscale_and_check_kernel");
}

template <class St>
__global__ void update_kernel(St* s, Settings st) {
  update_rule(s->scale, s->growth_tracker, s->found_inf, st);
}

// The scale and tracker updated from this step's found_inf, by one thread.
inline void update(State* s, Settings st, cudaStream_t stream) {
  check_settings(st);
  require(s != nullptr, "loss_scale", "the device State is null", 0);
  update_kernel<State><<<1, 1, 0, stream>>>(s, st);
  LVT_CUDA_LAUNCHED("loss_scale::cuda::update_kernel");
}

}  // namespace lvt::ops::loss_scale::cuda
#endif
