#pragma once
// The host backend: executes the planner's step program in the planned arena, one action at a
// time in program order (a valid order for every wait the plan states), each action's ops on
// the backend's threads (ops/parallel.hpp: one OpenMP team; matrix products through the BLAS,
// split over the team; attention per batch x head; element ops by rows). One allocation for the
// device arena and one for the pinned pool, carved at the planned offsets; weights stored as
// the plan lays them out (quantized as bitsandbytes does) and dequantized on use; fetches and
// checkpoint copies are real copies between the two. Computes in fp32 (the plan is made with
// precision fp32, so every buffer is sized for floats, and with host_threads = the backend's
// thread count, so per-thread scratch is planned too: nothing is allocated during a step).
//
// Determinism: for a fixed thread count a step gives the same bits every time.
//
// Poison mode fills every buffer with NaN when its lifetime ends, so a use after free shows up
// as a NaN loss or gradient.
#include <algorithm>
#include <chrono>
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
#include "lvt/ops/decode_attention.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/parallel.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"
#include "lvt/backend/plan_index.hpp"
#include "lvt/backend/weights.hpp"
#include "lvt/plan/planner.hpp"
#include "lvt/quant/blockwise.hpp"

namespace lvt::backend {

using plan::i64;

static_assert(ops::linear::lora_row_block == plan::host_lora_block_rows,
              "plan/layout.hpp's common_work sizes the LoRA scratch as ops::linear::scratch_elems "
              "with the same row blocks: change both together");
static_assert(ops::attention::block_rows == plan::host_attention_block_rows,
              "plan/layout.hpp's attention_scratch_bytes sizes ops::attention::scratch_elems: "
              "change both together");
static_assert([] {
  ModelConfig m;
  m.heads = 9;
  m.kv_heads = 3;
  m.head_dim = 64;
  PlanOptions o;
  o.precision = DType::fp32;
  o.batch = 3;
  o.seq = 100;
  o.host_threads = 5;
  return plan::attention_scratch_bytes(m, o) ==
         4 * ops::attention::scratch_elems(3, 100, 9, 3, 64, 5);
}(), "plan::attention_scratch_bytes and ops::attention::scratch_elems disagree");

// Where a host step's time goes (HostBackend::set_profiling): wall seconds and calls per kind of
// op, summed over steps until reset().
struct HostProfile {
  enum Op : int {
    embed, norm, dequant, linear_fwd, linear_bwd, lora_fwd, lora_bwd, rope, attention_fwd,
    attention_bwd, swiglu, elementwise, loss, optimizer, copies, count
  };
  static constexpr const char* names[count] = {
      "embedding", "rmsnorm", "dequantize", "linear x W^T", "linear dy W", "LoRA forward",
      "LoRA backward", "RoPE", "attention forward", "attention backward", "SwiGLU",
      "add / zero", "lm-head + cross-entropy", "clip + AdamW", "fetch / checkpoint copies"};
  double seconds[count] = {};
  std::int64_t calls[count] = {};
  void reset() { *this = HostProfile{}; }
  double total_s() const {
    double t = 0;
    for (double x : seconds) t += x;
    return t;
  }
};

// Adds the time until it goes out of scope to `op` of the profile (nothing when null).
class Timed {
 public:
  Timed(HostProfile* p, HostProfile::Op op) : p_(p), op_(op) {
    if (p_) t0_ = std::chrono::steady_clock::now();
  }
  ~Timed() {
    if (!p_) return;
    p_->seconds[op_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    p_->calls[op_]++;
  }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  HostProfile* p_;
  HostProfile::Op op_;
  std::chrono::steady_clock::time_point t0_;
};

// The element ops of model/block.hpp's Ops, as the host reference runs them (any float type:
// the backend uses float, the block's gradient test double). positions [batch * seq] (null:
// 0..seq-1 in every row) are the step's, for RoPE and attention over packed rows.
// `threads` is the thread count the attention scratch was planned for; `profile` (may be null)
// collects the time of each op.
template <class T>
struct HostElementOps {
  using P = HostProfile;
  const std::int32_t* positions = nullptr;
  int threads = 1;
  HostProfile* profile = nullptr;
  void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, i64 rows, i64 dim, double eps) {
    Timed t(profile, P::norm);
    ops::rmsnorm::forward(out, rstd, x, w, rows, dim, eps);
  }
  void rmsnorm_backward(T* dx, const T* dout, const T* x, const T* w, const T* rstd, i64 rows,
                        i64 dim) {
    Timed t(profile, P::norm);
    ops::rmsnorm::backward(dx, static_cast<T*>(nullptr), dout, x, w, rstd, rows, dim);
  }
  void rope_forward(T* out, const T* x, const T* c, const T* s, i64 b, i64 t, i64 h, i64 hd,
                    i64 rot) {
    Timed tm(profile, P::rope);
    ops::rope::forward(out, x, c, s, b, t, h, hd, rot, positions);
  }
  void rope_backward(T* dx, const T* dout, const T* c, const T* s, i64 b, i64 t, i64 h, i64 hd,
                     i64 rot) {
    Timed tm(profile, P::rope);
    ops::rope::backward(dx, dout, c, s, b, t, h, hd, rot, positions);
  }
  void attention_forward(T* out, T* lse, T* scratch, const T* q, const T* k, const T* v, i64 b,
                         i64 t, i64 h, i64 kv, i64 hd) {
    Timed tm(profile, P::attention_fwd);
    ops::attention::forward(out, lse, scratch, q, k, v, b, t, h, kv, hd, positions, threads);
  }
  void attention_backward(T* dq, T* dk, T* dv, T* scratch, const T* dout, const T* q, const T* k,
                          const T* v, const T* out, const T* lse, i64 b, i64 t, i64 h, i64 kv,
                          i64 hd) {
    Timed tm(profile, P::attention_bwd);
    ops::attention::backward(dq, dk, dv, scratch, dout, q, k, v, out, lse, b, t, h, kv, hd,
                             positions, threads);
  }
  void swiglu_forward(T* out, const T* g, const T* u, i64 rows, i64 cols) {
    Timed t(profile, P::swiglu);
    ops::swiglu::forward(out, g, u, rows, cols);
  }
  void swiglu_backward(T* dg, T* du, const T* dout, const T* g, const T* u, i64 rows, i64 cols) {
    Timed t(profile, P::swiglu);
    ops::swiglu::backward(dg, du, dout, g, u, rows, cols);
  }
  void add(T* out, const T* a, const T* b, i64 n) {
    Timed t(profile, P::elementwise);
    ops::residual::forward(out, a, b, n);
  }
  void zero(T* x, i64 n) {
    Timed t(profile, P::elementwise);
    ops::residual::zero(x, n);
  }
};

class HostBackend {
 public:
  // Plans the model with these options at fp32 and allocates the arena and the pinned pool.
  // threads: 0 for every available core, else 1..available (more is an error naming both).
  HostBackend(const ModelConfig& model, PlanOptions options, bool poison = false, int threads = 0)
      : model_(model), store_(storage_config(model)), poison_(poison),
        threads_(ops::parallel::resolve_threads(threads)) {
    options.precision = DType::fp32;  // the host reference computes and stores in fp32
    options.budget_bytes = 0;
    options.sm = 0;
    options.host_threads = threads_;  // per-thread scratch is planned for these threads
    opt_ = options;
    if (const char* why = validate(model)) throw Error(std::string("model config: ") + why);
    if (model.rope_scaling == RopeScaling::longrope)
      throw Error("rope_scaling 'longrope' (Phi-4-mini) needs the per-dimension factor lists, "
                  "which the backends do not apply; its plan is valid, training is not");
    idx_ = PlanIndex(store_, opt_);
    arena_.assign(std::size_t(plan().summary.arena_bytes / 4 + 64), 0.0f);
    pinned_.assign(std::size_t(plan().summary.pinned_bytes / 4 + 64), 0.0f);
    if (poison_) poison_all();
    ops::matmul::blas::setup();
  }

