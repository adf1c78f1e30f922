#pragma once
// Byte sizes of everything a step holds, from the model description and the options. Plain
// constexpr arithmetic; the buffer table (buffers.hpp) is built from these.
#include <cstdint>

#include "lvt/model/config.hpp"
#include "lvt/policies.hpp"

namespace lvt::plan {

using i64 = std::int64_t;

constexpr i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }
constexpr i64 align_up(i64 a, i64 b) { return ceil_div(a, b) * b; }

inline constexpr i64 arena_alignment = 256;  // cudaMalloc's alignment; every buffer starts on it
inline constexpr int dq_nested_block = 256;  // bitsandbytes' block for quantizing the absmax
inline constexpr i64 mib = i64(1) << 20;
inline constexpr i64 gib = i64(1) << 30;

// What the CUDA context, cuBLAS/cuBLASLt handles and the driver keep on the device outside our
// arena. Measured contexts are 300-500 MiB on recent drivers; 512 MiB is the stated reserve.
inline constexpr i64 cuda_context_reserve_bytes = 512 * mib;

// cuBLASLt workspace: NVIDIA recommends 32 MiB on Hopper, 4 MiB elsewhere.
constexpr i64 cublaslt_workspace_bytes(int sm) { return sm >= 90 ? 32 * mib : 4 * mib; }

