#pragma once
// Byte sizes of everything a step holds, from the model description and the options. Plain
// constexpr arithmetic over the layouts of layout.hpp; program.hpp builds buffers from these.
#include <cstdint>

#include "lvt/model/config.hpp"
#include "lvt/plan/layout.hpp"
#include "lvt/policies.hpp"

namespace lvt::plan {

inline constexpr i64 arena_alignment = 256;  // cudaMalloc's alignment; every buffer starts on it
inline constexpr i64 mib = i64(1) << 20;
inline constexpr i64 gib = i64(1) << 30;

// What the CUDA context, cuBLAS/cuBLASLt handles and the driver keep on the device outside our
// arena. Measured contexts are 300-500 MiB on recent drivers; 512 MiB is the stated figure.
inline constexpr i64 cuda_context_bytes = 512 * mib;
// What a run allocates on the device after its fit check, beside the arena: cuBLASLt's state on
// the first GEMM of each shape, kernel modules loaded at their first launch (CUDA's default lazy
// loading), graph instantiation. A run is refused unless this much stays free beyond the arena;
// the GPU step test measures what is really allocated beside the arena against it.
inline constexpr i64 cuda_runtime_margin_bytes = 128 * mib;
// Outside the arena, the plan's device total counts both.
inline constexpr i64 cuda_context_reserve_bytes = cuda_context_bytes + cuda_runtime_margin_bytes;

// cuBLASLt workspace: NVIDIA recommends 32 MiB on Hopper, 4 MiB elsewhere.
constexpr i64 cublaslt_workspace_bytes(int sm) { return sm >= 90 ? 32 * mib : 4 * mib; }

constexpr i64 quantized_tensor_bytes(i64 n, QuantKind q, bool double_quant, int block,
                                     DType precision) {
  PlanOptions o;
  o.quant = q;
  o.double_quant = double_quant;
  o.quant_block = block;
  o.precision = precision;
  return quantized_tensor_bytes(n, o);
}

// Average stored bits per quantized parameter in the limit of a large tensor (no tables).
constexpr double bits_per_param(QuantKind q, bool double_quant, int block, DType precision) {
  switch (q) {
    case QuantKind::none: return 8.0 * dtype_bytes(precision);
    case QuantKind::int8: return 8.0 + 32.0 / block;
    case QuantKind::nf4:
    case QuantKind::fp4:
      return double_quant ? 4.0 + 8.0 / block + 32.0 / (double(block) * dq_nested_block)
                          : 4.0 + 32.0 / block;
  }
  return 0;
}

constexpr i64 layer_weight_bytes(const ModelConfig& m, const PlanOptions& o) {
  return layer_weight_layout(m, o).bytes;
}

constexpr int lora_target_count(unsigned t) {
  int c = 0;
  for (int i = 0; i < 7; ++i) c += (t >> i) & 1;
  return c;
}

// The residual stream between layers: tokens x hidden in the compute precision.
constexpr i64 residual_bytes(const ModelConfig& m, const PlanOptions& o) {
  return tokens(o) * m.hidden * dtype_bytes(o.precision);
}

constexpr i64 layer_saved_bytes(const ModelConfig& m, const PlanOptions& o) {
  return saved_layout(m, o).bytes;
}
constexpr i64 forward_workspace_bytes(const ModelConfig& m, const PlanOptions& o, bool saves) {
  return forward_work(m, o, saves).bytes;
}
constexpr i64 backward_workspace_bytes(const ModelConfig& m, const PlanOptions& o) {
  return backward_work(m, o).bytes;
}
constexpr i64 loss_workspace_bytes(const ModelConfig& m, const PlanOptions& o) {
  return loss_work(m, o).bytes;
}

// The embedding table and the lm head (16-bit; bitsandbytes leaves both unquantized), with the
// final norm weight.
constexpr i64 embedding_bytes(const ModelConfig& m, const PlanOptions& o) {
  return m.embedding_params() * dtype_bytes(o.precision);
}
constexpr i64 lm_head_bytes(const ModelConfig& m, const PlanOptions& o) {
  return ((m.tied_embeddings ? 0 : m.embedding_params()) + m.hidden) * dtype_bytes(o.precision);
}

constexpr i64 generate_workspace_bytes(const ModelConfig& m, const PlanOptions& o) {
  return generate_work(m, o).bytes;
}

// Token ids, targets and positions of one micro-batch (int32 each), and the step's control block.
constexpr i64 io_bytes(const PlanOptions& o) { return io_layout(o).bytes; }

}  // namespace lvt::plan