  static constexpr const char* name() { return "host"; }
  // The threads every op of a step runs on.
  int threads() const { return threads_; }
  // Per-op wall time of the following steps (profile()), or none (the default: no clock reads).
  void set_profiling(bool on) { profiling_ = on; }
  HostProfile& profile() { return profile_; }
  static constexpr bool has_poison_mode = true;
  const plan::Plan& plan() const { return idx_.plan(); }
  const ModelConfig& model() const { return model_; }
  const PlanOptions& options() const { return opt_; }
  const std::vector<LoraSlice>& lora_layout() const { return idx_.slices; }
  i64 lora_count() const { return idx_.n_lora; }
  // The fp32 LoRA master parameters: the host copy when the optimizer runs on the host.
  std::span<float> lora_params() {
    return {f(opt_.offload_optimizer ? idx_.b_hparam : idx_.b_lora), std::size_t(idx_.n_lora)};
  }
  std::span<float> lora_grads() { return {f(idx_.b_grad), std::size_t(idx_.n_lora)}; }
  std::span<float> adam_m() { return {f(idx_.b_m), std::size_t(idx_.n_lora)}; }
  std::span<float> adam_v() { return {f(idx_.b_v), std::size_t(idx_.n_lora)}; }
  // After writing lora_params(), make the device copy agree (offloaded optimizer).
  void sync_lora_to_device() {
    if (opt_.offload_optimizer) std::copy_n(f(idx_.b_hparam), idx_.n_lora, f(idx_.b_lora));
  }
  // Host-side state (params, moments) is always current on the host backend.
  void sync_lora_from_device() {}
  void zero_grads() { ops::residual::zero(f(idx_.b_grad), idx_.n_lora); }

