// One training step on the host backend (forward + backward + AdamW on the LoRA parameters),
// LoRA r 16 on all seven projections; tokens/s is the counter to read.
//   BM_train_step: the small Llama (4 layers, hidden 256, 8 heads / 4 kv, ffn 688, vocab 32000),
//     batch 4 x seq 256; the variants are the base weights' format (none = fp32, nf4 = NF4 +
//     double quant, dequantized per use) and activation checkpointing (off, or every layer: one
//     extra forward per layer).
//   BM_smollm2_step: SmolLM2-135M's shapes (30 layers, hidden 576, 9 heads / 3 kv, ffn 1536,
//     vocab 49152, tied embeddings), batch 4 x seq 256 and 1 x 1024, fp32 or NF4 base.
//   BM_step_sgemm: the rate of the step's base matrix products alone (one layer's x W^T and dy W
//     of all seven projections, the lm-head's two chunk products), the sgemm rate the step's
//     "GFLOP/s" counter is compared with.
// All at 1 thread and at every core (`threads` 0 = all). --benchmark_filter picks a subset;
// LVT_BENCH_PROFILE=1 adds per-op milliseconds per step ("ms ..." counters).
//   ninja -C build-host bench/bench_backend && ./build-host/bench/bench_backend
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "lvt/run.hpp"

namespace {

constexpr lvt::ModelConfig small_model{.arch = lvt::Arch::llama, .layers = 4, .hidden = 256,
                                       .heads = 8, .kv_heads = 4, .head_dim = 32, .ffn = 688,
                                       .vocab = 32000, .tied_embeddings = false,
                                       .rope_theta = 10000.0, .norm_eps = 1e-5,
                                       .max_position = 2048};
constexpr lvt::ModelConfig smollm2_135m{.arch = lvt::Arch::llama, .layers = 30, .hidden = 576,
                                        .heads = 9, .kv_heads = 3, .head_dim = 64, .ffn = 1536,
                                        .vocab = 49152, .tied_embeddings = true,
                                        .rope_theta = 100000.0, .norm_eps = 1e-5,
                                        .max_position = 8192};

// LVT_BENCH_PROFILE=1: per-op times as counters (a clock read around every op; no measurable
// cost at these shapes, but off by default so tokens/s is the plain step).
const bool profile_ops = std::getenv("LVT_BENCH_PROFILE") != nullptr;

// The matrix-product FLOPs of one step (2 m n k each; causal attention counts its lower
// triangle, T (T + 1) / 2 scores per head): forward (and one recompute per checkpointed layer),
// input gradients, LoRA's products, the lm-head forward and input gradient, attention's two
// forward and five backward products. What "% of the sgemm rate" divides by.
double step_flops(const lvt::ModelConfig& m, const lvt::PlanOptions& o) {
  const double n = double(o.batch) * o.seq, r = o.lora_rank, H = m.hidden;
  const double in[7] = {H, H, H, double(m.q_dim()), H, H, double(m.ffn)};
  const double out[7] = {double(m.q_dim()), double(m.kv_dim()), double(m.kv_dim()), H,
                         double(m.ffn), double(m.ffn), H};
  double fwd = 0, bwd = 0;
  for (int p = 0; p < 7; ++p) {
    fwd += 2 * n * in[p] * out[p] + 2 * n * r * (in[p] + out[p]);  // x W^T, LoRA down + up
    bwd += 2 * n * in[p] * out[p];                                   // dy W
    bwd += 2 * n * r * (out[p] + in[p] + in[p] + in[p] + out[p]);    // dh, h, dA, dx, dB
  }
  const double causal = double(o.batch) * m.heads * (double(o.seq) * (o.seq + 1) / 2) * m.head_dim;
  fwd += 2 * 2 * causal;
  bwd += 5 * 2 * causal;
  const double recompute = o.checkpoint_every > 0 ? fwd : 0;
  const double head = 2 * 2 * n * H * m.vocab;
  return m.layers * (fwd + bwd + recompute) + head;
}

// A field of /proc/self/status in MiB (0 where there is none).
double resident_mib(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  double kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, field, std::strlen(field)) == 0) kib = std::atof(line + std::strlen(field));
  std::fclose(f);
  return kib / 1024.0;
}

