// One training step on the host backend (forward + backward + AdamW on the LoRA parameters) of
// a small Llama: 4 layers, hidden 256, 8 heads (4 kv), ffn 688, vocab 32000, seq 256, batch 4
// (1024 tokens), LoRA r 16 on all seven projections. tokens/s is the counter to read; the
// variants are the base weights' format (none = fp32, nf4 = NF4 + double quant, dequantized per
// use) and activation checkpointing (off, or every layer: one extra forward per layer).
//   ninja -C build-cli bench/bench_backend && ./build-cli/bench/bench_backend
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "lvt/run.hpp"

namespace {

constexpr lvt::ModelConfig small_model{.arch = lvt::Arch::llama, .layers = 4, .hidden = 256,
                                       .heads = 8, .kv_heads = 4, .head_dim = 32, .ffn = 688,
                                       .vocab = 32000, .tied_embeddings = false,
                                       .rope_theta = 10000.0, .norm_eps = 1e-5,
                                       .max_position = 2048};
constexpr int B = 4, T = 256;

// range(0): 0 fp32 base, 1 nf4 base; range(1): checkpoint every N layers (0: off).
void BM_train_step(benchmark::State& s) {
  lvt::PlanOptions o;
  o.quant = s.range(0) ? lvt::QuantKind::nf4 : lvt::QuantKind::none;
  o.double_quant = s.range(0) != 0;
  o.checkpoint_every = int(s.range(1));
  o.batch = B;
  o.seq = T;
  o.lora_rank = 16;
  o.lora_alpha = 32;
  lvt::Run run(small_model, o);
  run.init_random_weights(1);
  run.init_lora(2);
  std::mt19937 g(3);
  std::uniform_int_distribution<std::int32_t> tok(0, small_model.vocab - 1);
  std::vector<std::int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = tok(g);
  for (auto& t : targets) t = tok(g);
  lvt::backend::OptimizerSettings os;
  os.adamw.lr = 1e-4;
  os.clip = 1.0;
  std::uint64_t step = 0;
  double loss = 0;
  for (auto _ : s) {
    os.step = ++step;
    const lvt::backend::StepStats st = run.backend().step(tokens.data(), targets.data(), &os, 1.0, 7, step);
    loss = st.mean();
    benchmark::DoNotOptimize(loss);
  }
  s.counters["tokens/s"] =
      benchmark::Counter(double(s.iterations()) * B * T, benchmark::Counter::kIsRate);
  s.counters["loss"] = loss;
  s.counters["arena_MiB"] = double(run.backend().plan().summary.arena_bytes) / 1048576.0;
  s.SetLabel(std::string(s.range(0) ? "nf4" : "fp32 base") +
             (s.range(1) ? ", checkpoint every layer" : ", no checkpointing"));
}

}  // namespace

BENCHMARK(BM_train_step)
    ->ArgNames({"nf4", "ckpt"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3)
    ->UseRealTime();

BENCHMARK_MAIN();
