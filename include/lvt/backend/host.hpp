#pragma once
// The host backend: executes the planner's step program in the planned arena, serially, in
// program order (a valid order for every wait the plan states). One allocation for the device
// arena and one for the pinned pool, carved at the planned offsets; weights stored as the plan
// lays them out (quantized as bitsandbytes does) and dequantized on use; fetches and checkpoint
// copies are real copies between the two. Computes in fp32 (the plan is made with precision
// fp32, so every buffer is sized for floats).
//
// Poison mode fills every buffer with NaN when its lifetime ends, so a use after free shows up
// as a NaN loss or gradient.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/model/block.hpp"
#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"
#include "lvt/plan/planner.hpp"
#include "lvt/quant/blockwise.hpp"

namespace lvt::backend {

using plan::i64;

static_assert(ops::linear::lora_row_block == 16,
              "plan/layout.hpp's common_work sizes the LoRA scratch as ops::linear::scratch_elems "
              "with 16-row blocks: change both together");

// ---- frozen weights in the planned layout ---------------------------------------------------

// Quantizes w [out, in] as the options say into its place in a layer's weight bytes.
inline void store_linear(std::byte* base, const plan::LinearLayout& l, const PlanOptions& o,
                         const float* w, const std::string& name) {
  const i64 n = l.out * l.in;
  switch (o.quant) {
    case QuantKind::none:
      std::memcpy(base + l.data.offset, w, std::size_t(n) * sizeof(float));
      return;
    case QuantKind::int8:
      quant::quantize_int8(w, n, o.quant_block, reinterpret_cast<std::int8_t*>(base + l.data.offset),
                           reinterpret_cast<float*>(base + l.absmax.offset), name);
      return;
    case QuantKind::nf4:
    case QuantKind::fp4: {
      const quant::Code4 code = o.quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4;
      const quant::Quant4 q = quant::quantize4(code, w, n, o.quant_block, o.double_quant, name);
      std::memcpy(base + l.data.offset, q.packed.data(), q.packed.size());
      if (o.double_quant) {
        std::memcpy(base + l.absmax.offset, q.absmax_codes.data(), q.absmax_codes.size());
        std::memcpy(base + l.nested.offset, q.nested_absmax.data(), q.nested_absmax.size() * 4);
        std::memcpy(base + l.offset.offset, &q.offset, 4);
        std::memcpy(base + l.nested_map.offset, quant::dynamic_map, 256 * 4);
      } else {
        std::memcpy(base + l.absmax.offset, q.absmax.data(), q.absmax.size() * 4);
      }
      std::memcpy(base + l.code.offset, code == quant::Code4::nf4 ? quant::nf4_code : quant::fp4_code,
                  16 * 4);
      return;
    }
  }
}

// Dequantizes a whole linear weight into out [out, in] floats.
inline void load_linear(const std::byte* base, const plan::LinearLayout& l, const PlanOptions& o,
                        float* out) {
  const i64 n = l.out * l.in;
  switch (o.quant) {
    case QuantKind::none:
      std::memcpy(out, base + l.data.offset, std::size_t(n) * sizeof(float));
      return;
    case QuantKind::int8:
      quant::dequantize_int8(reinterpret_cast<const std::int8_t*>(base + l.data.offset),
                             reinterpret_cast<const float*>(base + l.absmax.offset), n,
                             o.quant_block, out);
      return;
    case QuantKind::nf4:
    case QuantKind::fp4: {
      const i64 blocks = plan::ceil_div(n, o.quant_block);
      const auto* packed = reinterpret_cast<const std::uint8_t*>(base + l.data.offset);
      const quant::Code4 code = o.quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4;
      if (!o.double_quant) {
        quant::dequantize_4bit(code, packed, reinterpret_cast<const float*>(base + l.absmax.offset),
                               n, o.quant_block, out);
        return;
      }
      // Decode the absmax per block into the tail of `out` (it is overwritten in order: block
      // b's absmax is read before element b * block is written, and blocks <= n / 2).
      std::vector<float> absmax(static_cast<std::size_t>(blocks));
      float offset;
      std::memcpy(&offset, base + l.offset.offset, 4);
      quant::dequantize_absmax(reinterpret_cast<const std::uint8_t*>(base + l.absmax.offset),
                               reinterpret_cast<const float*>(base + l.nested.offset), offset,
                               blocks, absmax.data(),
                               reinterpret_cast<const float*>(base + l.nested_map.offset));
      quant::dequantize_4bit(code, packed, absmax.data(), n, o.quant_block, out);
      return;
    }
  }
}

// The weights the host backend reads: every model trains with seven separate projections
// (phi3's fused qkv_proj / gate_up_proj are split on load by io/, as PEFT-style adapters need).
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

// The element ops of model/block.hpp's Ops, as the host reference runs them (any float type:
// the backend uses float, the block's gradient test double).
template <class T>
struct HostElementOps {
  void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, i64 rows, i64 dim, double eps) {
    ops::rmsnorm::forward(out, rstd, x, w, rows, dim, eps);
  }
  void rmsnorm_backward(T* dx, const T* dout, const T* x, const T* w, const T* rstd, i64 rows,
                        i64 dim) {
    ops::rmsnorm::backward(dx, static_cast<T*>(nullptr), dout, x, w, rstd, rows, dim);
  }
  void rope_forward(T* out, const T* x, const T* c, const T* s, i64 b, i64 t, i64 h, i64 hd,
                    i64 rot) {
    ops::rope::forward(out, x, c, s, b, t, h, hd, rot);
  }
  void rope_backward(T* dx, const T* dout, const T* c, const T* s, i64 b, i64 t, i64 h, i64 hd,
                     i64 rot) {
    ops::rope::backward(dx, dout, c, s, b, t, h, hd, rot);
  }
  void attention_forward(T* out, T* lse, T* row, const T* q, const T* k, const T* v, i64 b, i64 t,
                         i64 h, i64 kv, i64 hd) {
    ops::attention::forward(out, lse, row, q, k, v, b, t, h, kv, hd);
  }
  void attention_backward(T* dq, T* dk, T* dv, T* row, const T* dout, const T* q, const T* k,
                          const T* v, const T* out, const T* lse, i64 b, i64 t, i64 h, i64 kv,
                          i64 hd) {
    ops::attention::backward(dq, dk, dv, row, dout, q, k, v, out, lse, b, t, h, kv, hd);
  }
  void swiglu_forward(T* out, const T* g, const T* u, i64 rows, i64 cols) {
    ops::swiglu::forward(out, g, u, rows, cols);
  }
  void swiglu_backward(T* dg, T* du, const T* dout, const T* g, const T* u, i64 rows, i64 cols) {
    ops::swiglu::backward(dg, du, dout, g, u, rows, cols);
  }
  void add(T* out, const T* a, const T* b, i64 n) { ops::residual::forward(out, a, b, n); }
  void zero(T* x, i64 n) { std::fill_n(x, n, T(0)); }
};

