// Whole-step GPU benchmarks (Google Benchmark): one training step of the CUDA backend
// (CudaBackend<bf16>: forward, loss, backward, AdamW on the LoRA parameters) at Llama-3.2-1B and
// Llama-3.1-8B shapes, each against floors measured by the same binary in the same run.
//
//   BM_floor_h2d_pinned/1GiB   cudaMemcpyAsync of 1 GiB from cudaHostAlloc memory to the device:
//                              the PCIe floor of a streamed step (GBps, one direction)
//   BM_step                    resident NF4 + double-quant weights, every activation kept
//   BM_step_checkpointed       the same with checkpoint_every = 4 (recomputes in backward)
//   BM_step_streamed           offload_weights with 2 or 3 ring slots (and checkpoint_every 4 with
//                              offloaded checkpoints): of_floor = step_s / max(compute_s,
//                              transfer_s), compute_s = the resident step of the same shape and
//                              checkpointing, transfer_s = host->device bytes / the h2d floor
//   BM_step_eager              graphs off (every action enqueued each step) against the replayed
//                              graph on the same backend: graph_speedup = eager / graph
//
// Setup: batch 1, seq 2048 or 4096, NF4 + double quantization (block 64), LoRA r 16 / alpha 32 on
// all seven projections, bf16 storage. Frozen weights are random (approximately normal, std 0.02;
// norms 1): one NF4 tensor per projection kind, quantized once per model on the host and shared
// by every layer, and one fp32 table for the embedding and the untied lm-head, so building an 8B
// backend costs seconds rather than the minutes BasicRun::init_random_weights spends drawing and
// quantizing 8 billion values (the step's cost does not depend on the values). LoRA A and B are
// small random values (never zeros), tokens and targets random.
//
// Timing: wall clock around backend().step(), which returns after the step's stream has
// synchronized and its statistics are read back: the time a training loop sees per step, host
// work included (SetIterationTime + UseManualTime). Two warm-up steps first: the first runs
// eagerly, the second is captured as a CUDA graph and replayed from then on, so the timed steps
// are replays (checked; BM_step_eager times eager steps instead).
//
// A configuration that does not fit the GPU's free memory is skipped with the backend's message
// (its numbers: arena needed, free, missing). Without a GPU the binary prints why and exits 77
// (meson's "skipped"); --benchmark_list_tests still lists the benchmarks.
//   ninja -C build bench/backend/bench_step_cuda && ./build/bench/backend/bench_step_cuda
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "lvt/backend/cuda.hpp"
#include "lvt/model/presets.hpp"
#include "lvt/quant/blockwise.hpp"
#include "../gpu_bench_main.hpp"

