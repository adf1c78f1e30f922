#pragma once
// What both backends read from a plan before they run it: every action's operands (found from
// the plan's use records, never guessed), the buffers that live through the whole step, the
// layer roles and weight layout, the flat LoRA buffer's slices, and the pointers a layer's
// block code gets, carved from the same layouts (plan/layout.hpp) the planner sized the buffers
// with. The host and CUDA backends differ only in where the bytes are and what runs on them.
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/model/block.hpp"
#include "lvt/ops/adamw.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/plan/planner.hpp"

namespace lvt::backend {

using plan::i64;

// The weights a backend reads: every model trains with seven separate projections (phi3's
// fused qkv_proj / gate_up_proj are split on load by io/, as PEFT-style adapters need).
inline ModelConfig storage_config(ModelConfig m) {
  if (m.arch == Arch::phi3) m.arch = Arch::llama;
  return m;
}

// One LoRA pair's place in the flat buffer: A [rank, in] at a, B [out, rank] at b (floats).
struct LoraSlice {
  int layer, proj;
  i64 in, out, a, b;
};

inline std::vector<LoraSlice> lora_slices(const ModelConfig& m, const PlanOptions& o) {
  std::vector<LoraSlice> s;
  const plan::LayerRoles roles = plan::layer_roles(m, o);
  i64 at = 0;
  for (int l = 0; l < m.layers; ++l) {
    if (!roles.trainable(o, l)) continue;
    for (int p = 0; p < plan::proj_count; ++p) {
      if (!(o.lora_targets & (1u << p))) continue;
      const plan::ProjShape sh = plan::proj_shape(m, p);
      const i64 a = at, b = at + i64(o.lora_rank) * sh.in;
      s.push_back({l, p, sh.in, sh.out, a, b});
      at = b + sh.out * o.lora_rank;
    }
  }
  return s;
}

struct StepStats {
  double loss_sum = 0;       // summed token losses of this micro-batch
  std::int64_t tokens = 0;   // tokens that counted (labels != -100)
  double grad_norm = 0;      // global LoRA grad norm before clipping (optimizer steps only)
  bool skipped = false;      // fp16: the optimizer step was skipped (non-finite scaled grads)
  double mean() const { return tokens ? loss_sum / double(tokens) : 0.0; }
};

struct OptimizerSettings {
  ops::adamw::Hyper adamw{};
  double clip = 1.0;          // global-norm clip; <= 0: none
  std::int64_t step = 1;      // AdamW's step count (from 1)
};

// Token ids are checked on the host before a step (a CUDA gather would read out of bounds).
inline void check_tokens(const std::int32_t* tokens, i64 n, i64 vocab) {
  for (i64 i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      throw Error("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary (vocab_size " + std::to_string(vocab) + ")");
}
// Positions [batch * seq] of packed rows, checked on the host before a step (RoPE reads its
// table at them, attention skips keys by them): a row starts at 0, and every later position is
// 0 (the next example starts) or the previous one + 1.
// A decode call's arguments (both backends): a plan with a KV cache, `seq` inside the batch,
// positions pos .. pos + n - 1 inside generate_context.
inline void check_decode(bool has_kv_cache, const PlanOptions& o, int seq, i64 n, i64 pos) {
  if (!has_kv_cache)
    throw Error("generation needs a plan with a KV cache: set PlanOptions::generate_context "
                "(lvt::Generate<Context>, lvt plan --generate-context N)");
  if (seq < 0 || seq >= o.batch)
    throw Error("decode: sequence " + std::to_string(seq) + " is outside the planned batch of " +
                std::to_string(o.batch));
  if (n <= 0 || pos < 0 || pos + n > o.generate_context)
    throw Error("decode: positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1) +
                " do not fit the KV cache of generate_context " +
                std::to_string(o.generate_context) + " tokens");
}

inline void check_positions(const std::int32_t* positions, i64 batch, i64 seq) {
  for (i64 b = 0; b < batch; ++b)
    for (i64 t = 0; t < seq; ++t) {
      const std::int32_t p = positions[b * seq + t];
      if (t == 0 ? p == 0 : (p == 0 || p == positions[b * seq + t - 1] + 1)) continue;
      throw Error("positions: row " + std::to_string(b) + ", column " + std::to_string(t) +
                  ": position " + std::to_string(p) +
                  (t == 0 ? std::string(" (a row must start at position 0)")
                          : " after " + std::to_string(positions[b * seq + t - 1]) +
                                " (each position is 0, starting a new example, or the previous "
                                "one + 1)"));
    }
}
inline void check_loss(double loss_sum, std::uint64_t step_index) {
  if (!std::isfinite(loss_sum))
    throw Error("non-finite loss (" + std::to_string(loss_sum) + ") in micro-batch " +
                std::to_string(step_index + 1));
}

// The plan and the indices into it that both backends use.
class PlanIndex {
 public:
  PlanIndex() = default;
  // `store` is storage_config(model); the plan must be valid (checked).
  PlanIndex(const ModelConfig& store, const PlanOptions& o) : store_(store), opt_(o) {
    plan_ = plan::make_plan(store_, opt_);
    if (plan_.error != plan::PlanError::ok) throw Error(plan::message(plan_.error));
    end_ = int(plan_.actions.size()) - 1;
    use_begin_.assign(plan_.actions.size() + 1, 0);
    for (const plan::Use& u : plan_.uses) ++use_begin_[std::size_t(u.action) + 1];
    for (std::size_t a = 0; a < plan_.actions.size(); ++a) use_begin_[a + 1] += use_begin_[a];
    roles = plan::layer_roles(store_, opt_);
    wl = plan::layer_weight_layout(store_, opt_);
    slices = lora_slices(store_, opt_);
    n_lora = plan::lora_param_count(store_, opt_);
    io = plan::io_layout(opt_);
    find_resident();
  }

  const plan::Plan& plan() const { return plan_; }
  const plan::Buffer& buffer(int b) const { return plan_.buffers[std::size_t(b)]; }
  const plan::Action& action(int a) const { return plan_.actions[std::size_t(a)]; }
  int end() const { return end_; }
  bool resident(const plan::Buffer& b) const { return b.first == 0 && b.last == end_; }

  // The buffer of `kind` (and layer / role / access, when given) action a uses, or -1.
  int operand(int a, plan::Kind kind, int layer = -2, plan::Role role = plan::Role::none,
              int access = -1) const {
    for (std::size_t u = use_begin_[std::size_t(a)]; u < use_begin_[std::size_t(a) + 1]; ++u) {
      const plan::Use& x = plan_.uses[u];
      const plan::Buffer& b = plan_.buffers[std::size_t(x.buffer)];
      if (b.kind != kind) continue;
      if (layer != -2 && b.layer != layer) continue;
      if (role != plan::Role::none && b.role != role) continue;
      if (access >= 0 && int(x.access) != access) continue;
      return x.buffer;
    }
    return -1;
  }
  int need(int a, plan::Kind kind, int layer = -2, plan::Role role = plan::Role::none,
           int access = -1) const {
    const int b = operand(a, kind, layer, role, access);
    if (b < 0)
      throw Error(std::string("backend: action ") + std::to_string(a) + " (" +
                  plan::op_name(action(a).op) + ") has no " + plan::kind_name(kind) + " operand");
    return b;
  }
  // The weights a compute action reads: its ring slot when streamed, else the layer's own.
  int weights_of(int a) const {
    const plan::Action& act = action(a);
    return act.slot >= 0 ? need(a, plan::Kind::weights, -1, plan::Role::slot)
                         : need(a, plan::Kind::weights, act.layer);
  }

  model::BlockDims dims() const {
    model::BlockDims d;
    d.batch = opt_.batch;
    d.seq = opt_.seq;
    d.hidden = store_.hidden;
    d.heads = store_.heads;
    d.kv_heads = store_.kv_heads;
    d.head_dim = store_.head_dim;
    d.rotary_dim = store_.rotary_dim();
    d.ffn = store_.ffn;
    d.eps = store_.norm_eps;
    return d;
  }

  // ---- pointers into a buffer, carved from the layouts ----
  template <class T, class F>
  static model::BlockSaved<T, F> saved(std::byte* base, const plan::SavedLayout& s) {
    auto t = [&](plan::Span x) { return reinterpret_cast<T*>(base + x.offset); };
    auto f = [&](plan::Span x) { return reinterpret_cast<F*>(base + x.offset); };
    return {t(s.xn1), t(s.q), t(s.k), t(s.v), t(s.att), t(s.h), t(s.xn2), t(s.gate), t(s.up),
            f(s.rstd1), f(s.rstd2), f(s.lse)};
  }
  template <class T, class F>
  static model::BlockForwardWork<T, F> forward_work(std::byte* ws, const plan::ForwardWork& fw) {
    return {reinterpret_cast<T*>(ws + fw.act.offset),
            reinterpret_cast<F*>(ws + fw.common.attn_row.offset),
            reinterpret_cast<F*>(ws + fw.common.cos.offset),
            reinterpret_cast<F*>(ws + fw.common.sin.offset)};
  }
  template <class T, class F>
  static model::BlockBackwardWork<T, F> backward_work(std::byte* ws, const plan::BackwardWork& bw) {
    auto t = [&](plan::Span x) { return reinterpret_cast<T*>(ws + x.offset); };
    auto f = [&](plan::Span x) { return reinterpret_cast<F*>(ws + x.offset); };
    return {t(bw.act),   t(bw.d_act),  t(bw.d_gate), t(bw.d_up),   t(bw.d_xn2),
            t(bw.d_att), t(bw.dq_rot), t(bw.dk_rot), t(bw.dv),     t(bw.dq),
            t(bw.dk),    t(bw.d_xn1),  f(bw.common.attn_row), f(bw.common.cos),
            f(bw.common.sin)};
  }
  // Where a forward / recompute action keeps what backward needs: the layer's activations
  // buffer when it saves, else temporaries in its workspace.
  struct ForwardPlace {
    plan::ForwardWork fw;
    std::byte* ws;
    std::byte* saved_base;
    plan::SavedLayout saved;
  };
  template <class BytesOf>
  ForwardPlace forward_place(int a, bool recompute, BytesOf&& bytes) const {
    const int l = action(a).layer;
    const bool saves = recompute || roles.saves_in_forward(l);
    ForwardPlace p;
    p.fw = plan::forward_work(store_, opt_, saves);
    p.ws = bytes(need(a, plan::Kind::workspace));
    if (saves) {
      p.saved = plan::saved_layout(store_, opt_);
      p.saved_base = bytes(need(a, plan::Kind::activations, l));
    } else {
      p.saved = p.fw.temp;
      p.saved_base = p.ws + p.fw.temp_base;
    }
    return p;
  }
  // The residual a forward reads and the one it writes (-1 when a recompute of a segment's last
  // layer rebuilds only what backward needs, not its output).
  int forward_input(int a) const {
    return need(a, plan::Kind::residual, action(a).layer, plan::Role::none, int(plan::Access::read));
  }
  int forward_output(int a) const {
    return operand(a, plan::Kind::residual, action(a).layer + 1, plan::Role::none,
                   int(plan::Access::write));
  }

  // Where a layer's input (0) / post-attention (1) norm and its q/k/v biases lie in its bytes.
  plan::Span norm_span(int which) const { return which == 0 ? wl.input_norm : wl.post_norm; }
  plan::Span bias_span(int proj) const {
    return proj == 0 ? wl.bias_q : proj == 1 ? wl.bias_k : wl.bias_v;
  }
  // Qwen2's q/k/v biases inside a layer's weight bytes (left null for models without them).
  template <class T>
  void bind_biases(const std::byte* w, const T* (&bias)[3]) const {
    if (!store_.qkv_bias) return;
    for (int p = 0; p < 3; ++p) bias[p] = reinterpret_cast<const T*>(w + bias_span(p).offset);
  }

  // LoRA of layer l bound to params / grads (fp32 flat buffers) with the run's dropout seeds;
  // without dropout when evaluating (PEFT's eval mode).
  template <class LoraT, class GradT>
  void bind_lora(int l, const float* params, float* grads, std::uint64_t seed_base,
                 std::uint64_t step_index, bool train, LoraT* lora, GradT* lgrads) const {
    const double scale = ops::linear::lora_scale(opt_.lora_alpha, opt_.lora_rank, opt_.rslora);
    for (const LoraSlice& s : slices) {
      if (s.layer != l) continue;
      auto& lo = lora[s.proj];
      lo.A = params + s.a;
      lo.B = params + s.b;
      lo.rank = opt_.lora_rank;
      lo.scale = decltype(lo.scale)(scale);
      lo.dropout = train ? float(opt_.lora_dropout) : 0.0f;
      lo.seed = ops::dropout_seed(seed_base, step_index, std::uint64_t(l), std::uint64_t(s.proj));
      lgrads[s.proj] = {grads + s.a, grads + s.b};
    }
  }

  // Whole-step buffers (-1 when the plan has none).
  int b_io = -1, b_embed = -1, b_head = -1, b_cublas = -1, b_lora = -1, b_grad = -1, b_m = -1,
      b_v = -1, b_hgrad = -1, b_hparam = -1;
  int b_kv = -1, b_gen = -1;   // generation: the KV cache and the decode scratch
  std::vector<int> b_weights;  // per layer: resident (device) or the pinned copy
  plan::LayerRoles roles;
  plan::LayerWeightLayout wl;
  plan::IoLayout io;
  std::vector<LoraSlice> slices;
  i64 n_lora = 0;

 private:
  ModelConfig store_;
  PlanOptions opt_;
  plan::Plan plan_;
  int end_ = 0;
  std::vector<std::size_t> use_begin_;

  void find_resident() {
    b_weights.assign(std::size_t(store_.layers), -1);
    for (std::size_t i = 0; i < plan_.buffers.size(); ++i) {
      const plan::Buffer& b = plan_.buffers[i];
      const int id = int(i);
      switch (b.kind) {
        case plan::Kind::io: b_io = id; break;
        case plan::Kind::cublas: b_cublas = id; break;
        case plan::Kind::embeddings: (b.role == plan::Role::embed_table ? b_embed : b_head) = id; break;
        case plan::Kind::lora: b_lora = id; break;
        case plan::Kind::lora_grads: b_grad = id; break;
        case plan::Kind::optimizer:
          if (b.role == plan::Role::moment1) b_m = id;
          if (b.role == plan::Role::moment2) b_v = id;
          if (b.role == plan::Role::host_grads) b_hgrad = id;
          if (b.role == plan::Role::host_params) b_hparam = id;
          break;
        case plan::Kind::weights:
          if (b.role != plan::Role::slot) b_weights[std::size_t(b.layer)] = id;
          break;
        case plan::Kind::kv_cache: b_kv = id; break;
        case plan::Kind::workspace:
          if (b.role == plan::Role::generation) b_gen = id;
          break;
        default: break;
      }
    }
  }
};

}  // namespace lvt::backend
