// The CUDA launchers of every op, instantiated once for a build (an internal build-time device,
// not part of the header-only interface: a user's program that includes the op headers gets
// everything instantiated where it is used, as before).
//
// Every .cu unit that instantiates the whole CUDA backend or the op kernels (the `lvt` command,
// the GPU suites, the GPU benchmarks) used to compile each kernel's device code for every target
// architecture again; nvcc's device passes (cicc + ptxas, per architecture) were most of CI's
// compile time. In lvt's own build:
//   - units compiled with LVT_CUDA_PREBUILT (meson's cuda_args force-include this header) see
//     `extern template` declarations for the launchers below, so they instantiate none of these
//     launchers and none of the kernels those launch (their objects refer to the symbols);
//   - tools/cuda_kernels_{f32,bf16,fp16}.cu define LVT_CUDA_INSTANTIATE as one storage type and
//     instantiate the list for it: each kernel is compiled once per architecture, in three units
//     that build in parallel (the static library lvt_cuda_kernels every CUDA target links).
// A launcher missing from the list still works (it is instantiated where used, as before); a
// listed signature that no longer matches its template is a compile error here.
#pragma once

#if LVT_CUDA
#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/decode_attention.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/loss_scale.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"
#include "lvt/quant/blockwise.hpp"

// PREFIX is `template` (definition) or `extern template` (declaration); S a storage type.
#define LVT_CUDA_LAUNCHERS(PREFIX, S)                                                            \
  PREFIX void lvt::ops::rmsnorm::cuda::forward<S>(S*, float*, const S*, const S*, std::int64_t,  \
                                                  std::int64_t, double, cudaStream_t);           \
  PREFIX void lvt::ops::rmsnorm::cuda::backward<S>(S*, const S*, const S*, const S*,             \
                                                   const float*, std::int64_t, std::int64_t,     \
                                                   cudaStream_t);                                \
  PREFIX void lvt::ops::swiglu::cuda::forward<S>(S*, const S*, const S*, std::int64_t,           \
                                                 cudaStream_t);                                  \
  PREFIX void lvt::ops::swiglu::cuda::backward<S>(S*, S*, const S*, const S*, const S*,          \
                                                  std::int64_t, cudaStream_t);                   \
  PREFIX void lvt::ops::residual::cuda::forward<S>(S*, const S*, const S*, std::int64_t,         \
                                                   cudaStream_t);                                \
  PREFIX void lvt::ops::embedding::cuda::forward<S>(S*, const std::int32_t*, const S*,           \
                                                    std::int64_t, std::int64_t, cudaStream_t);   \
  PREFIX void lvt::ops::rope::cuda::forward<S>(S*, const S*, const float*, const float*,         \
                                               std::int64_t, std::int64_t, std::int64_t,         \
                                               std::int64_t, std::int64_t, cudaStream_t,         \
                                               const std::int32_t*);                             \
  PREFIX void lvt::ops::rope::cuda::backward<S>(S*, const S*, const float*, const float*,        \
                                                std::int64_t, std::int64_t, std::int64_t,        \
                                                std::int64_t, std::int64_t, cudaStream_t,        \
                                                const std::int32_t*);                            \
  PREFIX void lvt::ops::attention::cuda::forward<S>(                                             \
      S*, float*, const S*, const S*, const S*, std::int64_t, std::int64_t, std::int64_t,        \
      std::int64_t, std::int64_t, cudaStream_t, const std::int32_t*);                            \
  PREFIX void lvt::ops::attention::cuda::backward<S>(                                            \
      S*, S*, S*, const S*, const S*, const S*, const S*, const S*, const float*, std::int64_t,  \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t, cudaStream_t,                      \
      const std::int32_t*);                                                                      \
  /* supported() asks the runtime which image its own forward_kernel<S, 64> was built for: */ \
  /* it must live in the unit that holds the kernels. */                                      \
  PREFIX bool lvt::ops::attention::cuda::tiled::supported<S>();                                \
  PREFIX bool lvt::ops::attention::cuda::uses_tiled<S>(std::int64_t);                          \
  PREFIX void lvt::ops::attention::cuda::simple::forward<S>(                                     \
      S*, float*, const S*, const S*, const S*, std::int64_t, std::int64_t, std::int64_t,        \
      std::int64_t, std::int64_t, cudaStream_t, const std::int32_t*);                            \
  PREFIX void lvt::ops::attention::cuda::simple::backward<S>(                                    \
      S*, S*, S*, const S*, const S*, const S*, const S*, const S*, const float*, std::int64_t,  \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t, cudaStream_t,                      \
      const std::int32_t*);                                                                      \
  PREFIX lvt::ops::cross_entropy::Result lvt::ops::cross_entropy::cuda::forward_backward<S>( \
      S*, void*, float*, const S*, const S*, const std::int32_t*, std::int64_t, std::int64_t,    \
      std::int64_t, std::int64_t, std::int64_t, double, lvt::ops::matmul::cuda::Gemm&,           \
      cudaStream_t);                                                                             \
  PREFIX void lvt::ops::cross_entropy::cuda::forward_backward_device<S>(                         \
      S*, void*, float*, const S*, const S*, const std::int32_t*, std::int64_t, std::int64_t,    \
      std::int64_t, std::int64_t, const float*, float*, float*, lvt::ops::matmul::cuda::Gemm&,   \
      cudaStream_t);                                                                             \
  PREFIX void lvt::ops::linear::cuda::dropout_rows<false, S>(                                    \
      S*, S*, std::int64_t, std::int64_t, std::int64_t, const lvt::ops::linear::cuda::DropoutSite&,    \
      cudaStream_t);                                                                             \
  PREFIX void lvt::ops::linear::cuda::dropout_rows<true, S>(                                     \
      S*, S*, std::int64_t, std::int64_t, std::int64_t, const lvt::ops::linear::cuda::DropoutSite&,    \
      cudaStream_t);                                                                             \
  PREFIX void lvt::ops::linear::cuda::dropped_rows<S>(S*, const S*, std::int64_t, std::int64_t,  \
                                                      std::int64_t,                              \
                                                      const lvt::ops::linear::cuda::DropoutSite&,      \
                                                      cudaStream_t);                             \
  PREFIX void lvt::ops::linear::cuda::add_dropped<S>(S*, const S*, std::int64_t, std::int64_t,   \
                                                     std::int64_t,                               \
                                                     const lvt::ops::linear::cuda::DropoutSite&,       \
                                                     cudaStream_t);                              \
  PREFIX void lvt::ops::decode_attention::cuda::forward<S>(S*, const S*, const S*, const S*,    \
                                                           std::int64_t, std::int64_t,         \
                                                           std::int64_t, std::int64_t,         \
                                                           std::int64_t, cudaStream_t);        \
  PREFIX void lvt::ops::linear::cuda::lora_forward_fp32<S>(S*, float*, const S*, const float*,   \
                                                           const float*, std::int64_t,         \
                                                           std::int64_t, std::int64_t,         \
                                                           std::int64_t, float, cudaStream_t); \
  PREFIX void lvt::ops::linear::cuda::round_params<S>(S*, const float*, std::int64_t,            \
                                                      cudaStream_t);                             \
  PREFIX void lvt::quant::launch_quantize_4bit<S>(lvt::quant::Code4, const S*, std::int64_t,     \
                                                  int, std::uint8_t*, float*,                    \
                                                  unsigned long long*, cudaStream_t);            \
  PREFIX void lvt::quant::launch_quantize_dynamic<S>(const S*, std::int64_t, int, std::uint8_t*, \
                                                     float*, unsigned long long*, cudaStream_t); \
  PREFIX void lvt::quant::launch_dequantize_4bit<S>(                                             \
      lvt::quant::Code4, const std::uint8_t*, const float*, const std::uint8_t*, const float*,   \
      float, std::int64_t, int, S*, cudaStream_t, const float*);                                 \
  PREFIX void lvt::quant::launch_quantize_int8<S>(const S*, std::int64_t, int, std::int8_t*,     \
                                                  float*, unsigned long long*, cudaStream_t);    \
  PREFIX void lvt::quant::launch_dequantize_int8<S>(const std::int8_t*, const float*,            \
                                                    std::int64_t, int, S*, cudaStream_t);

#if defined(LVT_CUDA_INSTANTIATE)
LVT_CUDA_LAUNCHERS(template, LVT_CUDA_INSTANTIATE)
#elif LVT_CUDA_PREBUILT
LVT_CUDA_LAUNCHERS(extern template, float)
LVT_CUDA_LAUNCHERS(extern template, lvt::bf16)
LVT_CUDA_LAUNCHERS(extern template, lvt::fp16)
#endif
#endif  // LVT_CUDA
