#pragma once
// The CUDA backend: executes the planner's step program on a GPU, in the planned arena (one
// cudaMalloc) and pinned pool (one cudaHostAlloc). Each action is enqueued on the stream the plan
// gives it (compute, h2d, d2h, host) and waits on the events of exactly the actions the plan says;
// streamed layers are copied into their ring slots on the h2d stream while compute runs the
// previous layers, checkpoints go to and come back from pinned memory on the copy streams. The
// first step runs eagerly; the next of the same kind (train with or without an optimizer update,
// or evaluate) is captured as a CUDA graph and replayed from then on. Every scalar a step changes
// (token count, lr, AdamW step, dropout step, loss scale) lives in the io buffer's control block,
// and tokens, targets and positions in the io buffer, so the replayed kernels read the current
// values. Nothing is allocated or freed after the
// constructor. Each action is an NVTX range, so Nsight Systems shows the schedule.
//
// Storage is S (bf16, or fp16 with dynamic loss scaling for sm_75); statistics, RoPE tables,
// LoRA master parameters, their gradients and AdamW's moments are fp32. Linear layers dequantize
// the frozen weight into a 16-bit scratch and multiply with cuBLASLt; LoRA is a pair of small
// GEMMs per projection, on the 16-bit copy of the layer's adapters, accumulated into the output
// (its weight gradients accumulate in fp32).
//
// Needs nvcc (LVT_CUDA): include it from a .cu translation unit.
#if !LVT_CUDA
#error "lvt/backend/cuda.hpp holds CUDA kernels: include it from a .cu file built with LVT_CUDA=1"
#endif

#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <type_traits>
#include <span>
#include <string>
#include <vector>

#include "lvt/backend/cuda_device.hpp"
#include "lvt/backend/plan_index.hpp"
#include "lvt/backend/weights.hpp"
#include "lvt/model/block.hpp"
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
#include "lvt/quant/blockwise_cuda.hpp"

namespace lvt::backend {

// What the step's kernels read and write besides tensors: the io buffer's control block.
struct StepControl {
  // written by the host before each step
  std::uint64_t seed_state[2];       // dropout: {run seed, step index}
  float dloss_base;                  // d loss multiplier before loss scaling: grad_scale / kept
  float clip;                        // unused by kernels (baked); kept for the record
  ops::adamw::DeviceHyper hyper;     // lr, betas, eps, weight decay, AdamW step
  float inv_freq[256];               // RoPE inverse frequencies (rotary_dim / 2 <= 256)
  // written by the kernels
  float dloss;                       // dloss_base * loss scale: what the loss kernel reads
  float loss_sum, kept;              // the loss over kept tokens, and their count
  float pad;
  double sum_sq;                     // LoRA gradient sum of squares (before clipping)
  ops::loss_scale::State scaler;     // fp16: dynamic loss scale; bf16: scale 1, found_inf only
  double partials[ops::grad_clip::cuda::sum_squares_partials];
};
static_assert(sizeof(StepControl) <= plan::step_control_bytes,
              "StepControl must fit plan::step_control_bytes (plan/layout.hpp)");

namespace cuda_detail {

template <class S>
__global__ void scale_dloss_kernel(StepControl* c) {
  c->dloss = c->dloss_base * c->scaler.scale;
}

// The element ops of model/block.hpp's Ops on the device (S storage, fp32 statistics);
// positions: the step's, in the io buffer (packed rows), for RoPE and attention.
template <class S>
struct ElementOps {
  cudaStream_t stream = nullptr;
  const std::int32_t* positions = nullptr;
  void rmsnorm_forward(S* out, float* rstd, const S* x, const S* w, i64 rows, i64 dim, double eps) {
    ops::rmsnorm::cuda::forward(out, rstd, x, w, rows, dim, eps, stream);
  }
  void rmsnorm_backward(S* dx, const S* dout, const S* x, const S* w, const float* rstd, i64 rows,
                        i64 dim) {
    ops::rmsnorm::cuda::backward(dx, dout, x, w, rstd, rows, dim, stream);
  }
  void rope_forward(S* out, const S* x, const float* c, const float* s, i64 b, i64 t, i64 h,
                    i64 hd, i64 rot) {
    ops::rope::cuda::forward(out, x, c, s, b, t, h, hd, rot, stream, positions);
  }
  void rope_backward(S* dx, const S* dout, const float* c, const float* s, i64 b, i64 t, i64 h,
                     i64 hd, i64 rot) {
    ops::rope::cuda::backward(dx, dout, c, s, b, t, h, hd, rot, stream, positions);
  }
  void attention_forward(S* out, float* lse, float*, const S* q, const S* k, const S* v, i64 b,
                         i64 t, i64 h, i64 kv, i64 hd) {
    ops::attention::cuda::forward(out, lse, q, k, v, b, t, h, kv, hd, stream, positions);
  }
  void attention_backward(S* dq, S* dk, S* dv, float*, const S* dout, const S* q, const S* k,
                          const S* v, const S* out, const float* lse, i64 b, i64 t, i64 h, i64 kv,
                          i64 hd) {
    ops::attention::cuda::backward(dq, dk, dv, dout, q, k, v, out, lse, b, t, h, kv, hd, stream,
                                   positions);
  }
  void swiglu_forward(S* out, const S* g, const S* u, i64 rows, i64 cols) {
    ops::swiglu::cuda::forward(out, g, u, rows * cols, stream);
  }
  void swiglu_backward(S* dg, S* du, const S* dout, const S* g, const S* u, i64 rows, i64 cols) {
    ops::swiglu::cuda::backward(dg, du, dout, g, u, rows * cols, stream);
  }
  void add(S* out, const S* a, const S* b, i64 n) { ops::residual::cuda::forward(out, a, b, n, stream); }
  void zero(S* x, i64 n) { LVT_CUDA_CHECK(cudaMemsetAsync(x, 0, std::size_t(n) * sizeof(S), stream)); }
};

// One projection's adapter on the device: A, B in S (the layer's rounded copy), grads in fp32.
template <class S>
struct DeviceLora {
  const S* A = nullptr;
  const S* B = nullptr;
  float* dA = nullptr;
  float* dB = nullptr;
  i64 rank = 0;
  float scale = 1;
  ops::linear::cuda::DropoutSite site;
  bool active() const { return A != nullptr && rank > 0; }
};

}  // namespace cuda_detail

template <class S>
class CudaBackend {
 public:
  static_assert(std::is_same_v<S, bf16> || std::is_same_v<S, fp16>,
                "CudaBackend stores activations in bf16 or fp16");