// Storage of one quantized linear weight of `n` elements, as bitsandbytes lays it out: packed
// codes, absmax per block (fp32, or 8-bit codes + fp32 nested absmax per 256 blocks + the mean
// with double quantization), and the code table(s).
constexpr i64 quantized_tensor_bytes(i64 n, QuantKind q, bool double_quant, int block,
                                     DType precision) {
  switch (q) {
    case QuantKind::none: return n * dtype_bytes(precision);
    case QuantKind::int8: return n + ceil_div(n, block) * 4 + 256 * 4;
    case QuantKind::nf4:
    case QuantKind::fp4: {
      const i64 blocks = ceil_div(n, block);
      const i64 packed = ceil_div(n, 2);
      const i64 table = 16 * 4;
      if (!double_quant) return packed + blocks * 4 + table;
      return packed + blocks + ceil_div(blocks, dq_nested_block) * 4 + 4 + 256 * 4 + table;
    }
  }
  return 0;
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

// The linear projections of one layer as (out, in) pairs. phi3 stores q/k/v and gate/up fused,
// so it quantizes 4 tensors instead of 7 (bitsandbytes blocks run over each tensor).
struct LinearShape {
  i64 out, in;
};
struct LayerLinears {
  LinearShape t[7]{};
  int count = 0;
};
constexpr LayerLinears layer_linears(const ModelConfig& m) {
  LayerLinears l;
  const i64 h = m.hidden, q = m.q_dim(), kv = m.kv_dim(), f = m.ffn;
  if (m.arch == Arch::phi3) {
    l.t[0] = {q + 2 * kv, h};
    l.t[1] = {h, q};
    l.t[2] = {2 * f, h};
    l.t[3] = {h, f};
    l.count = 4;
  } else {
    l.t[0] = {q, h};
    l.t[1] = {kv, h};
    l.t[2] = {kv, h};
    l.t[3] = {h, q};
    l.t[4] = {f, h};
    l.t[5] = {f, h};
    l.t[6] = {h, f};
    l.count = 7;
  }
  return l;
}

// One layer's frozen weights as stored (quantized linears + 16-bit norms and biases).
constexpr i64 layer_weight_bytes(const ModelConfig& m, const PlanOptions& o) {
  const LayerLinears l = layer_linears(m);
  i64 bytes = 0;
  for (int i = 0; i < l.count; ++i)
    bytes += align_up(quantized_tensor_bytes(l.t[i].out * l.t[i].in, o.quant, o.double_quant,
                                             o.quant_block, o.precision),
                      16);
  return bytes + m.layer_small_params() * dtype_bytes(o.precision);
}

// The largest linear weight dequantized into 16-bit scratch before its GEMM.
constexpr i64 dequant_scratch_bytes(const ModelConfig& m, const PlanOptions& o) {
  if (o.quant == QuantKind::none) return 0;
  const LayerLinears l = layer_linears(m);
  i64 most = 0;
  for (int i = 0; i < l.count; ++i)
    most = l.t[i].out * l.t[i].in > most ? l.t[i].out * l.t[i].in : most;
  return most * dtype_bytes(o.precision);
}

// LoRA parameters of one trainable layer: r * (in + out) per targeted projection (PEFT's
// per-projection A and B, also for phi3's fused projections split per target).
constexpr i64 layer_lora_params(const ModelConfig& m, const PlanOptions& o) {
  const i64 h = m.hidden, q = m.q_dim(), kv = m.kv_dim(), f = m.ffn;
  const LinearShape proj[7] = {{q, h}, {kv, h}, {kv, h}, {h, q}, {f, h}, {f, h}, {h, f}};
  i64 n = 0;
  for (int i = 0; i < 7; ++i)
    if (o.lora_targets & (1u << i)) n += i64(o.lora_rank) * (proj[i].in + proj[i].out);
  return n;
}

constexpr int lora_target_count(unsigned t) {
  int c = 0;
  for (int i = 0; i < 7; ++i) c += (t >> i) & 1;
  return c;
}

constexpr i64 tokens(const PlanOptions& o) { return i64(o.batch) * o.seq; }

// The residual stream between layers: tokens x hidden in the compute precision.
constexpr i64 residual_bytes(const ModelConfig& m, const PlanOptions& o) {
  return tokens(o) * m.hidden * dtype_bytes(o.precision);
}

// What a layer's backward needs, saved by its forward (or recompute), besides its input x
// (the residual buffer): normed inputs of both sub-blocks, q/k/v after RoPE, the attention
// output, the residual after attention, gate and up; fp32 rstd of both norms and the attention
// row logsumexp (flash-style: never the T x T scores); and for a trainable layer x A^T per
// LoRA target. silu(gate) * up is recomputed in backward rather than stored.
constexpr i64 layer_saved_bytes(const ModelConfig& m, const PlanOptions& o, bool trainable) {
  const i64 n = tokens(o), e = dtype_bytes(o.precision);
  const i64 h = m.hidden, q = m.q_dim(), kv = m.kv_dim(), f = m.ffn;
  i64 bytes = n * (h + q + 2 * kv + q + h + h + 2 * f) * e;
  bytes += n * (2 + m.heads) * 4;
  if (trainable) bytes += n * i64(o.lora_rank) * lora_target_count(o.lora_targets) * e;
  return bytes;
}

// Scratch of one forward action: dequantized weight, plus the temporaries a forward that saves
// nothing still needs (they are the saved set's size when it saves).
constexpr i64 forward_workspace_bytes(const ModelConfig& m, const PlanOptions& o, bool saves) {
  const i64 n = tokens(o);
  const i64 lora_tmp = n * o.lora_rank * 4;
  return dequant_scratch_bytes(m, o) + (saves ? 0 : layer_saved_bytes(m, o, false)) + lora_tmp;
}

// Scratch of one backward action: dequantized weight, gradients of the layer's activations
// (d gate, d up, silu(gate)*up recomputed, d q/k/v, d attention output, d normed input), the
// fp32 dQ accumulator of the flash-style attention backward, and a LoRA temporary.
constexpr i64 backward_workspace_bytes(const ModelConfig& m, const PlanOptions& o) {
  const i64 n = tokens(o), e = dtype_bytes(o.precision);
  const i64 h = m.hidden, q = m.q_dim(), kv = m.kv_dim(), f = m.ffn;
  return dequant_scratch_bytes(m, o) + n * (3 * f + q + 2 * kv + q + h) * e + n * q * 4 +
         n * o.lora_rank * 4;
}

// Tokens per lm-head chunk: the fp32 logits of a chunk stay within 64 MiB (at least 1 token).
constexpr i64 loss_chunk_tokens(const ModelConfig& m, const PlanOptions& o) {
  if (o.loss_chunk_tokens > 0) return o.loss_chunk_tokens < tokens(o) ? o.loss_chunk_tokens : tokens(o);
  i64 c = (64 * mib) / (i64(m.vocab) * 4);
  if (c < 1) c = 1;
  return c < tokens(o) ? c : tokens(o);
}

// The loss action: final-norm output (16-bit) and its fp32 gradient, per-token rstd, loss and
// logsumexp, and one chunk of fp32 logits (its gradient is written in place).
constexpr i64 loss_workspace_bytes(const ModelConfig& m, const PlanOptions& o) {
  const i64 n = tokens(o), e = dtype_bytes(o.precision);
  return n * m.hidden * (e + 4) + n * 3 * 4 + loss_chunk_tokens(m, o) * i64(m.vocab) * 4;
}

// The embedding table and the lm head (16-bit; bitsandbytes leaves both unquantized), with the
// final norm weight.
constexpr i64 embedding_bytes(const ModelConfig& m, const PlanOptions& o) {
  return m.embedding_params() * dtype_bytes(o.precision);
}
constexpr i64 lm_head_bytes(const ModelConfig& m, const PlanOptions& o) {
  return ((m.tied_embeddings ? 0 : m.embedding_params()) + m.hidden) * dtype_bytes(o.precision);
}

// Token ids and targets of one micro-batch (int32 each).
constexpr i64 io_bytes(const PlanOptions& o) { return tokens(o) * 8; }

}  // namespace lvt::plan