namespace {

using Backend = lvt::backend::CudaBackend<lvt::bf16>;
using i64 = std::int64_t;
namespace plan = lvt::plan;

constexpr double gib = double(i64(1) << 30);
constexpr i64 floor_copy_bytes = i64(1) << 30;
constexpr int floor_copies = 5;      // h2d copies timed when a streamed benchmark needs the floor
constexpr int floor_steps = 3;       // resident steps timed when a streamed benchmark needs them
constexpr int warm_up_steps = 2;     // eager, then captured (and replayed)

struct Model {
  const char* name;
  const lvt::ModelConfig* config;
};
const Model llama1b{"llama3_1b", &lvt::presets::llama_3_2_1b};
const Model llama8b{"llama3_8b", &lvt::presets::llama_3_1_8b};

// The policies a benchmark varies; the rest is the QLoRA recipe (PlanOptions' defaults spelled out).
struct Config {
  int seq = 2048;
  int checkpoint_every = 0;
  bool offload_weights = false;
  int weight_slots = 2;
  bool offload_checkpoints = false;
};

lvt::PlanOptions options(const Config& c) {
  lvt::PlanOptions o;
  o.quant = lvt::QuantKind::nf4;
  o.double_quant = true;
  o.quant_block = 64;
  o.lora_rank = 16;
  o.lora_alpha = 32;
  o.lora_targets = lvt::targets::all;
  o.batch = 1;
  o.seq = c.seq;
  o.checkpoint_every = c.checkpoint_every;
  o.offload_weights = c.offload_weights;
  o.weight_slots = c.weight_slots;
  o.offload_checkpoints = c.offload_checkpoints;
  return o;
}

// ---- random frozen weights, made once per model ---------------------------------------------

// Approximately standard normal (Irwin-Hall: four 16-bit uniforms, centered, variance 1) from a
// counter, so a tensor fills in parallel and the same index always gives the same value.
float pseudo_normal(std::uint64_t seed, std::uint64_t i) {
  const std::uint64_t r = lvt::ops::mix64(seed + (i + 1) * 0x9e3779b97f4a7c15ull);
  const float sum = float(r & 0xffff) + float((r >> 16) & 0xffff) + float((r >> 32) & 0xffff) +
                    float(r >> 48);
  return (sum / 65536.0f - 2.0f) * 1.7320508f;
}

template <class F>
void parallel_for(i64 n, F body) {
  const i64 workers = std::max<i64>(1, std::min<i64>(std::thread::hardware_concurrency(), 16));
  std::vector<std::thread> pool;
  for (i64 w = 0; w < workers; ++w)
    pool.emplace_back([=] {
      for (i64 i = n * w / workers; i < n * (w + 1) / workers; ++i) body(i);
    });
  for (std::thread& t : pool) t.join();
}

struct HostWeights {
  std::vector<float> table;  // [vocab, hidden]: the embedding table, and the untied lm-head
  std::vector<float> ones;   // RMSNorm weights
  std::array<lvt::quant::Quant4, plan::proj_count> proj;  // one per kind, shared by every layer
};

const HostWeights& host_weights(const Model& m) {
  static std::map<std::string, std::unique_ptr<HostWeights>> cache;
  std::unique_ptr<HostWeights>& w = cache[m.name];
  if (w) return *w;
  const lvt::ModelConfig& c = *m.config;
  const lvt::PlanOptions o = options(Config{});
  auto h = std::make_unique<HostWeights>();
  constexpr float stddev = 0.02f;
  h->table.resize(std::size_t(i64(c.vocab) * c.hidden));
  float* table = h->table.data();
  parallel_for(i64(h->table.size()), [table](i64 i) { table[i] = stddev * pseudo_normal(1, std::uint64_t(i)); });
  h->ones.assign(std::size_t(c.hidden), 1.0f);
  // The seven projections quantize in parallel, each on one thread (quantize4 is serial).
  std::vector<std::thread> pool;
  std::vector<std::string> errors(plan::proj_count);
  for (int p = 0; p < plan::proj_count; ++p)
    pool.emplace_back([&, p] {
      try {
        const plan::ProjShape sh = plan::proj_shape(c, p);
        std::vector<float> v(std::size_t(sh.out * sh.in));
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = stddev * pseudo_normal(std::uint64_t(2 + p), i);
        h->proj[std::size_t(p)] = lvt::quant::quantize4(lvt::quant::Code4::nf4, v.data(), i64(v.size()),
                                                        o.quant_block, o.double_quant,
                                                        lvt::targets::names[p]);
      } catch (const std::exception& e) {
        errors[std::size_t(p)] = e.what();
      }
    });
  for (std::thread& t : pool) t.join();
  for (const std::string& e : errors)
    if (!e.empty()) throw lvt::Error("quantizing the random weights: " + e);
  w = std::move(h);
  return *w;
}

// A backend for this model and configuration with the random weights and a random adapter.
// Throws lvt::Error (with the numbers) when the plan's arena does not fit the GPU's free memory.
std::unique_ptr<Backend> make_backend(const Model& m, const Config& cfg) {
  const HostWeights& w = host_weights(m);
  const lvt::ModelConfig& c = *m.config;
  auto b = std::make_unique<Backend>(c, options(cfg));
  b->set_embed_table(w.table.data());
  if (!c.tied_embeddings) b->set_lm_head(w.table.data());
  b->set_final_norm(w.ones.data());
  for (int l = 0; l < c.layers; ++l) {
    for (int p = 0; p < plan::proj_count; ++p)
      if (!b->set_projection_quant4(l, p, w.proj[std::size_t(p)]))
        throw lvt::Error(std::string("layer ") + std::to_string(l) + " " + lvt::targets::names[p] +
                         ": the random NF4 tensor does not match the plan's format");
    b->set_norm(l, 0, w.ones.data());
    b->set_norm(l, 1, w.ones.data());
  }
  const std::span<float> lora = b->lora_params();
  for (std::size_t i = 0; i < lora.size(); ++i) lora[i] = 0.01f * pseudo_normal(100, i);
  b->sync_lora_to_device();
  b->zero_grads();
  return b;
}

// ---- stepping -------------------------------------------------------------------------------

class Stepper {
 public:
  Stepper(Backend& b, const Config& c) : b_(b) {
    const i64 n = i64(c.seq);  // batch 1
    const int vocab = b.model().vocab;
    for (i64 i = 0; i < n; ++i) {
      tokens_.push_back(std::int32_t(lvt::ops::mix64(std::uint64_t(3 * n + i)) % std::uint64_t(vocab)));
      targets_.push_back(std::int32_t(lvt::ops::mix64(std::uint64_t(7 * n + i)) % std::uint64_t(vocab)));
    }
    os_.adamw.lr = 1e-4;
    os_.adamw.weight_decay = 0.0;
    os_.clip = 1.0;  // constant: a new clip value would need new graphs
  }
  // Seconds of one optimizer step as a training loop sees it.
  double step() {
    os_.step = std::int64_t(++steps_);
    const auto t0 = std::chrono::steady_clock::now();
    const lvt::backend::StepStats s = b_.step(tokens_.data(), targets_.data(), &os_, 1.0, 7, steps_);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(s.loss_sum);
    return t;
  }
  // Two steps: the first eager, the second captured as a graph (when graphs are on). Checks that
  // the steps timed next are what the benchmark says they are.
  void warm_up(bool graphs) {
    for (int i = 0; i < warm_up_steps; ++i) step();
    if (b_.graph_ready(true, true) != graphs)
      throw lvt::Error(graphs ? "the step was not captured as a CUDA graph after the warm-up steps"
                              : "a CUDA graph was captured with graphs off");
  }
  double mean_s(int steps) {
    double s = 0;
    for (int i = 0; i < steps; ++i) s += step();
    return s / steps;
  }