  // ---- frozen weights (io/ fills these, one tensor at a time) ----
  float* embed_table() { return f(idx_.b_embed); }
  float* lm_head() { return model_.tied_embeddings ? f(idx_.b_embed) : f(idx_.b_head); }
  float* final_norm() {
    return f(idx_.b_head) + (model_.tied_embeddings ? 0 : i64(model_.vocab) * model_.hidden);
  }
  void set_embed_table(const float* w) {
    std::copy_n(w, i64(model_.vocab) * model_.hidden, embed_table());
  }
  void set_lm_head(const float* w) { std::copy_n(w, i64(model_.vocab) * model_.hidden, lm_head()); }
  void set_final_norm(const float* w) { std::copy_n(w, model_.hidden, final_norm()); }
  std::byte* layer_bytes(int l) { return bytes(idx_.b_weights[std::size_t(l)]); }
  void set_projection(int l, int proj, const float* w, const std::string& name) {
    store_linear(layer_bytes(l), idx_.wl.linear[proj], opt_, w, name);
  }
  // A bitsandbytes 4-bit weight stored as it is (no requantization) when its format is the
  // plan's (code, block, double quantization); false otherwise (the caller dequantizes).
  bool set_projection_quant4(int l, int proj, const quant::Quant4& q) {
    return store_quant4(layer_bytes(l), idx_.wl.linear[proj], opt_, q);
  }
  void set_norm(int l, int which, const float* w) {
    const plan::Span s = idx_.norm_span(which);
    std::memcpy(layer_bytes(l) + s.offset, w, std::size_t(s.bytes));
  }
  void set_bias(int l, int proj, const float* w) {
    const plan::Span s = idx_.bias_span(proj);
    std::memcpy(layer_bytes(l) + s.offset, w, std::size_t(s.bytes));
  }
  // Dequantized projection (tests, merges).
  std::vector<float> projection(int l, int proj) {
    const plan::LinearLayout& L = idx_.wl.linear[proj];
    std::vector<float> w(std::size_t(L.out * L.in));
    load_linear(layer_bytes(l), L, opt_, w.data());
    return w;
  }

