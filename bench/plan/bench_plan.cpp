// The planner at run time: one plan (program, buffers, packing, waits, summary) and the --auto
// search, for an 8B and a 70B model.
#include <benchmark/benchmark.h>

#include "lvt/model/presets.hpp"
#include "lvt/plan/planner.hpp"

namespace {

const lvt::ModelConfig* model(int i) {
  return i == 0 ? &lvt::presets::llama_3_1_8b : &lvt::presets::llama_3_1_70b;
}

void BM_make_plan(benchmark::State& state) {
  lvt::PlanOptions o;
  o.offload_weights = true;
  o.checkpoint_every = 1;
  o.offload_checkpoints = true;
  o.seq = 2048;
  const lvt::ModelConfig& m = *model(int(state.range(0)));
  for (auto _ : state) {
    lvt::plan::Plan p = lvt::plan::make_plan(m, o);
    benchmark::DoNotOptimize(p.summary.arena_bytes);
    state.counters["buffers"] = double(p.buffers.size());
    state.counters["actions"] = double(p.actions.size());
  }
  state.SetLabel(m.layers == 32 ? "llama-3.1-8b" : "llama-3.1-70b");
}
BENCHMARK(BM_make_plan)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_auto_search(benchmark::State& state) {
  lvt::PlanOptions o;
  o.seq = 2048;
  o.budget_bytes = int(state.range(0)) == 0 ? 8 * lvt::plan::gib : 24 * lvt::plan::gib;
  o.sm = 89;
  const lvt::ModelConfig& m = *model(int(state.range(0)));
  for (auto _ : state) {
    lvt::plan::Plan p = lvt::plan::search(m, o);
    benchmark::DoNotOptimize(p.summary.arena_bytes);
  }
  state.SetLabel(m.layers == 32 ? "llama-3.1-8b on 8 GiB" : "llama-3.1-70b on 24 GiB");
}
BENCHMARK(BM_auto_search)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
