#pragma once
// What lies inside each planned buffer: the tensors of a layer's weights, of its saved
// activations, and of each action's workspace, as byte offsets. The planner sizes buffers from
// these totals and the backends carve their pointers from the same offsets, so the two cannot
// disagree.
#include <cstdint>

#include "lvt/model/config.hpp"
#include "lvt/policies.hpp"

namespace lvt::plan {

using i64 = std::int64_t;

constexpr i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }
constexpr i64 align_up(i64 a, i64 b) { return ceil_div(a, b) * b; }

inline constexpr int dq_nested_block = 256;  // bitsandbytes' block for quantizing the absmax
inline constexpr i64 tensor_alignment = 64;  // every tensor inside a buffer starts on it

struct Span {
  i64 offset = 0;
  i64 bytes = 0;
  constexpr bool operator==(const Span&) const = default;
};

// Hands out consecutive aligned spans.
struct Carver {
  i64 at = 0;
  constexpr Span take(i64 bytes) {
    const Span s{at, bytes};
    at = align_up(at + bytes, tensor_alignment);
    return s;
  }
};

// One frozen linear weight [out, in] as bitsandbytes stores it.
//   none:   data = W in the compute precision
//   nf4/fp4: data = packed codes (first element in the high nibble); absmax = fp32 per block,
//            or with double quantization uint8 codes + nested fp32 per 256 blocks + offset
//            (the mean) + the 256-entry nested map; code = the 16-entry 4-bit table
//   int8:   data = int8 codes, absmax = fp32 per block
struct LinearLayout {
  i64 out = 0, in = 0;
  Span data, absmax, nested, offset, nested_map, code;
  i64 bytes = 0;
};

constexpr LinearLayout linear_layout(i64 out, i64 in, const PlanOptions& o, Carver& c) {
  LinearLayout l;
  l.out = out;
  l.in = in;
  const i64 n = out * in, blocks = ceil_div(n, o.quant_block);
  const i64 start = c.at;
  switch (o.quant) {
    case QuantKind::none: l.data = c.take(n * dtype_bytes(o.precision)); break;
    case QuantKind::int8:
      l.data = c.take(n);
      l.absmax = c.take(blocks * 4);
      break;
    case QuantKind::nf4:
    case QuantKind::fp4:
      l.data = c.take(ceil_div(n, 2));
      if (o.double_quant) {
        l.absmax = c.take(blocks);
        l.nested = c.take(ceil_div(blocks, dq_nested_block) * 4);
        l.offset = c.take(4);
        l.nested_map = c.take(256 * 4);
      } else {
        l.absmax = c.take(blocks * 4);
      }
      l.code = c.take(16 * 4);
      break;
  }
  l.bytes = c.at - start;
  return l;
}

// Storage of one quantized tensor of n elements (a single [1, n] linear), for reports and tests.
constexpr i64 quantized_tensor_bytes(i64 n, const PlanOptions& o) {
  Carver c;
  return linear_layout(1, n, o, c).bytes;
}

// Projections in PEFT's order; lvt::targets bit i is projection i.
enum Proj : int { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, proj_count };

struct ProjShape {
  i64 out, in;
};
constexpr ProjShape proj_shape(const ModelConfig& m, int p) {
  const i64 h = m.hidden, q = m.q_dim(), kv = m.kv_dim(), f = m.ffn;
  const ProjShape s[proj_count] = {{q, h}, {kv, h}, {kv, h}, {h, q}, {f, h}, {f, h}, {h, f}};
  return s[p];
}

// One layer's weights. Llama, Mistral and Qwen2 store seven projections; Phi-3 fuses q/k/v
// into qkv_proj and gate/up into gate_up_proj, and is stored (and sized) fused.
struct LayerWeightLayout {
  LinearLayout linear[proj_count];
  int count = 0;  // 7, or 4 for phi3 (qkv, o, gate_up, down)
  Span input_norm, post_norm, bias_q, bias_k, bias_v;
  i64 bytes = 0;
};

constexpr LayerWeightLayout layer_weight_layout(const ModelConfig& m, const PlanOptions& o) {
  LayerWeightLayout w;
  Carver c;
  const i64 h = m.hidden, q = m.q_dim(), kv = m.kv_dim(), f = m.ffn;
  if (m.arch == Arch::phi3) {
    w.linear[0] = linear_layout(q + 2 * kv, h, o, c);
    w.linear[1] = linear_layout(h, q, o, c);
    w.linear[2] = linear_layout(2 * f, h, o, c);
    w.linear[3] = linear_layout(h, f, o, c);
    w.count = 4;
  } else {
    for (int p = 0; p < proj_count; ++p)
      w.linear[p] = linear_layout(proj_shape(m, p).out, proj_shape(m, p).in, o, c);
    w.count = proj_count;
  }
  const i64 e = dtype_bytes(o.precision);
  w.input_norm = c.take(h * e);
  w.post_norm = c.take(h * e);
  if (m.qkv_bias) {
    w.bias_q = c.take(q * e);
    w.bias_k = c.take(kv * e);
    w.bias_v = c.take(kv * e);
  }
  w.bytes = c.at;
  return w;
}

