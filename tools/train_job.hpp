#pragma once
// The bodies of `lvt train` and `lvt eval` once their flags are parsed, written once over the
// run type: `Run` (host backend) in cmd_train.cpp / cmd_eval.cpp, and
// `BasicRun<CudaBackend<bf16 | fp16>>` in cuda_commands.cu, which nvcc compiles.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train_common.hpp"

namespace lvt::cli {

struct TrainJob {
  Args a;
  ModelConfig model;
  PlanOptions options;
  FitOptions f;
  std::filesystem::path out;
  Tokens* train = nullptr;
  Tokens* eval = nullptr;
  std::int64_t eval_batches = 0;
  bool as_json = false;
  BackendChoice backend;
};

template <class R>
int train_job(TrainJob& j) {
  using nlohmann::json;
  namespace fs = std::filesystem;
  const Args& a = j.a;
  const ModelConfig& model = j.model;
  const PlanOptions& options = j.options;
  FitOptions& f = j.f;
  const fs::path& out = j.out;
  Tokens& train = *j.train;
  Tokens& eval = *j.eval;
  const std::int64_t eval_batches = j.eval_batches;
  const bool as_json = j.as_json;
  std::FILE* info = as_json ? stderr : stdout;  // stdout holds only JSON with --json

  R run = make_run<R>(a, model, options);
  std::fprintf(info, "%s\n%s\n%s\n", j.backend.line.c_str(), model_line(a, model).c_str(),
               plan_line(run.backend().plan()).c_str());
  run.init_lora(f.seed);
  if (a.has("--adapter-init")) {
    run.load_adapter(a.get("--adapter-init"));
    std::fprintf(info, "adapter: starting from %s\n", a.get("--adapter-init").c_str());
  }
  if (a.has("--resume")) {
    const fs::path dir = a.get("--resume");
    const io::TrainingCheckpoint c = io::load_checkpoint(dir, &model);
    if (a.has("--seed") && c.seed != f.seed)
      throw Error("--seed " + std::to_string(f.seed) + " differs from the seed " + std::to_string(c.seed) +
                  " of " + (dir / "trainer_state.json").string() + " (the data order would change)");
    f.seed = c.seed;
    if (std::int64_t(c.step) >= f.steps)
      throw Error("--resume " + dir.string() + " is at step " + std::to_string(c.step) +
                  ", not before --steps " + std::to_string(f.steps));
    run.resume(dir);
    std::fprintf(info, "resume: %s at step %lld\n", dir.string().c_str(), static_cast<long long>(run.step()));
  }
  if (train.packed) {
    std::fprintf(info, "data: %s, %s\n", packed_line(train).c_str(), f.shuffle ? "rows shuffled per epoch" : "rows in order");
    if (std::int64_t(train.packed->rows()) < options.batch)
      throw Error(train.flag + " " + train.name + ": " + std::to_string(train.packed->rows()) +
                  " packed rows of --seq " + std::to_string(options.seq) + ", fewer than one --batch of " +
                  std::to_string(options.batch));
  } else {
    const std::int64_t windows = std::int64_t((train.data->size() - 1) / std::uint64_t(options.seq));
    std::fprintf(info, "data: %s %s: %zu tokens, %lld windows of %d, %s\n", train.flag.c_str(),
                 train.name.c_str(), train.data->size(), static_cast<long long>(windows),
                 options.seq + 1, f.shuffle ? "shuffled per epoch" : "in order");
    if (windows < options.batch)
      throw Error(train.flag + " " + train.name + ": " + std::to_string(windows) +
                  " windows of --seq " + std::to_string(options.seq) + ", fewer than one --batch of " +
                  std::to_string(options.batch));
  }
  if (eval.packed) std::fprintf(info, "eval data: %s\n", packed_line(eval).c_str());
  auto evaluate = [&] {
    return eval.packed ? run.evaluate(*eval.packed, eval_batches) : run.evaluate(*eval.data, eval_batches);
  };

  json summary = {{"event", "summary"}, {"backend", run.backend().name()}, {"out", out.string()}};
  if (eval.data || eval.packed) {
    const double before = evaluate();
    summary["eval_loss_before"] = before;
    std::fprintf(info, "eval before: loss %.4f (%s)\n", before, eval.name.c_str());
  }
  f.progress = [&](const Progress& p) {
    if (as_json) {
      const json j = {{"event", "step"},           {"step", p.step},
                      {"steps", p.steps},          {"loss", p.loss},
                      {"lr", p.lr},                {"grad_norm", p.grad_norm},
                      {"tokens_per_s", p.tokens_per_s}, {"eta_s", p.eta_s},
                      {"arena_bytes", p.arena_bytes},   {"pinned_bytes", p.pinned_bytes}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s\n", progress_line(p).c_str());
    }
    std::fflush(stdout);
  };
  const FitResult r = train.packed ? run.fit(*train.packed, f) : run.fit(*train.data, f);
  if (eval.data || eval.packed) {
    const double after = evaluate();
    summary["eval_loss_after"] = after;
    std::fprintf(info, "eval after: loss %.4f (before %.4f)\n", after, summary["eval_loss_before"].get<double>());
  }
  run.save_adapter(out);
  std::vector<std::string> files;
  for (const char* name : {"adapter_model.safetensors", "adapter_config.json"})
    files.push_back((out / name).string());
  const double tok_s = r.seconds > 0 ? double(r.tokens) / r.seconds : 0;
  if (!r.losses.empty())
    std::fprintf(info, "trained %zu steps in %.1f s (%.0f tok/s): loss %.4f -> %.4f\n", r.losses.size(),
                 r.seconds, tok_s, r.losses.front(), r.losses.back());
  for (const auto& file : files)
    std::fprintf(info, "wrote %s (%llu bytes)\n", file.c_str(),
                 static_cast<unsigned long long>(fs::file_size(file)));
  if (!f.checkpoint_dir.empty()) std::fprintf(info, "checkpoint: %s\n", f.checkpoint_dir.string().c_str());
  if (as_json) {
    summary["step"] = run.step();
    summary["steps"] = f.steps;
    summary["losses"] = r.losses;
    summary["seconds"] = r.seconds;
    summary["tokens"] = r.tokens;
    summary["tokens_per_s"] = tok_s;
    summary["arena_bytes"] = run.backend().plan().summary.arena_bytes;
    summary["pinned_bytes"] = run.backend().plan().summary.pinned_bytes;
    summary["files"] = files;
    if (train.packed) {
      summary["examples"] = train.packed->set().examples();
      summary["rows"] = train.packed->rows();
      summary["truncated"] = train.packed->truncated();
    }
    if (!f.checkpoint_dir.empty()) summary["checkpoint"] = f.checkpoint_dir.string();
    std::printf("%s\n", summary.dump().c_str());
  }
  return 0;
}

struct EvalJob {
  Args a;
  ModelConfig model;
  PlanOptions options;
  const Tokens* data = nullptr;
  io::LoraAdapter adapter;
  std::int64_t max_batches = 0;
  bool as_json = false;
  BackendChoice backend;
};

template <class R>
int eval_job(EvalJob& j) {
  const Args& a = j.a;
  const ModelConfig& model = j.model;
  const PlanOptions& options = j.options;
  const Tokens& data = *j.data;
  const io::LoraAdapter& adapter = j.adapter;
  const std::int64_t max_batches = j.max_batches;
  const bool as_json = j.as_json;
  std::FILE* info = as_json ? stderr : stdout;
  (void)model;

  R run = make_run<R>(a, model, options);
  std::fprintf(info, "%s\n%s\n%s\n", j.backend.line.c_str(), model_line(a, model).c_str(),
               plan_line(run.backend().plan()).c_str());
  if (a.has("--adapter")) {
    run.load_adapter(a.get("--adapter"));
    std::fprintf(info, "adapter: %s (r %d, alpha %g, %zu pairs)\n", a.get("--adapter").c_str(),
                 adapter.config.r, adapter.config.alpha, adapter.pairs.size());
  }

  // The windows (or packed rows) evaluate() reads, to count the targets that enter the loss (a
  // loss mask leaves some out).
  std::int64_t tokens = 0, batches = 0;
  std::vector<std::int32_t> in(std::size_t(options.seq)), tgt(in.size()), pos(in.size());
  double loss = 0;
  if (data.packed) {
    std::fprintf(info, "data: %s\n", packed_line(data).c_str());
    const std::int64_t all = std::int64_t(data.packed->rows()) / options.batch;
    if (all == 0)
      throw Error(data.flag + " " + data.name + ": " + std::to_string(data.packed->rows()) +
                  " packed rows of --seq " + std::to_string(options.seq) + ", fewer than one --batch of " +
                  std::to_string(options.batch));
    batches = max_batches > 0 && max_batches < all ? max_batches : all;
    io::PackedLoader loader(*data.packed, false, 0);
    for (std::int64_t w = 0; w < batches * options.batch; ++w) {
      loader.next(in.data(), tgt.data(), pos.data());
      for (std::int32_t t : tgt) tokens += t != io::target_ignore;
    }
    loss = run.evaluate(*data.packed, batches);
  } else {
    io::WindowLoader loader(*data.data, options.seq, io::Split::train, 0.0, false, 0);
    const std::int64_t all = std::int64_t(loader.windows()) / options.batch;
    if (all == 0)
      throw Error(data.flag + " " + data.name + ": " + std::to_string(loader.windows()) +
                  " windows of --seq " + std::to_string(options.seq) + ", fewer than one --batch of " +
                  std::to_string(options.batch));
    batches = max_batches > 0 && max_batches < all ? max_batches : all;
    for (std::int64_t w = 0; w < batches * options.batch; ++w) {
      loader.next(in.data(), tgt.data());
      for (std::int32_t t : tgt) tokens += t != io::target_ignore;
    }
    loss = run.evaluate(*data.data, batches);
  }
  if (as_json) {
    nlohmann::json j = {{"loss", loss},
                        {"perplexity", std::exp(loss)},
                        {"tokens", tokens},
                        {"batches", batches},
                        {"batch", options.batch},
                        {"seq", options.seq},
                        {"data", data.name},
                        {"backend", run.backend().name()}};
    if (a.has("--adapter")) j["adapter"] = a.get("--adapter");
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("eval loss %.4f (perplexity %.2f) over %lld tokens: %lld batches of %d x %d from %s\n",
                loss, std::exp(loss), static_cast<long long>(tokens), static_cast<long long>(batches),
                options.batch, options.seq, data.name.c_str());
  }
  return 0;
}

}  // namespace lvt::cli

#if LVT_HAVE_CUDA_BACKEND
// cuda_commands.cu: the same bodies on the CUDA backend in the job's precision.
int lvt_train_cuda(lvt::cli::TrainJob& job);
int lvt_eval_cuda(lvt::cli::EvalJob& job);
#endif