struct StepStats {
  double loss_sum = 0;       // summed token losses of this micro-batch
  std::int64_t tokens = 0;   // tokens that counted (labels != -100)
  double grad_norm = 0;      // global LoRA grad norm before clipping (optimizer steps only)
  double mean() const { return tokens ? loss_sum / double(tokens) : 0.0; }
};

struct OptimizerSettings {
  ops::adamw::Hyper adamw{};
  double clip = 1.0;          // global-norm clip; <= 0: none
  std::int64_t step = 1;      // AdamW's step count (from 1)
};

class HostBackend {
 public:
  // Plans the model with these options at fp32 and allocates the arena and the pinned pool.
  HostBackend(const ModelConfig& model, PlanOptions options, bool poison = false)
      : model_(model), store_(storage_config(model)), poison_(poison) {
    options.precision = DType::fp32;  // the host reference computes and stores in fp32
    options.budget_bytes = 0;
    options.sm = 0;
    opt_ = options;
    if (const char* why = validate(model)) throw Error(std::string("model config: ") + why);
    if (model.rope_scaling == RopeScaling::longrope)
      throw Error("rope_scaling 'longrope' (Phi-4-mini) needs the per-dimension factor lists, "
                  "which the host backend does not apply; its plan is valid, training is not");
    plan_ = plan::make_plan(store_, opt_);
    if (plan_.error != plan::PlanError::ok) throw Error(plan::message(plan_.error));
    arena_.assign(std::size_t(plan_.summary.arena_bytes / 4 + 64), 0.0f);
    pinned_.assign(std::size_t(plan_.summary.pinned_bytes / 4 + 64), 0.0f);
    end_ = int(plan_.actions.size()) - 1;
    use_begin_.assign(plan_.actions.size() + 1, 0);
    for (const plan::Use& u : plan_.uses) ++use_begin_[std::size_t(u.action) + 1];
    for (std::size_t a = 0; a < plan_.actions.size(); ++a) use_begin_[a + 1] += use_begin_[a];
    roles_ = plan::layer_roles(store_, opt_);
    wl_ = plan::layer_weight_layout(store_, opt_);
    slices_ = lora_slices(store_, opt_);
    n_lora_ = plan::lora_param_count(store_, opt_);
    find_resident();
    if (poison_) poison_all();
  }