 private:
  Backend& b_;
  std::vector<std::int32_t> tokens_, targets_;
  lvt::backend::OptimizerSettings os_;
  std::uint64_t steps_ = 0;
};

// Times the benchmark's iterations; returns the mean step seconds (0 when skipped).
double timed_loop(benchmark::State& state, Stepper& s) {
  double total = 0;
  for (auto _ : state) {
    const double t = s.step();
    state.SetIterationTime(t);
    total += t;
  }
  return state.iterations() ? total / double(state.iterations()) : 0.0;
}

// ---- FLOPs per step ---------------------------------------------------------------------------
// model: the usual model-FLOPs convention, so the rate reads like the MFU figures other trainers
// quote: 2 * P * N forward + 4 * P * N backward over the frozen linear weights P (seven
// projections per layer, and the lm-head) for N tokens, as if every weight also had a weight
// gradient; plus causal attention, forward 4 * B * H * T^2 * D / 2 and backward 2x that. LoRA's
// own FLOPs, recomputation and the elementwise ops are not counted.
// executed: what the step runs. Frozen weights need only dx in backward (2 * P * N, no weight
// gradient); every forward of a layer (recomputes included) costs 2 * P * N plus attention's
// forward; attention backward is 2.5x forward (FlashAttention's convention: QK^T recomputed);
// LoRA per projection is 2 * N * r * (in + out) forward and 2 * N * r * (3 in + 2 out) backward
// (dh, h again, dA, dx, dB); the lm-head and loss are 4 * N * hidden * vocab (logits, then dx).
struct StepFlops {
  double model = 0, executed = 0;
};

StepFlops step_flops(const lvt::ModelConfig& m, const lvt::PlanOptions& o, const plan::Summary& s) {
  const double N = double(o.batch) * o.seq, T = o.seq, r = o.lora_rank;
  double p_layer = 0, lora_fwd = 0, lora_bwd = 0;
  for (int p = 0; p < plan::proj_count; ++p) {
    const plan::ProjShape sh = plan::proj_shape(m, p);
    const double in = double(sh.in), out = double(sh.out);
    p_layer += in * out;
    if (o.lora_targets & (1u << p)) {
      lora_fwd += 2 * N * r * (in + out);
      lora_bwd += 2 * N * r * (3 * in + 2 * out);
    }
  }
  const double p_head = double(m.hidden) * double(m.vocab);
  const double attn_fwd = 4.0 * o.batch * m.heads * T * T * m.head_dim / 2.0;
  const double L = m.layers;
  StepFlops f;
  f.model = 6.0 * (L * p_layer + p_head) * N + 3.0 * L * attn_fwd;
  const double layer_fwd = 2 * p_layer * N + attn_fwd + lora_fwd;
  const double layer_bwd = 2 * p_layer * N + 2.5 * attn_fwd + lora_bwd;
  f.executed = (L + s.recompute_layers) * layer_fwd + s.backward_layers * layer_bwd + 2 * 2 * N * p_head;
  return f;
}

void report_step(benchmark::State& state, const Backend& b, double step_s) {
  const plan::Plan& p = b.plan();
  const StepFlops f = step_flops(b.model(), b.options(), p.summary);
  state.counters["step_s"] = step_s;
  state.counters["tokens_per_s"] = double(plan::tokens(b.options())) / step_s;
  state.counters["arena_gib"] = double(p.summary.arena_bytes) / gib;
  state.counters["pinned_gib"] = double(p.summary.pinned_bytes) / gib;
  state.counters["model_tflops"] = f.model / step_s / 1e12;
  state.counters["hw_tflops"] = f.executed / step_s / 1e12;
}

// ---- floors measured in this run ----------------------------------------------------------------

// 1 GiB from cudaHostAlloc memory to the device on a non-blocking stream, timed with events.
class PinnedCopy {
 public:
  PinnedCopy() {
    try {
      LVT_CUDA_CHECK(cudaHostAlloc(&host_, std::size_t(floor_copy_bytes), cudaHostAllocDefault));
      std::memset(host_, 0x5a, std::size_t(floor_copy_bytes));
      LVT_CUDA_CHECK(cudaMalloc(&dev_, std::size_t(floor_copy_bytes)));
      LVT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      LVT_CUDA_CHECK(cudaEventCreate(&start_));
      LVT_CUDA_CHECK(cudaEventCreate(&stop_));
      time_once_s();  // the first copy pays for setting up the path
    } catch (...) {
      release();  // a constructor that throws runs no destructor
      throw;
    }
  }
  ~PinnedCopy() { release(); }
  PinnedCopy(const PinnedCopy&) = delete;
  PinnedCopy& operator=(const PinnedCopy&) = delete;
  double time_once_s() {
    LVT_CUDA_CHECK(cudaEventRecord(start_, stream_));
    LVT_CUDA_CHECK(cudaMemcpyAsync(dev_, host_, std::size_t(floor_copy_bytes), cudaMemcpyHostToDevice, stream_));
    LVT_CUDA_CHECK(cudaEventRecord(stop_, stream_));
    LVT_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    LVT_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return double(ms) / 1e3;
  }

