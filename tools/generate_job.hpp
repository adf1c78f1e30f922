#pragma once
// The body of `lvt generate` once its flags are parsed and the prompt tokenized, written once
// over the run type: `Run` (host backend) in cmd_generate.cpp, and
// `BasicRun<CudaBackend<bf16 | fp16>>` in cuda_commands.cu, which nvcc compiles. It makes the
// run, says which backend and plan it has, loads the adapter and generates; the caller streams
// the text (GenerateOptions::on_token) and prints the summary. No tokenizer here: nvcc never
// compiles text/.
#include <cstdio>
#include <string>
#include <vector>

#include "train_common.hpp"

namespace lvt::cli {

struct GenerateJob {
  Args a;
  ModelConfig model;
  PlanOptions options;
  GenerateOptions g;
  std::vector<std::int32_t> prompt;
  std::int64_t context = 0;
  io::LoraConfig adapter;  // what --adapter holds (for its line)
  std::size_t adapter_pairs = 0;
  BackendChoice backend;
};

template <class R>
GenerateResult generate_job(GenerateJob& j) {
  const Args& a = j.a;
  R run = make_run<R>(a, j.model, j.options);
  std::fprintf(stderr, "%s\n%s\n%s\n", j.backend.line.c_str(), model_line(a, j.model).c_str(),
               plan_line(run.backend().plan()).c_str());
  const GenerateOptions& g = j.g;
  std::fprintf(stderr, "generate: KV cache %s for %lld tokens; %s\n",
               plan::format_bytes(run.backend().plan().summary.kind_bytes[int(plan::Kind::kv_cache)]).c_str(),
               static_cast<long long>(j.context),
               g.temperature > 0
                   ? ("sampling (temperature " + std::to_string(g.temperature) + ", top-k " +
                      std::to_string(g.top_k) + ", top-p " + std::to_string(g.top_p) + ", seed " +
                      std::to_string(g.seed) + ")")
                         .c_str()
                   : "greedy");
  if (a.has("--adapter")) {
    run.load_adapter(a.get("--adapter"));
    std::fprintf(stderr, "adapter: %s (r %d, alpha %g, %zu pairs)\n", a.get("--adapter").c_str(),
                 j.adapter.r, j.adapter.alpha, j.adapter_pairs);
  }
  return run.generate(j.prompt, g);
}

}  // namespace lvt::cli

#if LVT_HAVE_CUDA_BACKEND
// cuda_commands.cu: the same body on the CUDA backend in the job's precision.
lvt::GenerateResult lvt_generate_cuda(lvt::cli::GenerateJob& job);
#endif
