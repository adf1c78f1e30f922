#pragma once
// One decoder layer, forward and backward, written once as a plain sequence of op calls over a
// backend `Ops` (host reference or CUDA). Policies never change this code: checkpointing,
// offload and sparse layers change which actions the step program runs, and where the buffers
// below live, not what a layer computes.
//
//   xn1 = rmsnorm(x) ; q, k, v = proj(xn1) ; q, k = rope(q, k) ; att = attention(q, k, v)
//   h = x + o_proj(att) ; xn2 = rmsnorm(h) ; out = h + down(silu(gate(xn2)) * up(xn2))
//
// Ops supplies, for the layer it is bound to (weights, LoRA, dropout seeds):
//   linear_forward(proj, y, x, rows)        y = x W^T + bias + LoRA        (y written)
//   linear_backward(proj, dx, dy, x, rows)  dx += dy W + LoRA's part; LoRA grads +=
//   norm(which)                             input (0) / post-attention (1) RMSNorm weight
// and the element ops: rmsnorm_forward/backward, rope_forward/backward, attention_forward/
// backward, swiglu_forward/backward, add, zero. Packed rows are the Ops' business too: its rope
// and attention read the step's positions (bound like the weights), the block code is the same.
#include <cstdint>

namespace lvt::model {

struct BlockDims {
  std::int64_t batch = 0, seq = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0,
               rotary_dim = 0, ffn = 0;
  double eps = 1e-5;
  std::int64_t tokens() const { return batch * seq; }
  std::int64_t q_dim() const { return heads * head_dim; }
  std::int64_t kv_dim() const { return kv_heads * head_dim; }
};

enum BlockProj : int { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };

// What forward saves for backward (see plan/layout.hpp's SavedLayout). T is the storage type of
// activations, F that of the per-row statistics and tables (the host runs both in one type; the
// CUDA backend stores 16-bit activations and fp32 statistics).
template <class T, class F = T>
struct BlockSaved {
  T *xn1, *q, *k, *v, *att, *h, *xn2, *gate, *up;
  F *rstd1, *rstd2, *lse;
};

template <class T, class F = T>
struct BlockForwardWork {
  T* act;
  F *attn_row, *cos, *sin;
};

template <class T, class F = T>
struct BlockBackwardWork {
  T *act, *d_act, *d_gate, *d_up, *d_xn2, *d_att, *dq_rot, *dk_rot, *dv, *dq, *dk, *d_xn1;
  F *attn_row, *cos, *sin;
};

// x [tokens, hidden] -> out [tokens, hidden]; fills s. cos/sin tables are ready in w. With out
// null (the recompute of a checkpointed segment's last layer, whose output backward never reads)
// it stops once s is complete.
template <class Ops, class T, class S>
void block_forward(Ops& ops, const BlockDims& d, const BlockSaved<T, S>& s,
                   const BlockForwardWork<T, S>& w, const T* x, T* out) {
  const std::int64_t n = d.tokens(), H = d.hidden;
  ops.rmsnorm_forward(s.xn1, s.rstd1, x, ops.norm(0), n, H, d.eps);
  ops.linear_forward(q_proj, s.q, s.xn1, n);
  ops.linear_forward(k_proj, s.k, s.xn1, n);
  ops.linear_forward(v_proj, s.v, s.xn1, n);
  ops.rope_forward(s.q, s.q, w.cos, w.sin, d.batch, d.seq, d.heads, d.head_dim, d.rotary_dim);
  ops.rope_forward(s.k, s.k, w.cos, w.sin, d.batch, d.seq, d.kv_heads, d.head_dim, d.rotary_dim);
  ops.attention_forward(s.att, s.lse, w.attn_row, s.q, s.k, s.v, d.batch, d.seq, d.heads,
                        d.kv_heads, d.head_dim);
  ops.linear_forward(o_proj, s.h, s.att, n);
  ops.add(s.h, s.h, x, n * H);
  ops.rmsnorm_forward(s.xn2, s.rstd2, s.h, ops.norm(1), n, H, d.eps);
  ops.linear_forward(gate_proj, s.gate, s.xn2, n);
  ops.linear_forward(up_proj, s.up, s.xn2, n);
  if (!out) return;  // a recompute that only rebuilds what backward needs
  ops.swiglu_forward(w.act, s.gate, s.up, n, d.ffn);
  ops.linear_forward(down_proj, out, w.act, n);
  ops.add(out, out, s.h, n * H);
}

// g holds d loss / d out on entry and d loss / d x on return (in place). LoRA grads accumulate.
template <class Ops, class T, class S>
void block_backward(Ops& ops, const BlockDims& d, const BlockSaved<T, S>& s,
                    const BlockBackwardWork<T, S>& w, const T* x, T* g) {
  const std::int64_t n = d.tokens(), H = d.hidden, F = d.ffn;
  const std::int64_t QD = d.q_dim(), KVD = d.kv_dim();
  // MLP: out = h + down(act), act = silu(gate) * up (recomputed, not saved).
  ops.swiglu_forward(w.act, s.gate, s.up, n, F);
  ops.zero(w.d_act, n * F);
  ops.linear_backward(down_proj, w.d_act, g, w.act, n);
  ops.zero(w.d_gate, n * F);
  ops.zero(w.d_up, n * F);
  ops.swiglu_backward(w.d_gate, w.d_up, w.d_act, s.gate, s.up, n, F);
  ops.zero(w.d_xn2, n * H);
  ops.linear_backward(gate_proj, w.d_xn2, w.d_gate, s.xn2, n);
  ops.linear_backward(up_proj, w.d_xn2, w.d_up, s.xn2, n);
  ops.rmsnorm_backward(g, w.d_xn2, s.h, ops.norm(1), s.rstd2, n, H);  // g = d loss / d h
  // Attention: h = x + o_proj(attention(rope(q), rope(k), v)).
  ops.zero(w.d_att, n * QD);
  ops.linear_backward(o_proj, w.d_att, g, s.att, n);
  ops.zero(w.dq_rot, n * QD);
  ops.zero(w.dk_rot, n * KVD);
  ops.zero(w.dv, n * KVD);
  ops.attention_backward(w.dq_rot, w.dk_rot, w.dv, w.attn_row, w.d_att, s.q, s.k, s.v, s.att,
                         s.lse, d.batch, d.seq, d.heads, d.kv_heads, d.head_dim);
  ops.zero(w.dq, n * QD);
  ops.zero(w.dk, n * KVD);
  ops.rope_backward(w.dq, w.dq_rot, w.cos, w.sin, d.batch, d.seq, d.heads, d.head_dim,
                    d.rotary_dim);
  ops.rope_backward(w.dk, w.dk_rot, w.cos, w.sin, d.batch, d.seq, d.kv_heads, d.head_dim,
                    d.rotary_dim);
  ops.zero(w.d_xn1, n * H);
  ops.linear_backward(q_proj, w.d_xn1, w.dq, s.xn1, n);
  ops.linear_backward(k_proj, w.d_xn1, w.dk, s.xn1, n);
  ops.linear_backward(v_proj, w.d_xn1, w.dv, s.xn1, n);
  ops.rmsnorm_backward(g, w.d_xn1, x, ops.norm(0), s.rstd1, n, H);  // g = d loss / d x
}

}  // namespace lvt::model