  const plan::Plan& plan() const { return plan_; }
  const ModelConfig& model() const { return model_; }
  const PlanOptions& options() const { return opt_; }
  const std::vector<LoraSlice>& lora_layout() const { return slices_; }
  i64 lora_count() const { return n_lora_; }
  // The fp32 LoRA master parameters: the host copy when the optimizer runs on the host.
  std::span<float> lora_params() {
    return {f(opt_.offload_optimizer ? b_hparam_ : b_lora_), std::size_t(n_lora_)};
  }
  std::span<float> lora_grads() { return {f(b_grad_), std::size_t(n_lora_)}; }
  std::span<float> adam_m() { return {f(b_m_), std::size_t(n_lora_)}; }
  std::span<float> adam_v() { return {f(b_v_), std::size_t(n_lora_)}; }
  // After writing lora_params(), make the device copy agree (offloaded optimizer).
  void sync_lora_to_device() {
    if (opt_.offload_optimizer) std::copy_n(f(b_hparam_), n_lora_, f(b_lora_));
  }
  void zero_grads() { std::fill_n(f(b_grad_), n_lora_, 0.0f); }

  // ---- frozen weights (io/ fills these, one tensor at a time) ----
  float* embed_table() { return f(b_embed_); }
  float* lm_head() { return model_.tied_embeddings ? f(b_embed_) : f(b_head_); }
  float* final_norm() {
    return f(b_head_) + (model_.tied_embeddings ? 0 : i64(model_.vocab) * model_.hidden);
  }
  std::byte* layer_bytes(int l) { return bytes(b_weights_[std::size_t(l)]); }
  void set_projection(int l, int proj, const float* w, const std::string& name) {
    store_linear(layer_bytes(l), wl_.linear[proj], opt_, w, name);
  }
  // A bitsandbytes 4-bit weight stored as it is (no requantization) when its format is the
  // plan's (code, block, double quantization); false otherwise (the caller dequantizes).
  bool set_projection_quant4(int l, int proj, const quant::Quant4& q) {
    const plan::LinearLayout& L = wl_.linear[proj];
    const bool nf4 = q.code == quant::Code4::nf4;
    if (q.n != L.out * L.in || q.block != opt_.quant_block || q.nested != opt_.double_quant ||
        (nf4 ? QuantKind::nf4 : QuantKind::fp4) != opt_.quant)
      return false;
    std::byte* base = layer_bytes(l);
    std::memcpy(base + L.data.offset, q.packed.data(), q.packed.size());
    if (q.nested) {
      std::memcpy(base + L.absmax.offset, q.absmax_codes.data(), q.absmax_codes.size());
      std::memcpy(base + L.nested.offset, q.nested_absmax.data(), q.nested_absmax.size() * 4);
      std::memcpy(base + L.offset.offset, &q.offset, 4);
      std::memcpy(base + L.nested_map.offset, q.nested_map.empty() ? quant::dynamic_map : q.nested_map.data(),
                  256 * 4);
    } else {
      std::memcpy(base + L.absmax.offset, q.absmax.data(), q.absmax.size() * 4);
    }
    std::memcpy(base + L.code.offset, nf4 ? quant::nf4_code : quant::fp4_code, 16 * 4);
    return true;
  }
  void set_norm(int l, int which, const float* w) {
    const plan::Span s = which == 0 ? wl_.input_norm : wl_.post_norm;
    std::memcpy(layer_bytes(l) + s.offset, w, std::size_t(s.bytes));
  }
  void set_bias(int l, int proj, const float* w) {
    const plan::Span s = proj == 0 ? wl_.bias_q : proj == 1 ? wl_.bias_k : wl_.bias_v;
    std::memcpy(layer_bytes(l) + s.offset, w, std::size_t(s.bytes));
  }
  // Dequantized projection (tests, merges).
  std::vector<float> projection(int l, int proj) {
    std::vector<float> w(std::size_t(wl_.linear[proj].out * wl_.linear[proj].in));
    load_linear(layer_bytes(l), wl_.linear[proj], opt_, w.data());
    return w;
  }