constexpr i64 tokens(const PlanOptions& o) { return i64(o.batch) * o.seq; }

// The io buffer: token ids, targets and positions (int32 each; positions restart at 0 with each
// example packed into a row, RoPE and attention read them), then a control block where a backend
// keeps the step's device-side scalars (loss sum, kept tokens, gradient norm, loss scale,
// optimizer hyper-parameters, reduction partials) so a captured CUDA graph reads them from memory.
inline constexpr i64 step_control_bytes = 16384;
struct IoLayout {
  Span tokens, targets, positions, control;
  i64 bytes = 0;
};
constexpr IoLayout io_layout(const PlanOptions& o) {
  IoLayout l;
  Carver c;
  l.tokens = c.take(tokens(o) * 4);
  l.targets = c.take(tokens(o) * 4);
  l.positions = c.take(tokens(o) * 4);
  l.control = c.take(step_control_bytes);
  l.bytes = c.at;
  return l;
}

// What a layer's backward needs, written by its forward (or recompute), besides its input x
// (the residual buffer): normed inputs of both sub-blocks, q/k after RoPE, v, the attention
// output, the residual after attention, gate and up; rstd of both norms and the attention row
// logsumexp (flash-style: never the T x T scores). LoRA's x A^T and silu(gate) * up are
// recomputed in backward.
struct SavedLayout {
  Span xn1, q, k, v, att, h, xn2, gate, up, rstd1, rstd2, lse;
  i64 bytes = 0;
};

constexpr SavedLayout saved_layout(const ModelConfig& m, const PlanOptions& o) {
  SavedLayout s;
  Carver c;
  const i64 n = tokens(o), e = dtype_bytes(o.precision);
  s.xn1 = c.take(n * m.hidden * e);
  s.q = c.take(n * m.q_dim() * e);
  s.k = c.take(n * m.kv_dim() * e);
  s.v = c.take(n * m.kv_dim() * e);
  s.att = c.take(n * m.q_dim() * e);
  s.h = c.take(n * m.hidden * e);
  s.xn2 = c.take(n * m.hidden * e);
  s.gate = c.take(n * m.ffn * e);
  s.up = c.take(n * m.ffn * e);
  s.rstd1 = c.take(n * 4);
  s.rstd2 = c.take(n * 4);
  s.lse = c.take(n * m.heads * 4);
  s.bytes = c.at;
  return s;
}

// The flat LoRA buffer (params, grads and AdamW moments share it): per trainable layer, per
// targeted projection, A [r, in] then B [out, r], in layer order then PEFT's projection order.
constexpr i64 layer_lora_params(const ModelConfig& m, const PlanOptions& o) {
  i64 n = 0;
  for (int p = 0; p < proj_count; ++p)
    if (o.lora_targets & (1u << p)) n += i64(o.lora_rank) * (proj_shape(m, p).in + proj_shape(m, p).out);
  return n;
}

// Largest input width of a projection (the LoRA path's row block is that wide).
constexpr i64 widest_in(const ModelConfig& m) {
  i64 w = 0;
  for (int p = 0; p < proj_count; ++p) w = proj_shape(m, p).in > w ? proj_shape(m, p).in : w;
  return w;
}

// Rows of x the LoRA path drops out at a time (the dropped copy lives in the common scratch).
// The host reference walks blocks of up to 256 rows (ops::linear::lora_row_block); the 16-bit
// CUDA path needs no copy without dropout and takes up to 512 rows per GEMM with it.
inline constexpr i64 host_lora_block_rows = 256;
constexpr i64 lora_block_rows(const PlanOptions& o) {
  if (o.precision == DType::fp32) return tokens(o) < host_lora_block_rows ? tokens(o) : host_lora_block_rows;
  if (!(o.lora_dropout > 0)) return 0;
  return tokens(o) < 512 ? tokens(o) : 512;
}