  // ---- running the step program ----
  // One micro-batch: tokens/targets [batch * seq]. Backward adds into the LoRA grads; with
  // `opt` the optimizer actions run (clip, AdamW, grads zeroed), else they are skipped
  // (gradient accumulation). grad_scale multiplies d loss (1 / accumulation steps).
  // positions [batch * seq] (nullptr: 0..seq-1 in every row): each token's position within its
  // example; a 0 starts a new example. Attention never looks at an earlier example's tokens and
  // RoPE uses these positions.
  StepStats step(const std::int32_t* tokens, const std::int32_t* targets, const std::int32_t* positions,
                 const OptimizerSettings* opt, double grad_scale, std::uint64_t dropout_seed_base,
                 std::uint64_t step_index) {
    return run(tokens, targets, positions, true, opt, grad_scale, dropout_seed_base, step_index);
  }
  StepStats step(const std::int32_t* tokens, const std::int32_t* targets,
                 const OptimizerSettings* opt, double grad_scale, std::uint64_t dropout_seed_base,
                 std::uint64_t step_index) {
    return step(tokens, targets, nullptr, opt, grad_scale, dropout_seed_base, step_index);
  }
  // Forward and loss only (no backward, no update).
  StepStats evaluate(const std::int32_t* tokens, const std::int32_t* targets, const std::int32_t* positions) {
    return run(tokens, targets, positions, false, nullptr, 1.0, 0, 0);
  }
  StepStats evaluate(const std::int32_t* tokens, const std::int32_t* targets) {
    return evaluate(tokens, targets, nullptr);
  }
  // The step program's forward (embed, fetches, every layer, final norm) and the fp32 logits of
  // every token, [batch * seq, vocab]: the full-sequence reference generation is checked against.
  std::vector<float> forward_logits(const std::int32_t* tokens, const std::int32_t* positions = nullptr) {
    std::vector<float> logits(std::size_t(plan::tokens(opt_) * store_.vocab));
    logits_sink_ = logits.data();
    try {
      run(tokens, tokens, positions, false, nullptr, 1.0, 0, 0);
    } catch (...) {
      logits_sink_ = nullptr;
      throw;
    }
    logits_sink_ = nullptr;
    return logits;
  }

  // ---- generation (a plan with generate_context > 0) ----
  // Tokens [0, n) of sequence `seq` (< batch) at positions pos .. pos + n - 1 run through every
  // layer (prefill in chunks of plan::generate_rows, decode one at a time) with the same block
  // code, weights, LoRA (no dropout) and RoPE as the step; their keys and values go into the KV
  // cache, attention reads the cache. Returns the fp32 logits [vocab] of the last token, in the
  // planned decode scratch (valid until the next call).
  i64 generate_context() const { return opt_.generate_context; }
  const float* decode(int seq, const std::int32_t* tokens, i64 n, i64 pos) {
    check_decode(idx_.b_kv >= 0, opt_, seq, n, pos);
    check_tokens(tokens, n, store_.vocab);
    ops::parallel::set_threads(threads_);
    const plan::GenerateWork gw = plan::generate_work(store_, opt_);
    std::byte* ws = bytes(idx_.b_gen);
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    const i64 H = store_.hidden, half = store_.rotary_dim() / 2, rows = plan::generate_rows(opt_);
    if (!decode_tables_ready_) {  // every position of the context, once
      std::vector<float> inv(static_cast<std::size_t>(half));
      ops::rope::inv_freq(inv.data(), store_);
      ops::rope::tables(p(gw.cos), p(gw.sin), inv.data(), opt_.generate_context, int(half));
      decode_tables_ready_ = true;
    }
    const auto s = PlanIndex::saved<float, float>(ws + gw.saved_base, gw.saved);
    for (i64 c0 = 0; c0 < n; c0 += rows) {
      const i64 r = std::min(rows, n - c0), at = pos + c0;
      float* x = p(gw.x);
      float* y = p(gw.y);
      ops::embedding::forward(x, tokens + c0, embed_table(), r, store_.vocab, H);
      model::BlockDims d = idx_.dims();
      d.batch = 1;
      d.seq = r;
      const model::BlockForwardWork<float, float> w{p(gw.act), p(gw.attn_row),
                                                     p(gw.cos) + at * half, p(gw.sin) + at * half};
      for (int l = 0; l < store_.layers; ++l) {
        DecodeOps ops_ = decode_ops(l, gw, ws, seq, at);
        model::block_forward(ops_, d, s, w, x, y);
        std::swap(x, y);
      }
      if (c0 + r < n) continue;
      const float* last = x + (r - 1) * H;
      ops::rmsnorm::forward(p(gw.xf), p(gw.rstd), last, final_norm(), 1, H, store_.norm_eps);
      ops::matmul::matvec(p(gw.logits), p(gw.xf), lm_head(), H, static_cast<const float*>(nullptr),
                          i64(store_.vocab), H);
    }
    return p(gw.logits);
  }