  // Plans the model with these options (precision S) for the GPU `device`, checks that the plan
  // fits the memory free on it, then makes the two allocations, the streams and the events.
  CudaBackend(const ModelConfig& model, PlanOptions options, int device = 0)
      : model_(model), store_(storage_config(model)) {
    if (const char* why = validate(model)) throw Error(std::string("model config: ") + why);
    if (model.rope_scaling == RopeScaling::longrope)
      throw Error("rope_scaling 'longrope' (Phi-4-mini) needs the per-dimension factor lists, "
                  "which the backends do not apply; its plan is valid, training is not");
    if (store_.rotary_dim() / 2 > 256)
      throw Error("rotary_dim " + std::to_string(store_.rotary_dim()) + " is above the CUDA "
                  "backend's 512");
    dev_ = cuda::select_device(device);
    options.precision = std::is_same_v<S, bf16> ? DType::bf16 : DType::fp16;
    if (options.precision == DType::bf16 && dev_.sm < 80)
      throw Error(dev_.name + " is sm_" + std::to_string(dev_.sm) +
                  ", which has no bf16 tensor cores: train with fp16 (--precision fp16, dynamic "
                  "loss scaling) on sm_75");
    options.sm = dev_.sm;
    options.budget_bytes = 0;
    opt_ = options;
    idx_ = PlanIndex(store_, opt_);
    mem_ = cuda::Allocations(plan().summary, dev_);
    for (cudaStream_t& s : streams_) LVT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    events_.resize(plan().actions.size());
    for (cudaEvent_t& e : events_) LVT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    LVT_CUDA_CHECK(cudaEventCreateWithFlags(&start_, cudaEventDisableTiming));
    gemm_ = std::make_unique<ops::matmul::cuda::Gemm>(bytes(idx_.b_cublas),
                                                     std::size_t(idx_.buffer(idx_.b_cublas).bytes));
    // The dynamic code map is allocated (and copied) on first use: a first use inside a graph
    // capture would invalidate it, so it exists before any step.
    if (opt_.double_quant) (void)quant::device_dynamic_map();
    lora_mirror_.assign(std::size_t(idx_.n_lora), 0.0f);
    m_mirror_.assign(std::size_t(idx_.n_lora), 0.0f);
    v_mirror_.assign(std::size_t(idx_.n_lora), 0.0f);
    dq_offset_.assign(std::size_t(store_.layers) * plan::proj_count, 0.0f);
    staging_.resize(std::size_t(idx_.wl.bytes));
    unpacked_positions_.resize(std::size_t(plan::tokens(opt_)));
    for (std::size_t i = 0; i < unpacked_positions_.size(); ++i)
      unpacked_positions_[i] = std::int32_t(i % std::size_t(opt_.seq));
    // The arena and the pinned pool start zeroed (LoRA grads, moments), then the control block.
    LVT_CUDA_CHECK(cudaMemset(mem_.arena(), 0, std::size_t(mem_.arena_bytes())));
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    if (mem_.pinned_bytes() > 0) std::memset(mem_.pinned_base(), 0, std::size_t(mem_.pinned_bytes()));
    StepControl c{};
    c.scaler.scale = fp16_storage ? scaler_.scale : 1.0f;
    std::vector<float> inv(std::size_t(store_.rotary_dim() / 2));
    ops::rope::inv_freq(inv.data(), store_);
    std::copy(inv.begin(), inv.end(), c.inv_freq);
    LVT_CUDA_CHECK(cudaMemcpy(control(), &c, sizeof c, cudaMemcpyHostToDevice));
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;
  ~CudaBackend() {
    cudaDeviceSynchronize();
    for (auto& g : graphs_)
      if (g) cudaGraphExecDestroy(g);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    if (start_) cudaEventDestroy(start_);
    for (cudaStream_t s : streams_) cudaStreamDestroy(s);
  }

  static constexpr bool fp16_storage = std::is_same_v<S, fp16>;
  static constexpr bool has_poison_mode = false;
  static constexpr const char* name() { return fp16_storage ? "cuda (fp16)" : "cuda (bf16)"; }
  const cuda::DeviceInfo& device() const { return dev_; }
  const plan::Plan& plan() const { return idx_.plan(); }
  const ModelConfig& model() const { return model_; }
  const PlanOptions& options() const { return opt_; }
  const std::vector<LoraSlice>& lora_layout() const { return idx_.slices; }
  i64 lora_count() const { return idx_.n_lora; }
  // Dynamic loss scaling (fp16): the settings (kernel arguments: new ones drop the captured
  // graphs), and the scale now (1 for bf16).
  const ops::loss_scale::Settings& loss_scale_settings() const { return scale_settings_; }
  void set_loss_scale_settings(const ops::loss_scale::Settings& s) {
    ops::loss_scale::check_settings(s);
    scale_settings_ = s;
    drop_graphs();
  }
  float loss_scale() {
    StepControl c = read_control();
    return c.scaler.scale;
  }
  // Whether the next step of this kind replays a captured graph (tests, benchmarks).
  bool graph_ready(bool train, bool update) const { return graphs_[mode(train, update)] != nullptr; }
  // Graphs off: every step enqueued eagerly (for comparing the two); on again: graphs replay.
  void use_graphs(bool on) { use_graphs_ = on; }

  // ---- LoRA state: host views, synchronized explicitly ----
  // The fp32 LoRA master parameters as the host sees them (pinned when the optimizer is
  // offloaded, else a host mirror: sync_lora_from_device() before reading it,
  // sync_lora_to_device() after writing it, as with adam_m() / adam_v()).
  std::span<float> lora_params() {
    return {opt_.offload_optimizer ? f(idx_.b_hparam) : lora_mirror_.data(), std::size_t(idx_.n_lora)};
  }
  std::span<float> adam_m() {
    return {opt_.offload_optimizer ? f(idx_.b_m) : m_mirror_.data(), std::size_t(idx_.n_lora)};
  }
  std::span<float> adam_v() {
    return {opt_.offload_optimizer ? f(idx_.b_v) : v_mirror_.data(), std::size_t(idx_.n_lora)};
  }
  // The accumulated LoRA gradients (copied from the device).
  std::vector<float> lora_grads() {
    std::vector<float> g(std::size_t(idx_.n_lora));
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    if (idx_.n_lora)
      LVT_CUDA_CHECK(cudaMemcpy(g.data(), f(idx_.b_grad), g.size() * 4, cudaMemcpyDeviceToHost));
    return g;
  }
  void sync_lora_to_device() {
    if (!idx_.n_lora) return;
    const std::size_t n = std::size_t(idx_.n_lora) * 4;
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    if (opt_.offload_optimizer) {
      LVT_CUDA_CHECK(cudaMemcpy(f(idx_.b_lora), f(idx_.b_hparam), n, cudaMemcpyHostToDevice));
    } else {
      LVT_CUDA_CHECK(cudaMemcpy(f(idx_.b_lora), lora_mirror_.data(), n, cudaMemcpyHostToDevice));
      LVT_CUDA_CHECK(cudaMemcpy(f(idx_.b_m), m_mirror_.data(), n, cudaMemcpyHostToDevice));
      LVT_CUDA_CHECK(cudaMemcpy(f(idx_.b_v), v_mirror_.data(), n, cudaMemcpyHostToDevice));
    }
    LVT_CUDA_CHECK(cudaDeviceSynchronize());  // a pageable copy may return before it lands
  }
  void sync_lora_from_device() {
    if (!idx_.n_lora || opt_.offload_optimizer) return;
    const std::size_t n = std::size_t(idx_.n_lora) * 4;
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    LVT_CUDA_CHECK(cudaMemcpy(lora_mirror_.data(), f(idx_.b_lora), n, cudaMemcpyDeviceToHost));
    LVT_CUDA_CHECK(cudaMemcpy(m_mirror_.data(), f(idx_.b_m), n, cudaMemcpyDeviceToHost));
    LVT_CUDA_CHECK(cudaMemcpy(v_mirror_.data(), f(idx_.b_v), n, cudaMemcpyDeviceToHost));
  }
  void zero_grads() {
    if (!idx_.n_lora) return;
    // On the compute stream: the legacy default stream does not order the non-blocking ones.
    LVT_CUDA_CHECK(cudaMemsetAsync(f(idx_.b_grad), 0, std::size_t(idx_.n_lora) * 4, compute()));
    LVT_CUDA_CHECK(cudaStreamSynchronize(compute()));
    if (idx_.b_hgrad >= 0) std::fill_n(f(idx_.b_hgrad), idx_.n_lora, 0.0f);
  }

  // ---- frozen weights (io/ fills these, one tensor at a time, as fp32 values) ----
  void set_embed_table(const float* w) {
    put(idx_.b_embed, 0, w, i64(model_.vocab) * model_.hidden);
  }
  void set_lm_head(const float* w) {
    put(model_.tied_embeddings ? idx_.b_embed : idx_.b_head, 0, w, i64(model_.vocab) * model_.hidden);
  }
  void set_final_norm(const float* w) {
    put(idx_.b_head, model_.tied_embeddings ? 0 : i64(model_.vocab) * model_.hidden * i64(sizeof(S)),
        w, model_.hidden);
  }
  void set_projection(int l, int proj, const float* w, const std::string& name) {
    const plan::LinearLayout& L = idx_.wl.linear[proj];
    store_linear(staging_.data(), L, opt_, w, name);
    if (opt_.double_quant && (opt_.quant == QuantKind::nf4 || opt_.quant == QuantKind::fp4)) {
      float offset = 0;
      std::memcpy(&offset, staging_.data() + L.offset.offset, 4);
      set_dq_offset(l, proj, offset);
    }
    upload_layer_range(l, L.data.offset, L.bytes);
  }
  bool set_projection_quant4(int l, int proj, const quant::Quant4& q) {
    const plan::LinearLayout& L = idx_.wl.linear[proj];
    if (!store_quant4(staging_.data(), L, opt_, q)) return false;
    if (q.nested) set_dq_offset(l, proj, q.offset);
    upload_layer_range(l, L.data.offset, L.bytes);
    return true;
  }
  void set_norm(int l, int which, const float* w) {
    const plan::Span s = idx_.norm_span(which);
    put(idx_.b_weights[std::size_t(l)], s.offset, w, model_.hidden);
  }
  void set_bias(int l, int proj, const float* w) {
    const plan::Span s = idx_.bias_span(proj);
    put(idx_.b_weights[std::size_t(l)], s.offset, w, s.bytes / i64(sizeof(S)));
  }

  // ---- running the step program (the host backend's contract) ----
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
  StepStats evaluate(const std::int32_t* tokens, const std::int32_t* targets, const std::int32_t* positions) {
    return run(tokens, targets, positions, false, nullptr, 1.0, 0, 0);
  }
  StepStats evaluate(const std::int32_t* tokens, const std::int32_t* targets) {
    return evaluate(tokens, targets, nullptr);
  }

  // ---- generation (a plan with generate_context > 0): the host backend's contract ----
  // Tokens [0, n) of sequence `seq` (< batch) at positions pos .. pos + n - 1 run through every
  // layer (prefill in chunks of plan::generate_rows, decode one at a time) with the step's block
  // code, weights, biases and RoPE, and the LoRA adapters without dropout; their keys and values
  // go into the KV cache, attention reads the cache (ops/decode_attention.hpp). Returns the fp32
  // logits [vocab] of the last token, copied to a host buffer (valid until the next call).
  // Runs eagerly on the compute stream (no graph) and waits for it before returning; it uses
  // only the plan's resident kv_cache and workspace.generate buffers (with streamed weights also
  // ring slot 0 between steps, when no step buffer is live), so it may run between steps.
  i64 generate_context() const { return opt_.generate_context; }
  const float* decode(int seq, const std::int32_t* tokens, i64 n, i64 pos) {
    check_decode(idx_.b_kv >= 0, opt_, seq, n, pos);
    check_tokens(tokens, n, store_.vocab);
    const plan::GenerateWork gw = plan::generate_work(store_, opt_);
    std::byte* ws = bytes(idx_.b_gen);
    auto sp = [&](plan::Span x) { return reinterpret_cast<S*>(ws + x.offset); };
    auto fp = [&](plan::Span x) { return reinterpret_cast<float*>(ws + x.offset); };
    const i64 H = store_.hidden, half = store_.rotary_dim() / 2, rows = plan::generate_rows(opt_);
    const cudaStream_t st = compute();
    // Weights and adapters uploaded by plain cudaMemcpy (legacy stream) land before the chunk.
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    if (!decode_tables_ready_) {  // every position of the context, once
      ops::rope::cuda::tables(fp(gw.cos), fp(gw.sin), control()->inv_freq, opt_.generate_context,
                              int(half), st);
      decode_tables_ready_ = true;
    }
    const auto sv = PlanIndex::saved<S, float>(ws + gw.saved_base, gw.saved);
    // The chunk's token ids for the gather kernel live in attn_row (context * 4 bytes >= rows
    // ids): the host's score row, which the CUDA kernel, with its online softmax, does not need.
    auto* ids = reinterpret_cast<std::int32_t*>(ws + gw.attn_row.offset);
    for (i64 c0 = 0; c0 < n; c0 += rows) {
      const i64 r = std::min(rows, n - c0), at = pos + c0;
      S* x = sp(gw.x);
      S* y = sp(gw.y);
      LVT_CUDA_CHECK(cudaMemcpyAsync(ids, tokens + c0, std::size_t(r) * 4, cudaMemcpyHostToDevice, st));
      // A pinned table (streamed, untied) is read in place over PCIe, as in the step.
      ops::embedding::cuda::forward(x, ids, s_(idx_.b_embed), r, H, st);
      model::BlockDims d = idx_.dims();
      d.batch = 1;
      d.seq = r;
      const model::BlockForwardWork<S, float> w{sp(gw.act), nullptr, fp(gw.cos) + at * half,
                                                fp(gw.sin) + at * half};
      for (int l = 0; l < store_.layers; ++l) {
        DecodeOps L = decode_ops(l, gw, ws, seq, at);
        model::block_forward(L, d, sv, w, x, y);
        std::swap(x, y);
      }
      if (c0 + r < n) continue;
      ops::rmsnorm::cuda::forward(sp(gw.xf), fp(gw.rstd), x + (r - 1) * H, final_norm(), 1, H,
                                  store_.norm_eps, st);
      gemm_->run<S, float>(fp(gw.logits), sp(gw.xf), lm_head(), 1, store_.vocab, H, false, true,
                           1.0f, 0.0f, st);
    }
    logits_host_.resize(std::size_t(store_.vocab));
    LVT_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), fp(gw.logits), logits_host_.size() * 4,
                                   cudaMemcpyDeviceToHost, st));
    LVT_CUDA_CHECK(cudaStreamSynchronize(st));
    return logits_host_.data();
  }

  // The device memory in use now by everything (cudaMemGetInfo), for the peak-memory test.
  static i64 device_used_bytes() {
    std::size_t free_b = 0, total_b = 0;
    LVT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return i64(total_b - free_b);
  }

 private:
  ModelConfig model_, store_;
  PlanOptions opt_;
  cuda::DeviceInfo dev_;
  PlanIndex idx_;
  cuda::Allocations mem_;
  std::array<cudaStream_t, plan::stream_count> streams_{};
  std::vector<cudaEvent_t> events_;
  cudaEvent_t start_ = nullptr;
  std::unique_ptr<ops::matmul::cuda::Gemm> gemm_;
  std::vector<float> lora_mirror_, m_mirror_, v_mirror_, dq_offset_;
  std::vector<std::byte> staging_;
  std::vector<std::int32_t> unpacked_positions_;  // 0..seq-1 in every row: a step without packing
  ops::loss_scale::State scaler_{};
  ops::loss_scale::Settings scale_settings_{};
  std::array<cudaGraphExec_t, 3> graphs_{};
  std::array<int, 3> eager_runs_{};
  bool use_graphs_ = true;
  bool decode_tables_ready_ = false;  // the decode scratch's RoPE tables are computed
  std::vector<float> logits_host_;    // decode's logits, copied back
  // What the host-stream optimizer (offloaded) reads and writes while a graph runs.
  struct HostOptimizer {
    CudaBackend* self = nullptr;
    OptimizerSettings settings;
    double norm = 0;
    bool skipped = false;
  } host_opt_;
  float baked_clip_ = -1;

  static int mode(bool train, bool update) { return train ? (update ? 2 : 1) : 0; }
  void drop_graphs() {
    for (auto& g : graphs_)
      if (g) {
        LVT_CUDA_CHECK(cudaGraphExecDestroy(g));
        g = nullptr;
      }
    eager_runs_ = {};
  }

  // Double quantization's offset is a kernel argument, baked into captured graphs: a new value
  // drops them (loading weights after a step recaptures; loading before costs nothing).
  void set_dq_offset(int l, int proj, float offset) {
    float& slot = dq_offset_[std::size_t(l) * plan::proj_count + std::size_t(proj)];
    if (std::memcmp(&slot, &offset, 4) != 0) drop_graphs();
    slot = offset;
  }

  std::byte* bytes(int b) { return mem_.at(idx_.buffer(b)); }
  float* f(int b) { return b < 0 ? nullptr : reinterpret_cast<float*>(bytes(b)); }
  S* s_(int b) { return b < 0 ? nullptr : reinterpret_cast<S*>(bytes(b)); }
  std::byte* io(plan::Span s) { return bytes(idx_.b_io) + s.offset; }
  StepControl* control() { return reinterpret_cast<StepControl*>(io(idx_.io.control)); }
  cudaStream_t stream_of(int a) { return streams_[std::size_t(idx_.action(a).stream)]; }
  cudaStream_t compute() { return streams_[0]; }

  StepControl read_control() {
    StepControl c;
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    LVT_CUDA_CHECK(cudaMemcpy(&c, control(), sizeof c, cudaMemcpyDeviceToHost));
    return c;
  }

  // fp32 values -> S at byte offset `at` of buffer b (device or pinned).
  void put(int b, i64 at, const float* w, i64 n) {
    std::vector<S> v(static_cast<std::size_t>(n));
    for (i64 i = 0; i < n; ++i) v[std::size_t(i)] = from_float<S>(w[i]);
    std::byte* dst = bytes(b) + at;
    if (idx_.buffer(b).memory == plan::Memory::pinned) std::memcpy(dst, v.data(), v.size() * sizeof(S));
    else LVT_CUDA_CHECK(cudaMemcpy(dst, v.data(), v.size() * sizeof(S), cudaMemcpyHostToDevice));
  }
  void upload_layer_range(int l, i64 at, i64 n) {
    const int b = idx_.b_weights[std::size_t(l)];
    std::byte* dst = bytes(b) + at;
    if (idx_.buffer(b).memory == plan::Memory::pinned) std::memcpy(dst, staging_.data() + at, std::size_t(n));
    else LVT_CUDA_CHECK(cudaMemcpy(dst, staging_.data() + at, std::size_t(n), cudaMemcpyHostToDevice));
  }

  // ---- the Ops a block runs on, bound to one layer ----
  struct LayerOps : cuda_detail::ElementOps<S> {
    ops::matmul::cuda::Gemm* gemm;
    const plan::LayerWeightLayout* wl;
    const PlanOptions* o;
    const std::byte* w;       // the layer's weight bytes (device: resident or a ring slot)
    const float* dq_offset;   // per projection, double quantization's offset
    S* w_scratch;
    S* h;                     // LoRA h [rows, rank]
    S* dh;                    // LoRA dh [rows, rank]
    S* blk;                   // dropped-out rows [block_rows, widest in]
    i64 block_rows;
    cuda_detail::DeviceLora<S> lora[plan::proj_count];
    const S* bias[3] = {nullptr, nullptr, nullptr};

    const S* weight(int p) {
      const plan::LinearLayout& L = wl->linear[p];
      const i64 n = L.out * L.in;
      const cudaStream_t st = this->stream;
      switch (o->quant) {
        case QuantKind::none: return reinterpret_cast<const S*>(w + L.data.offset);
        case QuantKind::int8:
          quant::launch_dequantize_int8(reinterpret_cast<const std::int8_t*>(w + L.data.offset),
                                              reinterpret_cast<const float*>(w + L.absmax.offset), n,
                                              o->quant_block, w_scratch, st);
          return w_scratch;
        case QuantKind::nf4:
        case QuantKind::fp4: {
          const quant::Code4 c = o->quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4;
          const auto* packed = reinterpret_cast<const std::uint8_t*>(w + L.data.offset);
          if (o->double_quant)
            quant::launch_dequantize_4bit(
                c, packed, nullptr, reinterpret_cast<const std::uint8_t*>(w + L.absmax.offset),
                reinterpret_cast<const float*>(w + L.nested.offset), dq_offset[p], n, o->quant_block,
                w_scratch, st, reinterpret_cast<const float*>(w + L.nested_map.offset));
          else
            quant::launch_dequantize_4bit(c, packed, reinterpret_cast<const float*>(w + L.absmax.offset),
                                                nullptr, nullptr, 0.0f, n, o->quant_block, w_scratch, st);
          return w_scratch;
        }
      }
      return nullptr;
    }
    const S* norm(int which) const {
      return reinterpret_cast<const S*>(w + (which == 0 ? wl->input_norm : wl->post_norm).offset);
    }
    // The LoRA input rows [n0, n1): dropped out into blk, or x itself without dropout.
    const S* lora_input(const cuda_detail::DeviceLora<S>& lo, const S* x, i64 n0, i64 n1, i64 in) {
      if (!(lo.site.p > 0)) return x + n0 * in;
      ops::linear::cuda::dropped_rows(blk, x, n0, n1, in, lo.site, this->stream);
      return blk;
    }
    i64 chunk(const cuda_detail::DeviceLora<S>& lo, i64 rows) const {
      return lo.site.p > 0 ? block_rows : rows;
    }

    // y = x W^T (+ bias) + scale * dropout(x) A^T B^T
    void linear_forward(int p, S* y, const S* x, i64 rows) {
      const i64 in = wl->linear[p].in, out = wl->linear[p].out;
      const cudaStream_t st = this->stream;
      // Qwen2's q/k/v biases ride cuBLASLt's bias epilogue.
      gemm->run<S>(y, x, weight(p), rows, out, in, false, true, 1.0f, 0.0f, st, p < 3 ? bias[p] : nullptr);
      const auto& lo = lora[p];
      if (!lo.active()) return;
      const i64 R = lo.rank, step = chunk(lo, rows);
      for (i64 n0 = 0; n0 < rows; n0 += step) {
        const i64 n1 = std::min(rows, n0 + step);
        gemm->run<S>(h + n0 * R, lora_input(lo, x, n0, n1, in), lo.A, n1 - n0, R, in, false, true,
                     1.0f, 0.0f, st);
      }
      gemm->run<S>(y, h, lo.B, rows, out, R, false, true, lo.scale, 1.0f, st);
    }
    // dx += dy W + LoRA's part; dA, dB += (fp32)
    void linear_backward(int p, S* dx, const S* dy, const S* x, i64 rows) {
      const i64 in = wl->linear[p].in, out = wl->linear[p].out;
      const cudaStream_t st = this->stream;
      if (dx) gemm->run<S>(dx, dy, weight(p), rows, in, out, false, false, 1.0f, 1.0f, st);
      const auto& lo = lora[p];
      if (!lo.active()) return;
      const i64 R = lo.rank, step = chunk(lo, rows);
      const bool drop = lo.site.p > 0;
      gemm->run<S>(dh, dy, lo.B, rows, R, out, false, false, lo.scale, 0.0f, st);  // dh = s dy B
      for (i64 n0 = 0; n0 < rows; n0 += step) {
        const i64 n1 = std::min(rows, n0 + step);
        const S* xd = lora_input(lo, x, n0, n1, in);
        gemm->run<S>(h + n0 * R, xd, lo.A, n1 - n0, R, in, false, true, 1.0f, 0.0f, st);
        gemm->run<S, float>(lo.dA, dh + n0 * R, xd, R, in, n1 - n0, true, false, 1.0f, 1.0f, st);
        if (dx && drop) {  // dx += dropout'(dh A), one block at a time through blk
          gemm->run<S>(blk, dh + n0 * R, lo.A, n1 - n0, in, R, false, false, 1.0f, 0.0f, st);
          ops::linear::cuda::add_dropped(dx, blk, n0, n1, in, lo.site, st);
        }
      }
      if (dx && !drop) gemm->run<S>(dx, dh, lo.A, rows, in, R, false, false, 1.0f, 1.0f, st);
      gemm->run<S, float>(lo.dB, dy, h, out, R, rows, true, false, lo.scale, 1.0f, st);
    }
  };

  LayerOps layer_ops(int a, const plan::CommonWork& cw, std::byte* ws, bool train) {
    const int l = idx_.action(a).layer;
    LayerOps L;
    L.stream = compute();
    L.positions = reinterpret_cast<const std::int32_t*>(io(idx_.io.positions));
    L.gemm = &*gemm_;
    L.wl = &idx_.wl;
    L.o = &opt_;
    L.w = bytes(idx_.weights_of(a));
    L.dq_offset = dq_offset_.data() + std::size_t(l) * plan::proj_count;
    L.w_scratch = reinterpret_cast<S*>(ws + cw.weight.offset);
    const i64 n = plan::tokens(opt_);
    L.h = reinterpret_cast<S*>(ws + cw.lora.offset);
    L.dh = L.h + n * opt_.lora_rank;
    L.blk = L.dh + n * opt_.lora_rank;
    L.block_rows = plan::lora_block_rows(opt_);
    idx_.bind_biases(L.w, L.bias);
    if (!idx_.roles.trainable(opt_, l)) return L;
    // The layer's adapters rounded to S once per action (they are contiguous in the flat buffer).
    S* shadow = reinterpret_cast<S*>(ws + cw.lora_params.offset);
    i64 first = -1, last = 0;
    for (const LoraSlice& s : idx_.slices)
      if (s.layer == l) {
        if (first < 0) first = s.a;
        last = s.b + s.out * opt_.lora_rank;
      }
    if (first < 0) return L;
    ops::linear::cuda::round_params(shadow, f(idx_.b_lora) + first, last - first, compute());
    const float scale = float(ops::linear::lora_scale(opt_.lora_alpha, opt_.lora_rank, opt_.rslora));
    float* grads = f(idx_.b_grad);
    for (const LoraSlice& s : idx_.slices) {
      if (s.layer != l) continue;
      auto& lo = L.lora[s.proj];
      lo.A = shadow + (s.a - first);
      lo.B = shadow + (s.b - first);
      lo.dA = grads + s.a;
      lo.dB = grads + s.b;
      lo.rank = opt_.lora_rank;
      lo.scale = scale;
      // Evaluation runs without dropout (PEFT's eval mode); its graph is its own.
      lo.site = {control()->seed_state, std::uint64_t(l), std::uint64_t(s.proj),
                 train ? float(opt_.lora_dropout) : 0.0f};
    }
    return L;
  }

  // A layer's Ops for generation: the step's, with attention over the KV cache and LoRA on the
  // fp32 adapters. block_forward calls attention_forward with this chunk's k and v (after RoPE):
  // they are copied into the cache at `pos`, and the chunk's queries attend to every cached
  // position up to their own.
  //
  // Linear layers take the step's path for every row count: a quantized weight is dequantized
  // whole into the 16-bit scratch, then one cuBLASLt GEMM (M = rows; M = 1 for a decode step).
  // What that costs a decode step, per NF4 projection of out x in: the 4-bit codes read (out in /
  // 2 bytes), the 16-bit weight written and read back (4 out in bytes): ~9x the bytes of a fused
  // dequantize-and-multiply, and a launch per step of both kernels. Unquantized 16-bit weights
  // are read once by the GEMM. A GEMV kernel over the codes is the next step for speed.
  struct DecodeLora {
    const float* A = nullptr;  // [rank, in], fp32, in the flat LoRA buffer
    const float* B = nullptr;  // [out, rank]
  };
  struct DecodeOps : LayerOps {
    S* k_cache;  // [context, kv_heads, head_dim] of this layer and sequence
    S* v_cache;
    i64 pos;
    float* h32;  // LoRA h [rows, rank] in fp32 (the decode scratch's LoRA span)
    i64 rank = 0;
    float scale = 1;
    DecodeLora lora32[plan::proj_count];
    void linear_forward(int p, S* y, const S* x, i64 rows) {
      LayerOps::linear_forward(p, y, x, rows);  // x W^T (+ bias); its 16-bit LoRA is unbound
      const DecodeLora& lo = lora32[p];
      if (!lo.A) return;
      ops::linear::cuda::lora_forward_fp32(y, h32, x, lo.A, lo.B, rows, this->wl->linear[p].in,
                                           this->wl->linear[p].out, rank, scale, this->stream);
    }
    void attention_forward(S* out, float*, float*, const S* q, const S* k, const S* v, i64, i64 t,
                           i64 h, i64 kv, i64 hd) {
      const std::size_t n = std::size_t(t * kv * hd) * sizeof(S);
      LVT_CUDA_CHECK(cudaMemcpyAsync(k_cache + pos * kv * hd, k, n, cudaMemcpyDeviceToDevice, this->stream));
      LVT_CUDA_CHECK(cudaMemcpyAsync(v_cache + pos * kv * hd, v, n, cudaMemcpyDeviceToDevice, this->stream));
      ops::decode_attention::cuda::forward(out, q, k_cache, v_cache, t, pos, h, kv, hd, this->stream);
    }
  };

  DecodeOps decode_ops(int l, const plan::GenerateWork& gw, std::byte* ws, int seq, i64 pos) {
    DecodeOps L;
    L.stream = compute();
    L.positions = nullptr;  // the chunk's table rows: w.cos / w.sin start at its first position
    L.gemm = &*gemm_;
    L.wl = &idx_.wl;
    L.o = &opt_;
    const int wb = idx_.b_weights[std::size_t(l)];
    if (idx_.buffer(wb).memory == plan::Memory::pinned) {
      // Streamed weights: the layer into ring slot 0 on the compute stream, then its compute
      // (serial: every token streams the whole model over PCIe, nothing overlaps).
      const int slot = decode_slot();
      LVT_CUDA_CHECK(cudaMemcpyAsync(
          bytes(slot), bytes(wb), std::size_t(std::min(idx_.buffer(wb).bytes, idx_.buffer(slot).bytes)),
          cudaMemcpyHostToDevice, L.stream));
      L.w = bytes(slot);
    } else {
      L.w = bytes(wb);
    }
    L.dq_offset = dq_offset_.data() + std::size_t(l) * plan::proj_count;
    L.w_scratch = reinterpret_cast<S*>(ws + gw.weight.offset);
    L.h = L.dh = L.blk = nullptr;  // the 16-bit LoRA path is not bound (lora[] inactive)
    L.block_rows = 0;
    idx_.bind_biases(L.w, L.bias);
    const i64 kvd = store_.kv_dim(), ctx = opt_.generate_context;
    S* layer = s_(idx_.b_kv) + plan::kv_cache_layer_bytes(store_, opt_) / i64(sizeof(S)) * l;
    L.k_cache = layer + i64(seq) * ctx * kvd;
    L.v_cache = layer + i64(opt_.batch) * ctx * kvd + i64(seq) * ctx * kvd;
    L.pos = pos;
    // The LoRA span holds (2 rows rank + 16 widest_in) 16-bit elements: room for rows x rank floats.
    L.h32 = reinterpret_cast<float*>(ws + gw.lora.offset);
    if (!idx_.roles.trainable(opt_, l)) return L;
    L.rank = opt_.lora_rank;
    L.scale = float(ops::linear::lora_scale(opt_.lora_alpha, opt_.lora_rank, opt_.rslora));
    const float* params = f(idx_.b_lora);
    for (const LoraSlice& s : idx_.slices)
      if (s.layer == l) L.lora32[s.proj] = {params + s.a, params + s.b};
    return L;
  }

  // Ring slot 0 of a plan that streams weights (decode copies each layer into it).
  int decode_slot() const {
    for (std::size_t b = 0; b < plan().buffers.size(); ++b)
      if (plan().buffers[b].kind == plan::Kind::weights && plan().buffers[b].role == plan::Role::slot)
        return int(b);
    throw Error("decode: the plan streams weights but has no ring slot");
  }

  void rope_tables(float* cos, float* sin) {
    ops::rope::cuda::tables(cos, sin, control()->inv_freq, opt_.seq, store_.rotary_dim() / 2, compute());
  }

  void forward_action(int a, bool recompute, bool train) {
    const PlanIndex::ForwardPlace p = idx_.forward_place(a, recompute, [&](int b) { return bytes(b); });
    const auto w = PlanIndex::forward_work<S, float>(p.ws, p.fw);
    rope_tables(w.cos, w.sin);
    const auto sv = PlanIndex::saved<S, float>(p.saved_base, p.saved);
    const S* x = s_(idx_.forward_input(a));
    S* out = s_(idx_.forward_output(a));  // null: a recompute that rebuilds only what backward needs
    LayerOps L = layer_ops(a, p.fw.common, p.ws, train);
    model::block_forward(L, idx_.dims(), sv, w, x, out);
  }

  void backward_action(int a) {
    const int l = idx_.action(a).layer;
    const plan::BackwardWork bw = plan::backward_work(store_, opt_);
    std::byte* ws = bytes(idx_.need(a, plan::Kind::workspace));
    const auto w = PlanIndex::backward_work<S, float>(ws, bw);
    rope_tables(w.cos, w.sin);
    const auto sv = PlanIndex::saved<S, float>(bytes(idx_.need(a, plan::Kind::activations, l)),
                                              plan::saved_layout(store_, opt_));
    LayerOps L = layer_ops(a, bw.common, ws, true);
    model::block_backward(L, idx_.dims(), sv, w, s_(idx_.need(a, plan::Kind::residual, l)),
                          s_(idx_.need(a, plan::Kind::gradients)));
  }

  const S* lm_head() { return model_.tied_embeddings ? s_(idx_.b_embed) : s_(idx_.b_head); }
  const S* final_norm() {
    return s_(idx_.b_head) + (model_.tied_embeddings ? 0 : i64(model_.vocab) * model_.hidden);
  }

  void loss_action(int a, bool backward) {
    const plan::LossWork lw = plan::loss_work(store_, opt_);
    std::byte* ws = bytes(idx_.need(a, plan::Kind::workspace));
    const i64 n = plan::tokens(opt_), H = store_.hidden;
    const cudaStream_t st = compute();
    S* xf = reinterpret_cast<S*>(ws + lw.xf.offset);
    S* dxf = reinterpret_cast<S*>(ws + lw.dxf.offset);
    float* rstd = reinterpret_cast<float*>(ws + lw.rstd.offset);
    const S* x = s_(idx_.need(a, plan::Kind::residual, store_.layers));
    ops::rmsnorm::cuda::forward(xf, rstd, x, final_norm(), n, H, store_.norm_eps, st);
    if (backward) cuda_detail::scale_dloss_kernel<S><<<1, 1, 0, st>>>(control());
    if (backward) LVT_CUDA_LAUNCHED("backend::scale_dloss_kernel");
    StepControl* c = control();
    ops::cross_entropy::cuda::forward_backward_device(
        backward ? dxf : static_cast<S*>(nullptr), ws + lw.chunk.offset,
        reinterpret_cast<float*>(ws + lw.row_loss.offset), xf, lm_head(),
        reinterpret_cast<const std::int32_t*>(io(idx_.io.targets)), n, H, store_.vocab,
        plan::loss_chunk_tokens(store_, opt_), &c->dloss, &c->loss_sum, &c->kept, *gemm_, st);
    if (!backward) return;
    const int gb = idx_.operand(a, plan::Kind::gradients);
    if (gb < 0) return;
    LVT_CUDA_CHECK(cudaMemsetAsync(s_(gb), 0, std::size_t(n * H) * sizeof(S), st));
    ops::rmsnorm::cuda::backward(s_(gb), dxf, x, final_norm(), rstd, n, H, st);
  }

  // On the device: unscale (fp16) and find non-finite grads, norm, clip, AdamW (skipped when
  // non-finite), zero the grads, update the loss scale.
  void optimizer_device(const OptimizerSettings& s) {
    const cudaStream_t st = compute();
    const i64 n = idx_.n_lora;
    StepControl* c = control();
    float* g = f(idx_.b_grad);
    ops::loss_scale::cuda::unscale_and_check(g, n, &c->scaler, st);
    ops::grad_clip::cuda::sum_squares(g, n, c->partials, &c->sum_sq, false, st);
    if (s.clip > 0) ops::grad_clip::cuda::scale_by_clip(g, n, &c->sum_sq, float(s.clip), st);
    ops::adamw::cuda::step(f(idx_.b_lora), f(idx_.b_m), f(idx_.b_v), g, n, &c->hyper,
                           ops::loss_scale::found_inf_ptr(&c->scaler), st);
    LVT_CUDA_CHECK(cudaMemsetAsync(g, 0, std::size_t(n) * 4, st));
    if (fp16_storage) ops::loss_scale::cuda::update(&c->scaler, scale_settings_, st);
  }

  // The offloaded optimizer on the host stream: a host function (a host node in the graph)
  // over the pinned grads, params and moments. The device grads were unscaled and zeroed after
  // their copy; a non-finite norm skips the update (found on the host, as the scaler would).
  static void CUDART_CB optimizer_host(void* p) {
    HostOptimizer& h = *static_cast<HostOptimizer*>(p);
    CudaBackend& b = *h.self;
    const i64 n = b.idx_.n_lora;
    float* g = b.f(b.idx_.b_hgrad);
    h.norm = std::sqrt(ops::grad_clip::sum_squares(g, n));
    h.skipped = !std::isfinite(h.norm);
    if (!h.skipped) {
      if (h.settings.clip > 0) ops::grad_clip::scale(g, n, ops::grad_clip::clip_coef(h.norm, h.settings.clip));
      ops::adamw::step(b.f(b.idx_.b_hparam), b.f(b.idx_.b_m), b.f(b.idx_.b_v),
                       static_cast<const float*>(g), n, h.settings.adamw, h.settings.step);
    }
    std::fill_n(g, n, 0.0f);
  }

  void copy(int from, int to, cudaMemcpyKind kind, cudaStream_t st) {
    LVT_CUDA_CHECK(cudaMemcpyAsync(bytes(to), bytes(from),
                                   std::size_t(std::min(idx_.buffer(from).bytes, idx_.buffer(to).bytes)),
                                   kind, st));
  }

  // Enqueues one action on its stream after the events of the actions it waits for.
  void enqueue(int a, bool train, const OptimizerSettings* opt) {
    const plan::Action& act = idx_.action(a);
    const cudaStream_t st = stream_of(a);
    for (int s = 0; s < plan::stream_count; ++s)
      if (act.wait[s] >= 0) LVT_CUDA_CHECK(cudaStreamWaitEvent(st, events_[std::size_t(act.wait[s])], 0));
    const std::string range = std::string(plan::op_name(act.op)) +
                              (act.layer >= 0 ? " " + std::to_string(act.layer) : std::string());
    nvtxRangePushA(range.c_str());
    const int l = act.layer;
    const auto R = int(plan::Access::read), W = int(plan::Access::write);
    const i64 n = plan::tokens(opt_);
    switch (act.op) {
      case plan::Op::embed:
        // A pinned table is read in place over PCIe (UVA): only the gathered rows cross.
        ops::embedding::cuda::forward(s_(idx_.need(a, plan::Kind::residual, 0)),
                                      reinterpret_cast<const std::int32_t*>(io(idx_.io.tokens)),
                                      s_(idx_.b_embed), n, store_.hidden, st);
        break;
      case plan::Op::fetch_weights:
        copy(idx_.need(a, plan::Kind::weights, l), idx_.need(a, plan::Kind::weights, -1, plan::Role::slot),
             cudaMemcpyHostToDevice, st);
        break;
      case plan::Op::forward: forward_action(a, false, train); break;
      case plan::Op::save_checkpoint:
        copy(idx_.need(a, plan::Kind::residual, l, plan::Role::none, R),
             idx_.need(a, plan::Kind::residual, l, plan::Role::checkpoint), cudaMemcpyDeviceToHost, st);
        break;
      case plan::Op::load_checkpoint:
        copy(idx_.need(a, plan::Kind::residual, l, plan::Role::checkpoint),
             idx_.need(a, plan::Kind::residual, l, plan::Role::none, W), cudaMemcpyHostToDevice, st);
        break;
      case plan::Op::loss: loss_action(a, train); break;
      case plan::Op::recompute: forward_action(a, true, train); break;
      case plan::Op::backward: backward_action(a); break;
      case plan::Op::grads_to_host:
        if (opt) {
          // fp16: unscale (and flag) on the device before the copy; bf16: scale 1, a no-op pass.
          if (fp16_storage)
            ops::loss_scale::cuda::unscale_and_check(f(idx_.b_grad), idx_.n_lora, &control()->scaler, st);
          copy(idx_.b_grad, idx_.b_hgrad, cudaMemcpyDeviceToHost, st);
          LVT_CUDA_CHECK(cudaMemsetAsync(f(idx_.b_grad), 0, std::size_t(idx_.n_lora) * 4, st));
          if (fp16_storage) ops::loss_scale::cuda::update(&control()->scaler, scale_settings_, st);
        }
        break;
      case plan::Op::optimizer_step:
        if (opt) {
          if (opt_.offload_optimizer) LVT_CUDA_CHECK(cudaLaunchHostFunc(st, optimizer_host, &host_opt_));
          else optimizer_device(*opt);
        }
        break;
      case plan::Op::params_to_device:
        if (opt) copy(idx_.b_hparam, idx_.b_lora, cudaMemcpyHostToDevice, st);
        break;
    }
    nvtxRangePop();
    LVT_CUDA_CHECK(cudaEventRecord(events_[std::size_t(a)], st));
  }

  // The whole step on the streams: every stream joins the compute stream at the start and the
  // compute stream waits for every stream's last action at the end (so a graph captures it all).
  void enqueue_step(bool train, const OptimizerSettings* opt) {
    LVT_CUDA_CHECK(cudaEventRecord(start_, compute()));
    if (fp16_storage || (train && opt && !opt_.offload_optimizer))
      ops::loss_scale::cuda::begin(&control()->scaler, compute());
    std::array<int, plan::stream_count> last{-1, -1, -1, -1};
    for (int a = 0; a <= idx_.end(); ++a) {
      const plan::Action& act = idx_.action(a);
      const auto s = std::size_t(act.stream);
      // A copy stream joins the step (and a graph's capture) at its first action only: a stream
      // that forks and does nothing would leave the capture unjoined.
      if (s != 0 && last[s] < 0) LVT_CUDA_CHECK(cudaStreamWaitEvent(streams_[s], start_, 0));
      enqueue(a, train, opt);
      last[s] = a;
      if (!train && act.op == plan::Op::loss) break;
    }
    for (std::size_t s = 1; s < plan::stream_count; ++s)
      if (last[s] >= 0) LVT_CUDA_CHECK(cudaStreamWaitEvent(compute(), events_[std::size_t(last[s])], 0));
  }

  StepStats run(const std::int32_t* tokens, const std::int32_t* targets,
                const std::int32_t* positions, bool train, const OptimizerSettings* opt,
                double grad_scale, std::uint64_t seed_base, std::uint64_t step_index) {
    const i64 n = plan::tokens(opt_);
    check_tokens(tokens, n, store_.vocab);
    if (positions) check_positions(positions, opt_.batch, opt_.seq);
    // The host counts the kept targets (and names a bad one, as the host backend's loss does).
    const i64 kept = ops::cross_entropy::count_labels(targets, n, store_.vocab);
    if (opt && opt->step < 1)
      throw Error("optimizer step " + std::to_string(opt->step) + ": AdamW counts steps from 1");
    if (opt) ops::adamw::check_hyper(opt->adamw);
    // Weights and adapters uploaded by plain cudaMemcpy (legacy stream) land before the step.
    LVT_CUDA_CHECK(cudaDeviceSynchronize());
    // The host-written head of the control block, then tokens, targets and positions (the
    // kernels always read the planned positions, so one graph serves packed and plain rows).
    StepControl head{};
    head.seed_state[0] = seed_base;
    head.seed_state[1] = step_index;
    head.dloss_base = float(kept > 0 ? grad_scale / double(kept) : 0.0);
    head.clip = opt ? float(opt->clip) : 0.0f;
    if (opt) head.hyper = ops::adamw::device_hyper(opt->adamw, opt->step);
    const cudaStream_t st = compute();
    LVT_CUDA_CHECK(cudaMemcpyAsync(io(idx_.io.tokens), tokens, std::size_t(n) * 4, cudaMemcpyHostToDevice, st));
    LVT_CUDA_CHECK(cudaMemcpyAsync(io(idx_.io.targets), targets, std::size_t(n) * 4, cudaMemcpyHostToDevice, st));
    LVT_CUDA_CHECK(cudaMemcpyAsync(io(idx_.io.positions), positions ? positions : unpacked_positions_.data(),
                                   std::size_t(n) * 4, cudaMemcpyHostToDevice, st));
    LVT_CUDA_CHECK(cudaMemcpyAsync(control(), &head, offsetof(StepControl, inv_freq), cudaMemcpyHostToDevice, st));
    if (opt) {
      host_opt_.self = this;
      host_opt_.settings = *opt;
      host_opt_.norm = 0;
      host_opt_.skipped = false;
    }
    // The clip value is a kernel argument: a new one needs new graphs.
    if (opt && float(opt->clip) != baked_clip_) {
      drop_graphs();
      baked_clip_ = float(opt->clip);
    }
    const int m = mode(train, opt != nullptr);
    if (use_graphs_ && graphs_[std::size_t(m)]) {
      LVT_CUDA_CHECK(cudaGraphLaunch(graphs_[std::size_t(m)], st));
    } else if (use_graphs_ && eager_runs_[std::size_t(m)] > 0) {
      cudaGraph_t g = nullptr;
      LVT_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_step(train, opt);
      } catch (...) {
        cudaStreamEndCapture(st, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      LVT_CUDA_CHECK(cudaStreamEndCapture(st, &g));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      LVT_CUDA_CHECK(e);
      graphs_[std::size_t(m)] = exec;
      LVT_CUDA_CHECK(cudaGraphLaunch(exec, st));
    } else {
      enqueue_step(train, opt);
      ++eager_runs_[std::size_t(m)];
    }
    LVT_CUDA_CHECK(cudaStreamSynchronize(st));
    StepControl c;
    LVT_CUDA_CHECK(cudaMemcpy(&c, control(), sizeof c - sizeof c.partials, cudaMemcpyDeviceToHost));
    StepStats stats;
    stats.loss_sum = c.loss_sum;
    stats.tokens = i64(c.kept);
    check_loss(stats.loss_sum, step_index);
    if (opt) {
      if (opt_.offload_optimizer) {
        stats.grad_norm = host_opt_.norm;
        stats.skipped = host_opt_.skipped;
      } else {
        stats.grad_norm = std::sqrt(c.sum_sq);
        stats.skipped = c.scaler.found_inf != 0.0f;
      }
      // bf16 has no loss scale to back off: a non-finite gradient is an error, as on the host.
      if (stats.skipped && !fp16_storage)
        throw Error("non-finite LoRA gradient norm (" + std::to_string(stats.grad_norm) +
                    ") at optimizer step " + std::to_string(opt->step) + " (the update was skipped)");
    }
    return stats;
  }
};

}  // namespace lvt::backend