  // ---- running the step program ----
  // One micro-batch: tokens/targets [batch * seq]. Backward adds into the LoRA grads; with
  // `opt` the optimizer actions run (clip, AdamW, grads zeroed), else they are skipped
  // (gradient accumulation). grad_scale multiplies d loss (1 / accumulation steps).
  StepStats step(const std::int32_t* tokens, const std::int32_t* targets,
                 const OptimizerSettings* opt, double grad_scale, std::uint64_t dropout_seed_base,
                 std::uint64_t step_index) {
    return run(tokens, targets, true, opt, grad_scale, dropout_seed_base, step_index);
  }
  // Forward and loss only (no backward, no update).
  StepStats evaluate(const std::int32_t* tokens, const std::int32_t* targets) {
    return run(tokens, targets, false, nullptr, 1.0, 0, 0);
  }

 private:
  ModelConfig model_, store_;
  PlanOptions opt_;
  bool poison_;
  plan::Plan plan_;
  std::vector<float> arena_, pinned_;
  int end_ = 0;
  std::vector<std::size_t> use_begin_;
  plan::LayerRoles roles_;
  plan::LayerWeightLayout wl_;
  std::vector<LoraSlice> slices_;
  i64 n_lora_ = 0;
  int b_io_ = -1, b_embed_ = -1, b_head_ = -1, b_lora_ = -1, b_grad_ = -1, b_m_ = -1, b_v_ = -1,
      b_hgrad_ = -1, b_hparam_ = -1;
  std::vector<int> b_weights_;  // resident (device) or pinned copy, per layer

  std::byte* bytes(int b) {
    const plan::Buffer& x = plan_.buffers[std::size_t(b)];
    std::vector<float>& pool = x.memory == plan::Memory::device ? arena_ : pinned_;
    return reinterpret_cast<std::byte*>(pool.data()) + x.offset;
  }
  float* f(int b) { return b < 0 ? nullptr : reinterpret_cast<float*>(bytes(b)); }
  bool resident(const plan::Buffer& b) const { return b.first == 0 && b.last == end_; }

  void find_resident() {
    b_weights_.assign(std::size_t(store_.layers), -1);
    for (std::size_t i = 0; i < plan_.buffers.size(); ++i) {
      const plan::Buffer& b = plan_.buffers[i];
      const int id = int(i);
      switch (b.kind) {
        case plan::Kind::io: b_io_ = id; break;
        case plan::Kind::embeddings: (b.role == plan::Role::embed_table ? b_embed_ : b_head_) = id; break;
        case plan::Kind::lora: b_lora_ = id; break;
        case plan::Kind::lora_grads: b_grad_ = id; break;
        case plan::Kind::optimizer:
          if (b.role == plan::Role::moment1) b_m_ = id;
          if (b.role == plan::Role::moment2) b_v_ = id;
          if (b.role == plan::Role::host_grads) b_hgrad_ = id;
          if (b.role == plan::Role::host_params) b_hparam_ = id;
          break;
        case plan::Kind::weights:
          if (b.role != plan::Role::slot) b_weights_[std::size_t(b.layer)] = id;
          break;
        default: break;
      }
    }
  }

  void fill_nan(int b) {
    const plan::Buffer& x = plan_.buffers[std::size_t(b)];
    std::fill_n(reinterpret_cast<float*>(bytes(b)), x.bytes / 4, std::numeric_limits<float>::quiet_NaN());
  }
  void poison_all() {
    for (std::size_t b = 0; b < plan_.buffers.size(); ++b)
      if (!resident(plan_.buffers[b])) fill_nan(int(b));
  }