// The host attention's scratch (ops::attention::scratch_elems): two blocks of 64 query rows'
// scores per thread and, with grouped heads, backward's per-head dk and dv. CUDA: one row.
inline constexpr i64 host_attention_block_rows = 64;
constexpr i64 attention_scratch_bytes(const ModelConfig& m, const PlanOptions& o) {
  if (o.precision != DType::fp32) return i64(o.seq) * 4;
  const i64 rows = o.seq < host_attention_block_rows ? o.seq : host_attention_block_rows;
  const i64 threads = o.host_threads > 0 ? o.host_threads : 1;
  const i64 partials = m.heads > m.kv_heads ? 2 * tokens(o) * m.q_dim() : 0;
  return (threads * 2 * rows * o.seq + partials) * 4;
}

// Scratch shared by forward and backward actions: the dequantized weight (the largest linear,
// whole), the LoRA path's h / dh and a block of dropped-out rows, the layer's LoRA parameters
// rounded to the 16-bit compute type (CUDA: cuBLASLt multiplies like types), the host
// attention's score blocks (attention_scratch_bytes), and the RoPE cos/sin tables (fp32 on every
// backend).
struct CommonWork {
  Span weight, lora, lora_params, attn_row, cos, sin;
};
constexpr CommonWork common_work(const ModelConfig& m, const PlanOptions& o, Carver& c) {
  CommonWork w;
  const i64 n = tokens(o), e = dtype_bytes(o.precision);
  if (o.quant != QuantKind::none) {
    const LayerWeightLayout l = layer_weight_layout(m, o);
    i64 most = 0;
    for (int i = 0; i < l.count; ++i)
      most = l.linear[i].out * l.linear[i].in > most ? l.linear[i].out * l.linear[i].in : most;
    w.weight = c.take(most * e);
  }
  w.lora = c.take((2 * n * o.lora_rank + lora_block_rows(o) * widest_in(m)) * e);
  if (o.precision != DType::fp32) w.lora_params = c.take(layer_lora_params(m, o) * e);
  w.attn_row = c.take(attention_scratch_bytes(m, o));
  w.cos = c.take(i64(o.seq) * (m.rotary_dim() / 2) * 4);
  w.sin = c.take(i64(o.seq) * (m.rotary_dim() / 2) * 4);
  return w;
}

// Forward (and recompute): the common scratch, silu(gate) * up, and, when the layer saves
// nothing, the saved set as temporaries.
struct ForwardWork {
  CommonWork common;
  Span act;
  SavedLayout temp;  // offsets relative to temp_base; used when the layer does not save
  i64 temp_base = 0;
  bool has_temp = false;
  i64 bytes = 0;
};
constexpr ForwardWork forward_work(const ModelConfig& m, const PlanOptions& o, bool saves) {
  ForwardWork w;
  Carver c;
  w.common = common_work(m, o, c);
  w.act = c.take(tokens(o) * m.ffn * dtype_bytes(o.precision));
  if (!saves) {
    w.temp = saved_layout(m, o);
    w.temp_base = c.take(w.temp.bytes).offset;
    w.has_temp = true;
  }
  w.bytes = c.at;
  return w;
}

// Backward: the common scratch, silu(gate) * up recomputed, and the gradients of the layer's
// activations.
struct BackwardWork {
  CommonWork common;
  Span act, d_act, d_gate, d_up, d_xn2, d_att, dq_rot, dk_rot, dv, dq, dk, d_xn1;
  i64 bytes = 0;
};
constexpr BackwardWork backward_work(const ModelConfig& m, const PlanOptions& o) {
  BackwardWork w;
  Carver c;
  const i64 n = tokens(o), e = dtype_bytes(o.precision);
  w.common = common_work(m, o, c);
  w.act = c.take(n * m.ffn * e);
  w.d_act = c.take(n * m.ffn * e);
  w.d_gate = c.take(n * m.ffn * e);
  w.d_up = c.take(n * m.ffn * e);
  w.d_xn2 = c.take(n * m.hidden * e);
  w.d_att = c.take(n * m.q_dim() * e);
  w.dq_rot = c.take(n * m.q_dim() * e);
  w.dk_rot = c.take(n * m.kv_dim() * e);
  w.dv = c.take(n * m.kv_dim() * e);
  w.dq = c.take(n * m.q_dim() * e);
  w.dk = c.take(n * m.kv_dim() * e);
  w.d_xn1 = c.take(n * m.hidden * e);
  w.bytes = c.at;
  return w;
}

// Tokens per lm-head chunk: a chunk's fp32 logits stay within 64 MiB (at least 1 token).
constexpr i64 loss_chunk_tokens(const ModelConfig& m, const PlanOptions& o) {
  const i64 n = tokens(o);
  if (o.loss_chunk_tokens > 0) return o.loss_chunk_tokens < n ? o.loss_chunk_tokens : n;
  i64 c = (i64(64) << 20) / (i64(m.vocab) * 4);
  if (c < 1) c = 1;
  return c < n ? c : n;
}