 private:
  void release() {
    if (stop_) cudaEventDestroy(stop_);
    if (start_) cudaEventDestroy(start_);
    if (stream_) cudaStreamDestroy(stream_);
    if (dev_) cudaFree(dev_);
    if (host_) cudaFreeHost(host_);
    (void)cudaGetLastError();  // a failed allocation leaves its error behind for the next check
  }
  void* host_ = nullptr;
  void* dev_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

double h2d_floor_bytes_per_s = 0;  // set by BM_floor_h2d_pinned, or by the first streamed step

double h2d_bytes_per_s() {
  if (h2d_floor_bytes_per_s > 0) return h2d_floor_bytes_per_s;
  PinnedCopy c;
  double s = 0;
  for (int i = 0; i < floor_copies; ++i) s += c.time_once_s();
  h2d_floor_bytes_per_s = double(floor_copy_bytes) * floor_copies / s;
  return h2d_floor_bytes_per_s;
}

void BM_floor_h2d_pinned(benchmark::State& state) {
  PinnedCopy c;
  double total = 0;
  for (auto _ : state) {
    const double t = c.time_once_s();
    state.SetIterationTime(t);
    total += t;
  }
  if (state.iterations() == 0) return;
  h2d_floor_bytes_per_s = double(floor_copy_bytes) * double(state.iterations()) / total;
  state.counters["GBps"] = h2d_floor_bytes_per_s / 1e9;
}

// Resident step seconds per (model, seq, checkpointing), from BM_step / BM_step_checkpointed or
// measured by the streamed benchmark that needs them first.
std::map<std::string, double> resident_step_s;

std::string resident_key(const Model& m, const Config& c) {
  return std::string(m.name) + "/seq:" + std::to_string(c.seq) + "/ckpt:" + std::to_string(c.checkpoint_every);
}

// ---- the benchmarks ---------------------------------------------------------------------------

void BM_step(benchmark::State& state, const Model& m, const Config& c) {
  const std::unique_ptr<Backend> b = make_backend(m, c);
  Stepper s(*b, c);
  s.warm_up(true);
  const double step_s = timed_loop(state, s);
  if (step_s <= 0) return;
  if (!c.offload_weights && !c.offload_checkpoints) resident_step_s[resident_key(m, c)] = step_s;
  report_step(state, *b, step_s);
}

// The streamed step against max(compute floor, transfer floor). The compute floor is the resident
// step with the same shape and checkpointing (checkpoints kept on the device): what the step
// would cost if no byte had to cross PCIe. The transfer floor is every host-to-device byte of the
// plan (layer fetches; checkpoint loads when they are offloaded) at the pinned h2d rate; the
// checkpoint saves go the other direction, on the other half of the link.
void BM_step_streamed(benchmark::State& state, const Model& m, const Config& c) {
  const double h2d = h2d_bytes_per_s();
  Config resident = c;
  resident.offload_weights = false;
  resident.offload_checkpoints = false;
  const std::string key = resident_key(m, resident);
  std::string no_compute_floor;
  if (!resident_step_s.count(key)) {
    try {
      const std::unique_ptr<Backend> rb = make_backend(m, resident);
      Stepper rs(*rb, resident);
      rs.warm_up(true);
      resident_step_s[key] = rs.mean_s(floor_steps);
    } catch (const std::exception& e) {
      no_compute_floor = e.what();
    }
  }
  const double compute_s = no_compute_floor.empty() ? resident_step_s[key] : 0.0;

  const std::unique_ptr<Backend> b = make_backend(m, c);
  Stepper s(*b, c);
  s.warm_up(true);
  const double step_s = timed_loop(state, s);
  if (step_s <= 0) return;
  report_step(state, *b, step_s);

  i64 fetched = 0, to_device = 0;
  for (const plan::Action& a : b->plan().actions) {
    if (a.op == plan::Op::fetch_weights) fetched += a.bytes;
    if (a.stream == plan::Stream::h2d) to_device += a.bytes;
  }
  const double transfer_s = double(to_device) / h2d;
  state.counters["streamed_gib"] = double(fetched) / gib;
  state.counters["h2d_gib"] = double(to_device) / gib;
  state.counters["h2d_GBps"] = h2d / 1e9;
  state.counters["transfer_s"] = transfer_s;
  state.counters["compute_s"] = compute_s;
  state.counters["of_floor"] = step_s / std::max(compute_s, transfer_s);
  if (!no_compute_floor.empty())
    state.SetLabel("no compute floor (of_floor is against the transfer floor only): the resident "
                   "step did not run: " + no_compute_floor);
}

// Every action enqueued on every step (graphs off), then the same backend with graphs on: the
// next step is captured, and as many replays as eager steps are timed for graph_step_s.
void BM_step_eager(benchmark::State& state, const Model& m, const Config& c) {
  const std::unique_ptr<Backend> b = make_backend(m, c);
  b->use_graphs(false);
  Stepper s(*b, c);
  s.warm_up(false);
  const double eager_s = timed_loop(state, s);
  if (eager_s <= 0) return;
  report_step(state, *b, eager_s);
  b->use_graphs(true);
  s.warm_up(true);
  const double graph_s = s.mean_s(int(state.iterations()));
  state.counters["graph_step_s"] = graph_s;
  state.counters["graph_speedup"] = eager_s / graph_s;
}

// ---- registration -----------------------------------------------------------------------------
// A benchmark that throws (a plan larger than the GPU's free memory, a CUDA error) is skipped
// with the message instead of ending the run.
template <class F>
benchmark::internal::Benchmark* add(const std::string& name, int iterations, F body) {
  return benchmark::RegisterBenchmark(name.c_str(), [body](benchmark::State& state) {
           try {
             body(state);
           } catch (const std::exception& e) {
             state.SkipWithError(e.what());
           }
         })
      ->UseManualTime()
      ->Iterations(iterations)
      ->Unit(benchmark::kMillisecond);
}

void register_all() {
  constexpr int seqs[] = {2048, 4096};
  add("BM_floor_h2d_pinned/1GiB", 10, BM_floor_h2d_pinned);
  for (const Model* m : {&llama1b, &llama8b})
    for (int seq : seqs) {
      const Config c{.seq = seq};
      add(std::string("BM_step/") + m->name + "/seq:" + std::to_string(seq), m == &llama1b ? 10 : 5,
          [m, c](benchmark::State& s) { BM_step(s, *m, c); });
    }
  for (int seq : seqs) {
    const Config c{.seq = seq, .checkpoint_every = 4};
    add("BM_step_checkpointed/llama3_8b/seq:" + std::to_string(seq) + "/ckpt:4", 5,
        [c](benchmark::State& s) { BM_step(s, llama8b, c); });
  }
  for (int seq : seqs) {
    const std::string base = "BM_step_streamed/llama3_8b/seq:" + std::to_string(seq);
    for (int slots : {2, 3}) {
      const Config c{.seq = seq, .offload_weights = true, .weight_slots = slots};
      add(base + "/slots:" + std::to_string(slots), 5,
          [c](benchmark::State& s) { BM_step_streamed(s, llama8b, c); });
    }
    const Config c{.seq = seq, .checkpoint_every = 4, .offload_weights = true, .weight_slots = 2,
                   .offload_checkpoints = true};
    add(base + "/slots:2/ckpt:4_offloaded", 5,
        [c](benchmark::State& s) { BM_step_streamed(s, llama8b, c); });
  }
  for (int seq : seqs) {
    const Config c{.seq = seq};
    add("BM_step_eager/llama3_1b/seq:" + std::to_string(seq), 10,
        [c](benchmark::State& s) { BM_step_eager(s, llama1b, c); });
  }
}

}  // namespace

int main(int argc, char** argv) {
  return gpu_benchmark_main(argc, argv, "bench_step_cuda", register_all, [] {}, [] {});
}