  // The buffer of `kind` (and role / layer, when given) an action uses, or -1.
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
      throw Error(std::string("host backend: action ") + std::to_string(a) + " (" +
                  plan::op_name(plan_.actions[std::size_t(a)].op) + ") has no " +
                  plan::kind_name(kind) + " operand");
    return b;
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

  // The Ops a block runs on: bound to one layer's weights, LoRA and scratch.
  struct LayerOps : HostElementOps<float> {
    const plan::LayerWeightLayout* wl;
    const PlanOptions* o;
    const std::byte* w;
    float* w_scratch;
    float* lora_scratch;
    ops::linear::Lora<float> lora[plan::proj_count];
    ops::linear::LoraGrads<float> grads[plan::proj_count];
    const float* bias[3] = {nullptr, nullptr, nullptr};

    const float* weight(int p) {
      if (o->quant == QuantKind::none)
        return reinterpret_cast<const float*>(w + wl->linear[p].data.offset);
      load_linear(w, wl->linear[p], *o, w_scratch);
      return w_scratch;
    }
    const float* norm(int which) const {
      return reinterpret_cast<const float*>(w + (which == 0 ? wl->input_norm : wl->post_norm).offset);
    }
    void linear_forward(int p, float* y, const float* x, i64 rows) {
      const float* W = weight(p);
      ops::linear::forward(y, lora_scratch, x, W, p < 3 ? bias[p] : nullptr, lora[p], rows,
                           wl->linear[p].in, wl->linear[p].out);
    }
    void linear_backward(int p, float* dx, const float* dy, const float* x, i64 rows) {
      const float* W = weight(p);
      ops::linear::backward(dx, grads[p], lora_scratch, dy, x, W, lora[p], rows, wl->linear[p].in,
                            wl->linear[p].out);
    }
  };

  LayerOps layer_ops(int a, int l, float* w_scratch, float* lora_scratch, bool trainable,
                     std::uint64_t seed_base, std::uint64_t step_index) {
    const plan::Action& act = plan_.actions[std::size_t(a)];
    const int wb = act.slot >= 0 ? need(a, plan::Kind::weights, -1, plan::Role::slot)
                                 : need(a, plan::Kind::weights, l);
    LayerOps ops_;
    ops_.wl = &wl_;
    ops_.o = &opt_;
    ops_.w = bytes(wb);
    ops_.w_scratch = w_scratch;
    ops_.lora_scratch = lora_scratch;
    if (store_.qkv_bias) {
      ops_.bias[0] = reinterpret_cast<const float*>(ops_.w + wl_.bias_q.offset);
      ops_.bias[1] = reinterpret_cast<const float*>(ops_.w + wl_.bias_k.offset);
      ops_.bias[2] = reinterpret_cast<const float*>(ops_.w + wl_.bias_v.offset);
    }
    if (trainable) {
      const float* params = f(b_lora_);
      float* grads = f(b_grad_);
      const float scale = float(ops::linear::lora_scale(opt_.lora_alpha, opt_.lora_rank, opt_.rslora));
      for (const LoraSlice& s : slices_) {
        if (s.layer != l) continue;
        auto& lo = ops_.lora[s.proj];
        lo.A = params + s.a;
        lo.B = params + s.b;
        lo.rank = opt_.lora_rank;
        lo.scale = scale;
        lo.dropout = float(opt_.lora_dropout);
        lo.seed = ops::dropout_seed(seed_base, step_index, std::uint64_t(l), std::uint64_t(s.proj));
        ops_.grads[s.proj] = {grads + s.a, grads + s.b};
      }
    }
    return ops_;
  }

  template <class Work>
  void rope_tables(const Work& w) {
    const int half = store_.rotary_dim() / 2;
    std::vector<float> inv(static_cast<std::size_t>(half));
    ops::rope::inv_freq(inv.data(), store_);
    ops::rope::tables(w.cos, w.sin, inv.data(), opt_.seq, half);
  }