 private:
  ModelConfig model_, store_;
  PlanOptions opt_;
  bool poison_;
  int threads_;
  bool profiling_ = false;
  HostProfile profile_;
  PlanIndex idx_;
  std::vector<float> arena_, pinned_;
  float* logits_sink_ = nullptr;     // forward_logits: where the loss action writes logits
  bool decode_tables_ready_ = false;  // the decode scratch's RoPE tables are computed

  std::byte* bytes(int b) {
    const plan::Buffer& x = idx_.buffer(b);
    std::vector<float>& pool = x.memory == plan::Memory::device ? arena_ : pinned_;
    return reinterpret_cast<std::byte*>(pool.data()) + x.offset;
  }
  float* f(int b) { return b < 0 ? nullptr : reinterpret_cast<float*>(bytes(b)); }
  std::int32_t* io(plan::Span s) { return reinterpret_cast<std::int32_t*>(bytes(idx_.b_io) + s.offset); }

  void fill_nan(int b) {
    std::fill_n(f(b), idx_.buffer(b).bytes / 4, std::numeric_limits<float>::quiet_NaN());
  }
  void poison_all() {
    for (std::size_t b = 0; b < plan().buffers.size(); ++b)
      if (!idx_.resident(plan().buffers[b])) fill_nan(int(b));
  }