int threads_arg(std::int64_t t) { return t > 0 ? int(t) : lvt::ops::parallel::available(); }

void run_steps(benchmark::State& s, const lvt::ModelConfig& m, lvt::PlanOptions o, int threads,
               const std::string& label) {
  o.lora_rank = 16;
  o.lora_alpha = 32;
  lvt::RunOptions ro;
  ro.threads = threads;
  lvt::Run run(m, o, ro);
  run.init_random_weights(1);
  run.init_lora(2);
  std::mt19937 g(3);
  std::uniform_int_distribution<std::int32_t> tok(0, m.vocab - 1);
  const std::int64_t n = std::int64_t(o.batch) * o.seq;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(n)), targets(static_cast<std::size_t>(n));
  for (auto& t : tokens) t = tok(g);
  for (auto& t : targets) t = tok(g);
  lvt::backend::OptimizerSettings os;
  os.adamw.lr = 1e-4;
  os.clip = 1.0;
  std::uint64_t step = 0;
  double loss = 0;
  // one step before timing (first-touch of the arena, OpenBLAS's buffers), then profiled steps
  os.step = ++step;
  run.backend().step(tokens.data(), targets.data(), &os, 1.0, 7, step);
  run.backend().set_profiling(profile_ops);
  run.backend().profile().reset();
  for (auto _ : s) {
    os.step = ++step;
    const lvt::backend::StepStats st = run.backend().step(tokens.data(), targets.data(), &os, 1.0, 7, step);
    loss = st.mean();
    benchmark::DoNotOptimize(loss);
  }
  s.counters["tokens/s"] =
      benchmark::Counter(double(s.iterations()) * double(n), benchmark::Counter::kIsRate);
  s.counters["loss"] = loss;
  s.counters["threads"] = threads;
  s.counters["arena_MiB"] = double(run.backend().plan().summary.arena_bytes) / 1048576.0;
  s.counters["plan_MiB"] = double(run.backend().plan().summary.arena_bytes +
                                  run.backend().plan().summary.pinned_bytes) / 1048576.0;
  // resident memory right after the steps (the arena, the pinned pool, OpenBLAS's buffers, the
  // program), and the process's peak so far (which includes init_random_weights' temporaries:
  // run one benchmark per process to read it per shape)
  s.counters["rss_MiB"] = resident_mib("VmRSS:");
  s.counters["peak_rss_MiB"] = resident_mib("VmHWM:");
  s.counters["GFLOP/step"] = step_flops(m, o) / 1e9;
  s.counters["GFLOP/s"] = benchmark::Counter(double(s.iterations()) * step_flops(m, o) / 1e9,
                                             benchmark::Counter::kIsRate);
  if (profile_ops) {  // ms per step of each kind of op
    const lvt::backend::HostProfile& p = run.backend().profile();
    for (int i = 0; i < lvt::backend::HostProfile::count; ++i)
      if (p.calls[i] > 0)
        s.counters[std::string("ms ") + lvt::backend::HostProfile::names[i]] =
            1e3 * p.seconds[i] / double(s.iterations());
  }
  s.SetLabel(label);
}

// range(0): 0 fp32 base, 1 nf4 base; range(1): checkpoint every N layers (0: off);
// range(2): threads (0: all).
void BM_train_step(benchmark::State& s) {
  lvt::PlanOptions o;
  o.quant = s.range(0) ? lvt::QuantKind::nf4 : lvt::QuantKind::none;
  o.double_quant = s.range(0) != 0;
  o.checkpoint_every = int(s.range(1));
  o.batch = 4;
  o.seq = 256;
  run_steps(s, small_model, o, threads_arg(s.range(2)),
            std::string(s.range(0) ? "nf4" : "fp32 base") +
                (s.range(1) ? ", checkpoint every layer" : ", no checkpointing"));
}