  template <class Layout>
  model::BlockSaved<float> carve_saved(std::byte* base, const Layout& s) {
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(base + x.offset); };
    return {p(s.xn1), p(s.q), p(s.k), p(s.v), p(s.att), p(s.h), p(s.xn2), p(s.gate), p(s.up),
            p(s.rstd1), p(s.rstd2), p(s.lse)};
  }

  void forward_action(int a, int l, bool recompute, std::uint64_t seed_base, std::uint64_t step_index) {
    const bool saves = recompute || roles_.saves_in_forward(l);
    const plan::ForwardWork fw = plan::forward_work(store_, opt_, saves);
    std::byte* ws = bytes(need(a, plan::Kind::workspace));
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    model::BlockForwardWork<float> w{p(fw.act), p(fw.common.attn_row), p(fw.common.cos),
                                     p(fw.common.sin)};
    rope_tables(w);
    const plan::SavedLayout sl = plan::saved_layout(store_, opt_);
    const model::BlockSaved<float> s =
        saves ? carve_saved(bytes(need(a, plan::Kind::activations, l)), sl)
              : carve_saved(ws + fw.temp_base, fw.temp);
    const float* x = f(need(a, plan::Kind::residual, l, plan::Role::none, int(plan::Access::read)));
    const int out_b = operand(a, plan::Kind::residual, l + 1, plan::Role::none, int(plan::Access::write));
    // A recompute of a segment's last layer rebuilds only what backward needs, not its output.
    std::vector<float> discard;
    float* out = out_b >= 0 ? f(out_b) : nullptr;
    if (!out) {
      discard.resize(std::size_t(plan::tokens(opt_) * store_.hidden));
      out = discard.data();
    }
    LayerOps ops_ = layer_ops(a, l, p(fw.common.weight), p(fw.common.lora), roles_.trainable(opt_, l),
                              seed_base, step_index);
    model::block_forward(ops_, dims(), s, w, x, out);
  }

  void backward_action(int a, int l, std::uint64_t seed_base, std::uint64_t step_index) {
    const plan::BackwardWork bw = plan::backward_work(store_, opt_);
    std::byte* ws = bytes(need(a, plan::Kind::workspace));
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    model::BlockBackwardWork<float> w{p(bw.act),    p(bw.d_act), p(bw.d_gate), p(bw.d_up),
                                      p(bw.d_xn2),  p(bw.d_att), p(bw.dq_rot), p(bw.dk_rot),
                                      p(bw.dv),     p(bw.dq),    p(bw.dk),     p(bw.d_xn1),
                                      p(bw.common.attn_row), p(bw.common.cos), p(bw.common.sin)};
    rope_tables(w);
    const model::BlockSaved<float> s =
        carve_saved(bytes(need(a, plan::Kind::activations, l)), plan::saved_layout(store_, opt_));
    const float* x = f(need(a, plan::Kind::residual, l));
    float* g = f(need(a, plan::Kind::gradients));
    LayerOps ops_ = layer_ops(a, l, p(bw.common.weight), p(bw.common.lora), roles_.trainable(opt_, l),
                              seed_base, step_index);
    model::block_backward(ops_, dims(), s, w, x, g);
  }

  StepStats loss_action(int a, bool backward, double grad_scale) {
    const plan::LossWork lw = plan::loss_work(store_, opt_);
    std::byte* ws = bytes(need(a, plan::Kind::workspace));
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    const i64 n = plan::tokens(opt_), H = store_.hidden;
    const float* x = f(need(a, plan::Kind::residual, store_.layers));
    const auto* targets = reinterpret_cast<const std::int32_t*>(f(b_io_)) + n;
    ops::rmsnorm::forward(p(lw.xf), p(lw.rstd), x, final_norm(), n, H, store_.norm_eps);
    const ops::cross_entropy::Result r = ops::cross_entropy::forward_backward(
        backward ? p(lw.dxf) : static_cast<float*>(nullptr), p(lw.chunk), p(lw.xf), lm_head(),
        targets, n, H, store_.vocab, plan::loss_chunk_tokens(store_, opt_), grad_scale);
    StepStats st;
    st.loss_sum = r.loss_sum;
    st.tokens = r.count;
    if (backward) {
      const int gb = operand(a, plan::Kind::gradients);
      if (gb >= 0) {
        float* g = f(gb);
        std::fill_n(g, n * H, 0.0f);
        ops::rmsnorm::backward(g, static_cast<float*>(nullptr), p(lw.dxf), x, final_norm(),
                               p(lw.rstd), n, H);
      }
    }
    return st;
  }

  void optimizer_action(const OptimizerSettings& s, StepStats& st) {
    float* params = f(opt_.offload_optimizer ? b_hparam_ : b_lora_);
    float* grads = f(opt_.offload_optimizer ? b_hgrad_ : b_grad_);
    const double norm = std::sqrt(ops::grad_clip::sum_squares(grads, n_lora_));
    st.grad_norm = norm;
    if (!std::isfinite(norm))
      throw Error("non-finite LoRA gradient norm (" + std::to_string(norm) + ") at optimizer step " +
                  std::to_string(s.step));
    if (s.clip > 0) ops::grad_clip::scale(grads, n_lora_, ops::grad_clip::clip_coef(norm, s.clip));
    ops::adamw::step(params, f(b_m_), f(b_v_), static_cast<const float*>(grads), n_lora_, s.adamw, s.step);
    std::fill_n(f(b_grad_), n_lora_, 0.0f);
    if (b_hgrad_ >= 0) std::fill_n(f(b_hgrad_), n_lora_, 0.0f);
  }

  void copy(int from, int to) {
    std::memcpy(bytes(to), bytes(from), std::size_t(std::min(plan_.buffers[std::size_t(from)].bytes,
                                                              plan_.buffers[std::size_t(to)].bytes)));
  }

  StepStats run(const std::int32_t* tokens, const std::int32_t* targets, bool train,
                const OptimizerSettings* opt, double grad_scale, std::uint64_t seed_base,
                std::uint64_t step_index) {
    const i64 n = plan::tokens(opt_);
    for (i64 i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= store_.vocab)
        throw Error("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                    " is outside the vocabulary (vocab_size " + std::to_string(store_.vocab) + ")");
    auto* io = reinterpret_cast<std::int32_t*>(f(b_io_));
    std::copy_n(tokens, n, io);
    std::copy_n(targets, n, io + n);
    StepStats st;
    for (int a = 0; a <= end_; ++a) {
      const plan::Action& act = plan_.actions[std::size_t(a)];
      const int l = act.layer;
      bool stop = false;
      switch (act.op) {
        case plan::Op::embed:
          ops::embedding::forward(f(need(a, plan::Kind::residual, 0)), io, embed_table(), n,
                                  store_.vocab, store_.hidden);
          break;
        case plan::Op::fetch_weights:
          copy(need(a, plan::Kind::weights, l), need(a, plan::Kind::weights, -1, plan::Role::slot));
          break;
        case plan::Op::forward: forward_action(a, l, false, seed_base, step_index); break;
        case plan::Op::save_checkpoint:
          copy(need(a, plan::Kind::residual, l, plan::Role::none, int(plan::Access::read)),
               need(a, plan::Kind::residual, l, plan::Role::checkpoint));
          break;
        case plan::Op::load_checkpoint:
          copy(need(a, plan::Kind::residual, l, plan::Role::checkpoint),
               need(a, plan::Kind::residual, l, plan::Role::none, int(plan::Access::write)));
          break;
        case plan::Op::loss: {
          const StepStats ls = loss_action(a, train, grad_scale);
          st.loss_sum = ls.loss_sum;
          st.tokens = ls.tokens;
          if (!std::isfinite(st.loss_sum))
            throw Error("non-finite loss (" + std::to_string(st.loss_sum) + ") in micro-batch " +
                        std::to_string(step_index + 1));
          stop = !train;
          break;
        }
        case plan::Op::recompute: forward_action(a, l, true, seed_base, step_index); break;
        case plan::Op::backward: backward_action(a, l, seed_base, step_index); break;
        case plan::Op::grads_to_host:
          if (opt) {  // accumulate into the host copy only on an optimizer step
            const float* g = f(b_grad_);
            float* h = f(b_hgrad_);
            for (i64 i = 0; i < n_lora_; ++i) h[i] = g[i];
          }
          break;
        case plan::Op::optimizer_step:
          if (opt) optimizer_action(*opt, st);
          break;
        case plan::Op::params_to_device:
          if (opt) std::copy_n(f(b_hparam_), n_lora_, f(b_lora_));
          break;
      }
      if (poison_)
        for (std::size_t b = 0; b < plan_.buffers.size(); ++b) {
          const plan::Buffer& x = plan_.buffers[b];
          if (x.last == a && !resident(x)) fill_nan(int(b));
        }
      if (stop) break;
    }
    if (poison_ && !train) poison_all();
    return st;
  }
};

}  // namespace lvt::backend