  // The Ops a block runs on: bound to one layer's weights, LoRA and scratch.
  HostProfile* prof() { return profiling_ ? &profile_ : nullptr; }

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
      Timed t(profile, P::dequant);
      load_linear(w, wl->linear[p], *o, w_scratch);
      return w_scratch;
    }
    const float* norm(int which) const {
      return reinterpret_cast<const float*>(w + (which == 0 ? wl->input_norm : wl->post_norm).offset);
    }
    // ops::linear::forward / backward, their base product and LoRA part timed apart.
    void linear_forward(int p, float* y, const float* x, i64 rows) {
      const float* W = weight(p);
      const i64 in = wl->linear[p].in, out = wl->linear[p].out;
      {
        Timed t(profile, P::linear_fwd);
        ops::linear::forward(y, lora_scratch, x, W, p < 3 ? bias[p] : nullptr,
                             ops::linear::Lora<float>{}, rows, in, out);
      }
      if (!lora[p].active()) return;
      Timed t(profile, P::lora_fwd);
      ops::linear::detail::check(x, lora_scratch, lora[p], rows, in, out);
      ops::linear::detail::lora_forward(y, lora_scratch, x, lora[p], rows, in, out);
    }
    void linear_backward(int p, float* dx, const float* dy, const float* x, i64 rows) {
      const float* W = weight(p);
      const i64 in = wl->linear[p].in, out = wl->linear[p].out;
      {
        Timed t(profile, P::linear_bwd);
        ops::linear::backward(dx, grads[p], lora_scratch, dy, x, W, ops::linear::Lora<float>{},
                              rows, in, out);
      }
      if (!lora[p].active()) return;
      Timed t(profile, P::lora_bwd);
      ops::linear::detail::check(x, lora_scratch, lora[p], rows, in, out);
      ops::linear::detail::lora_backward(dx, grads[p], lora_scratch, dy, x, lora[p], rows, in, out);
    }
  };

  LayerOps layer_ops(int a, const plan::CommonWork& cw, std::byte* ws, std::uint64_t seed_base,
                     std::uint64_t step_index, bool train) {
    const int l = idx_.action(a).layer;
    LayerOps ops_;
    ops_.wl = &idx_.wl;
    ops_.o = &opt_;
    ops_.w = bytes(idx_.weights_of(a));
    ops_.w_scratch = reinterpret_cast<float*>(ws + cw.weight.offset);
    ops_.lora_scratch = reinterpret_cast<float*>(ws + cw.lora.offset);
    idx_.bind_biases(ops_.w, ops_.bias);
    ops_.positions = io(idx_.io.positions);
    ops_.threads = threads_;
    ops_.profile = prof();
    if (idx_.roles.trainable(opt_, l))
      idx_.bind_lora(l, f(idx_.b_lora), f(idx_.b_grad), seed_base, step_index, train, ops_.lora,
                     ops_.grads);
    return ops_;
  }

  // A layer's Ops for generation: the step's, with attention over the KV cache. block_forward
  // calls attention_forward with this chunk's k and v (after RoPE): they are appended to the
  // cache at `pos`, and the chunk's queries attend to every cached position up to their own.
  struct DecodeOps : LayerOps {
    float* k_cache;  // [context, kv_heads, head_dim] of this layer and sequence
    float* v_cache;
    i64 pos;
    // One row (a decode step): a matrix-vector product, W read once without packing.
    void linear_forward(int p, float* y, const float* x, i64 rows) {
      if (rows != 1) return LayerOps::linear_forward(p, y, x, rows);
      const plan::LinearLayout& L = wl->linear[p];
      ops::matmul::matvec(y, x, weight(p), L.in, p < 3 ? bias[p] : nullptr, L.out, L.in);
      if (lora[p].active())
        ops::linear::detail::lora_forward(y, lora_scratch, x, lora[p], 1, L.in, L.out);
    }
    void attention_forward(float* out, float*, float* row, const float* q, const float* k,
                           const float* v, i64, i64 t, i64 h, i64 kv, i64 hd) {
      std::copy_n(k, t * kv * hd, k_cache + pos * kv * hd);
      std::copy_n(v, t * kv * hd, v_cache + pos * kv * hd);
      ops::decode_attention::forward(out, row, q, k_cache, v_cache, t, pos, h, kv, hd, threads);
    }
  };

  DecodeOps decode_ops(int l, const plan::GenerateWork& gw, std::byte* ws, int seq, i64 pos) {
    DecodeOps ops_;
    ops_.wl = &idx_.wl;
    ops_.o = &opt_;
    ops_.w = bytes(idx_.b_weights[std::size_t(l)]);  // resident, or the pinned copy (host memory)
    ops_.w_scratch = reinterpret_cast<float*>(ws + gw.weight.offset);
    ops_.lora_scratch = reinterpret_cast<float*>(ws + gw.lora.offset);
    idx_.bind_biases(ops_.w, ops_.bias);
    ops_.threads = threads_;
    if (idx_.roles.trainable(opt_, l))
      idx_.bind_lora(l, f(idx_.b_lora), f(idx_.b_grad), 0, 0, false, ops_.lora, ops_.grads);
    const i64 kvd = store_.kv_dim(), ctx = opt_.generate_context;
    float* layer = f(idx_.b_kv) + plan::kv_cache_layer_bytes(store_, opt_) / 4 * l;
    ops_.k_cache = layer + i64(seq) * ctx * kvd;
    ops_.v_cache = layer + i64(opt_.batch) * ctx * kvd + i64(seq) * ctx * kvd;
    ops_.pos = pos;
    return ops_;
  }

  void rope_tables(float* cos, float* sin) {
    const int half = store_.rotary_dim() / 2;
    std::vector<float> inv(static_cast<std::size_t>(half));
    ops::rope::inv_freq(inv.data(), store_);
    ops::rope::tables(cos, sin, inv.data(), opt_.seq, half);
  }

  void forward_action(int a, bool recompute, std::uint64_t seed_base, std::uint64_t step_index,
                      bool train) {
    const PlanIndex::ForwardPlace p =
        idx_.forward_place(a, recompute, [&](int b) { return bytes(b); });
    const auto w = PlanIndex::forward_work<float, float>(p.ws, p.fw);
    rope_tables(w.cos, w.sin);
    const auto s = PlanIndex::saved<float, float>(p.saved_base, p.saved);
    const float* x = f(idx_.forward_input(a));
    // A recompute of a segment's last layer rebuilds only what backward needs: no output.
    float* out = f(idx_.forward_output(a));
    LayerOps ops_ = layer_ops(a, p.fw.common, p.ws, seed_base, step_index, train);
    model::block_forward(ops_, idx_.dims(), s, w, x, out);
  }

  void backward_action(int a, std::uint64_t seed_base, std::uint64_t step_index) {
    const int l = idx_.action(a).layer;
    const plan::BackwardWork bw = plan::backward_work(store_, opt_);
    std::byte* ws = bytes(idx_.need(a, plan::Kind::workspace));
    const auto w = PlanIndex::backward_work<float, float>(ws, bw);
    rope_tables(w.cos, w.sin);
    const auto s = PlanIndex::saved<float, float>(bytes(idx_.need(a, plan::Kind::activations, l)),
                                                  plan::saved_layout(store_, opt_));
    const float* x = f(idx_.need(a, plan::Kind::residual, l));
    float* g = f(idx_.need(a, plan::Kind::gradients));
    LayerOps ops_ = layer_ops(a, bw.common, ws, seed_base, step_index, true);
    model::block_backward(ops_, idx_.dims(), s, w, x, g);
  }

  StepStats loss_action(int a, bool backward, double grad_scale) {
    const plan::LossWork lw = plan::loss_work(store_, opt_);
    std::byte* ws = bytes(idx_.need(a, plan::Kind::workspace));
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    const i64 n = plan::tokens(opt_), H = store_.hidden;
    const float* x = f(idx_.need(a, plan::Kind::residual, store_.layers));
    Timed t(prof(), HostProfile::loss);
    ops::rmsnorm::forward(p(lw.xf), p(lw.rstd), x, final_norm(), n, H, store_.norm_eps);
    const ops::cross_entropy::Result r = ops::cross_entropy::forward_backward(
        backward ? p(lw.dxf) : static_cast<float*>(nullptr), p(lw.chunk), p(lw.xf), lm_head(),
        io(idx_.io.targets), n, H, store_.vocab, plan::loss_chunk_tokens(store_, opt_), grad_scale);
    StepStats st;
    st.loss_sum = r.loss_sum;
    st.tokens = r.count;
    if (backward) {
      const int gb = idx_.operand(a, plan::Kind::gradients);
      if (gb >= 0) {
        float* g = f(gb);
        ops::residual::zero(g, n * H);
        ops::rmsnorm::backward(g, static_cast<float*>(nullptr), p(lw.dxf), x, final_norm(),
                               p(lw.rstd), n, H);
      }
    }
    return st;
  }

  void logits_action(int a) {
    const plan::LossWork lw = plan::loss_work(store_, opt_);
    std::byte* ws = bytes(idx_.need(a, plan::Kind::workspace));
    auto p = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    const i64 n = plan::tokens(opt_), H = store_.hidden;
    const float* x = f(idx_.need(a, plan::Kind::residual, store_.layers));
    ops::rmsnorm::forward(p(lw.xf), p(lw.rstd), x, final_norm(), n, H, store_.norm_eps);
    ops::matmul::forward(logits_sink_, store_.vocab, p(lw.xf), H, lm_head(), H,
                         static_cast<const float*>(nullptr), n, store_.vocab, H, 1.0f, false);
  }

  void optimizer_action(const OptimizerSettings& s, StepStats& st) {
    Timed t(prof(), HostProfile::optimizer);
    const i64 n = idx_.n_lora;
    float* params = f(opt_.offload_optimizer ? idx_.b_hparam : idx_.b_lora);
    float* grads = f(opt_.offload_optimizer ? idx_.b_hgrad : idx_.b_grad);
    const double norm = std::sqrt(ops::grad_clip::sum_squares(grads, n));
    st.grad_norm = norm;
    if (!std::isfinite(norm))
      throw Error("non-finite LoRA gradient norm (" + std::to_string(norm) + ") at optimizer step " +
                  std::to_string(s.step));
    if (s.clip > 0) ops::grad_clip::scale(grads, n, ops::grad_clip::clip_coef(norm, s.clip));
    ops::adamw::step(params, f(idx_.b_m), f(idx_.b_v), static_cast<const float*>(grads), n, s.adamw,
                     s.step);
    ops::residual::zero(f(idx_.b_grad), n);
    if (idx_.b_hgrad >= 0) ops::residual::zero(f(idx_.b_hgrad), n);
  }

  void copy(int from, int to) {
    Timed t(prof(), HostProfile::copies);
    std::memcpy(bytes(to), bytes(from),
                std::size_t(std::min(idx_.buffer(from).bytes, idx_.buffer(to).bytes)));
  }

  StepStats run(const std::int32_t* tokens, const std::int32_t* targets,
                const std::int32_t* positions, bool train, const OptimizerSettings* opt,
                double grad_scale, std::uint64_t seed_base, std::uint64_t step_index) {
    const i64 n = plan::tokens(opt_);
    check_tokens(tokens, n, store_.vocab);
    if (positions) check_positions(positions, opt_.batch, opt_.seq);
    ops::parallel::set_threads(threads_);
    std::copy_n(tokens, n, io(idx_.io.tokens));
    std::copy_n(targets, n, io(idx_.io.targets));
    // The ops always read the planned positions: without packing, 0..seq-1 in every row (the
    // same keys and table rows as plain causal attention, bit for bit).
    std::int32_t* pos = io(idx_.io.positions);
    for (i64 i = 0; i < n; ++i) pos[i] = positions ? positions[i] : std::int32_t(i % opt_.seq);
    StepStats st;
    const auto R = int(plan::Access::read), W = int(plan::Access::write);
    for (int a = 0; a <= idx_.end(); ++a) {
      const plan::Action& act = idx_.action(a);
      const int l = act.layer;
      bool stop = false;
      switch (act.op) {
        case plan::Op::embed: {
          Timed t(prof(), HostProfile::embed);
          ops::embedding::forward(f(idx_.need(a, plan::Kind::residual, 0)), io(idx_.io.tokens),
                                  embed_table(), n, store_.vocab, store_.hidden);
          break;
        }
        case plan::Op::fetch_weights:
          copy(idx_.need(a, plan::Kind::weights, l), idx_.need(a, plan::Kind::weights, -1, plan::Role::slot));
          break;
        case plan::Op::forward: forward_action(a, false, seed_base, step_index, train); break;
        case plan::Op::save_checkpoint:
          copy(idx_.need(a, plan::Kind::residual, l, plan::Role::none, R),
               idx_.need(a, plan::Kind::residual, l, plan::Role::checkpoint));
          break;
        case plan::Op::load_checkpoint:
          copy(idx_.need(a, plan::Kind::residual, l, plan::Role::checkpoint),
               idx_.need(a, plan::Kind::residual, l, plan::Role::none, W));
          break;
        case plan::Op::loss: {
          if (logits_sink_) {  // forward_logits: the logits instead of the loss
            logits_action(a);
            stop = true;
            break;
          }
          const StepStats ls = loss_action(a, train, grad_scale);
          st.loss_sum = ls.loss_sum;
          st.tokens = ls.tokens;
          check_loss(st.loss_sum, step_index);
          stop = !train;
          break;
        }
        case plan::Op::recompute: forward_action(a, true, seed_base, step_index, train); break;
        case plan::Op::backward: backward_action(a, seed_base, step_index); break;
        case plan::Op::grads_to_host:
          if (opt) std::copy_n(f(idx_.b_grad), idx_.n_lora, f(idx_.b_hgrad));  // optimizer steps only
          break;
        case plan::Op::optimizer_step:
          if (opt) optimizer_action(*opt, st);
          break;
        case plan::Op::params_to_device:
          if (opt) std::copy_n(f(idx_.b_hparam), idx_.n_lora, f(idx_.b_lora));
          break;
      }
      if (poison_)
        for (std::size_t b = 0; b < plan().buffers.size(); ++b) {
          const plan::Buffer& x = plan().buffers[b];
          if (x.last == a && !idx_.resident(x)) fill_nan(int(b));
        }
      if (stop) break;
    }
    if (poison_ && !train) poison_all();
    return st;
  }
};

}  // namespace lvt::backend