// range(0): 0 fp32 base, 1 nf4; range(1): 0 batch 4 x seq 256, 1 batch 1 x seq 1024;
// range(2): threads (0: all).
void BM_smollm2_step(benchmark::State& s) {
  lvt::PlanOptions o;
  o.quant = s.range(0) ? lvt::QuantKind::nf4 : lvt::QuantKind::none;
  o.double_quant = s.range(0) != 0;
  o.batch = s.range(1) ? 1 : 4;
  o.seq = s.range(1) ? 1024 : 256;
  run_steps(s, smollm2_135m, o, threads_arg(s.range(2)),
            std::string("SmolLM2-135M, ") + (s.range(0) ? "nf4" : "fp32 base") + ", " +
                std::to_string(o.batch) + " x " + std::to_string(o.seq));
}

// The sgemm rate at the step's own shapes, in the same run: one layer's base products (forward
// x W^T and input gradient dy W of all seven projections) and the lm-head's two chunk products,
// through ops::matmul::gemm (OpenBLAS, split over the threads as the step splits them).
// range(0): 0 the small model (4 x 256), 1 SmolLM2 4 x 256, 2 SmolLM2 1 x 1024 (the same token
// count: the same shapes); range(1): threads (0: all).
void BM_step_sgemm(benchmark::State& s) {
  const lvt::ModelConfig& m = s.range(0) ? smollm2_135m : small_model;
  lvt::PlanOptions o;
  o.batch = s.range(0) == 2 ? 1 : 4;
  o.seq = s.range(0) == 2 ? 1024 : 256;
  o.precision = lvt::DType::fp32;
  const std::int64_t n = std::int64_t(o.batch) * o.seq, H = m.hidden;
  const std::int64_t chunk = lvt::plan::loss_chunk_tokens(m, o);
  struct G {
    bool ta, tb;
    std::int64_t M, N, K;
  };
  std::vector<G> gs;
  for (int p = 0; p < 7; ++p) {
    const auto sh = lvt::plan::proj_shape(m, p);
    gs.push_back({false, true, n, sh.out, sh.in});   // y = x W^T
    gs.push_back({false, false, n, sh.in, sh.out});  // dx += dy W
  }
  gs.push_back({false, true, chunk, m.vocab, H});    // logits = h W^T
  gs.push_back({false, false, chunk, H, m.vocab});   // dh = dlogits W
  std::int64_t most_a = 0, most_b = 0, most_c = 0;
  double flops = 0;
  for (const G& g : gs) {
    most_a = std::max(most_a, g.M * g.K);
    most_b = std::max(most_b, g.K * g.N);
    most_c = std::max(most_c, g.M * g.N);
    flops += 2.0 * double(g.M) * double(g.N) * double(g.K);
  }
  std::vector<float> A(static_cast<std::size_t>(most_a), 0.01f), B(static_cast<std::size_t>(most_b), 0.02f),
      C(static_cast<std::size_t>(most_c), 0.0f);
  const int threads = threads_arg(s.range(1));
  lvt::ops::parallel::set_threads(threads);
  for (auto _ : s)
    for (const G& g : gs)
      lvt::ops::matmul::gemm(g.ta, g.tb, g.M, g.N, g.K, 1.0f, A.data(), g.ta ? g.M : g.K, B.data(),
                             g.tb ? g.K : g.N, 0.0f, C.data(), g.N);
  s.counters["GFLOP/s"] = benchmark::Counter(double(s.iterations()) * flops / 1e9,
                                             benchmark::Counter::kIsRate);
  s.counters["threads"] = threads;
  s.SetLabel(lvt::ops::matmul::blas::setup().library + " " + lvt::ops::matmul::blas::setup().core +
             " kernels (" + lvt::ops::matmul::blas::setup().build + " build)");
}

}  // namespace

BENCHMARK(BM_step_sgemm)
    ->ArgNames({"shape", "threads"})
    ->ArgsProduct({{0, 1}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0)
    ->UseRealTime();

BENCHMARK(BM_train_step)
    ->ArgNames({"nf4", "ckpt", "threads"})
    ->ArgsProduct({{0, 1}, {0, 1}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3)
    ->UseRealTime();

BENCHMARK(BM_smollm2_step)
    ->ArgNames({"nf4", "shape", "threads"})
    ->ArgsProduct({{0, 1}, {0, 1}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2)
    ->UseRealTime();

BENCHMARK_MAIN();