// The loss: final-norm output and its rstd, the gradient of the last residual, one chunk of
// fp32 logits with room for either its hidden rows and row losses (host) or its 16-bit logit
// gradients (CUDA), and the per-row losses.
struct LossWork {
  Span xf, rstd, dxf, chunk, row_loss;
  i64 bytes = 0;
};
constexpr LossWork loss_work(const ModelConfig& m, const PlanOptions& o) {
  LossWork w;
  Carver c;
  const i64 n = tokens(o), e = dtype_bytes(o.precision), chunk = loss_chunk_tokens(m, o);
  // host (fp32): a chunk's hidden rows, and per row its position and loss (8 + 8 bytes, the
  // 16 more ops::cross_entropy::scratch_elems asks for, rounded up); CUDA: its logit gradients
  const i64 rows = o.precision == DType::fp32 ? m.hidden * 4 + 32
                   : m.hidden * 4 > m.vocab * e ? m.hidden * 4 : m.vocab * e;
  w.xf = c.take(n * m.hidden * e);
  w.rstd = c.take(n * 4);
  w.dxf = c.take(n * m.hidden * e);
  w.chunk = c.take(chunk * (i64(m.vocab) * 4 + rows));
  w.row_loss = c.take(n * 4);
  w.bytes = c.at;
  return w;
}


// ---- generation ----------------------------------------------------------------------------

// The KV cache: per layer, K then V, each [batch, generate_context, kv_heads, head_dim] in the
// compute precision (RoPE already applied to K), as both backends carve it.
constexpr i64 kv_cache_layer_bytes(const ModelConfig& m, const PlanOptions& o) {
  return 2 * i64(o.batch) * o.generate_context * m.kv_dim() * dtype_bytes(o.precision);
}
constexpr i64 kv_cache_bytes(const ModelConfig& m, const PlanOptions& o) {
  return i64(m.layers) * kv_cache_layer_bytes(m, o);
}

// Tokens of one sequence a prefill runs through the layers at once (decode runs one): its
// activations are this many rows, so a long prompt is prefilled in chunks.
inline constexpr i64 prefill_chunk_tokens = 64;
constexpr i64 generate_rows(const PlanOptions& o) {
  return o.generate_context < prefill_chunk_tokens ? o.generate_context : prefill_chunk_tokens;
}

// The decode scratch, resident beside the cache: a chunk's activations (the saved set of one
// layer, as block_forward writes it, and silu(gate) * up), the residual stream in and out, the
// common scratch (dequantized weight, LoRA h and row block, one score row of the whole context,
// RoPE tables for every position of the context), and the final norm and fp32 logits of the
// last row.
struct GenerateWork {
  SavedLayout saved;  // offsets relative to saved_base
  i64 saved_base = 0;
  Span x, y, act, weight, lora, attn_row, cos, sin, xf, rstd, logits;
  i64 bytes = 0;
};
constexpr GenerateWork generate_work(const ModelConfig& m, const PlanOptions& o) {
  GenerateWork w;
  Carver c;
  const i64 n = generate_rows(o), e = dtype_bytes(o.precision), half = m.rotary_dim() / 2;
  PlanOptions rows = o;
  rows.batch = 1;
  rows.seq = int(n);
  w.saved = saved_layout(m, rows);
  w.saved_base = c.take(w.saved.bytes).offset;
  w.x = c.take(n * m.hidden * e);
  w.y = c.take(n * m.hidden * e);
  w.act = c.take(n * m.ffn * e);
  if (o.quant != QuantKind::none) {
    const LayerWeightLayout l = layer_weight_layout(m, o);
    i64 most = 0;
    for (int i = 0; i < l.count; ++i)
      most = l.linear[i].out * l.linear[i].in > most ? l.linear[i].out * l.linear[i].in : most;
    w.weight = c.take(most * e);
  }
  w.lora = c.take((2 * n * o.lora_rank + (n < host_lora_block_rows ? n : host_lora_block_rows) *
                                              widest_in(m)) * e);
  w.attn_row = c.take(i64(o.generate_context) * 4 *
                      (o.precision == DType::fp32 && o.host_threads > 1 ? o.host_threads : 1));
  w.cos = c.take(i64(o.generate_context) * half * 4);
  w.sin = c.take(i64(o.generate_context) * half * 4);
  w.xf = c.take(m.hidden * e);
  w.rstd = c.take(4);
  w.logits = c.take(i64(m.vocab) * 4);
  w.bytes = c.at;
  return w;
}

}  // namespace lvt::plan
