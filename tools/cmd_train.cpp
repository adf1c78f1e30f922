// `lvt train`: fine-tunes LoRA adapters on a token file and writes them as PEFT does.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train_common.hpp"

namespace {

const char* train_help =
    "usage: lvt train --model M --data FILE|--text FILE --out DIR [options] [policies]\n\n"
    "Trains LoRA adapters on consecutive seq + 1 token windows of the file (shuffled per epoch\n"
    "unless --shuffle off) and writes DIR/adapter_model.safetensors + DIR/adapter_config.json\n"
    "(PEFT's format). Prints the backend, the memory plan and a progress line per step.\n\n"
    "  --out DIR               where the adapter is written (required)\n"
    "  --steps N               optimizer steps (default 100)\n"
    "  --lr X                  peak learning rate (default 2e-4); linear warmup, cosine decay\n"
    "  --warmup K              warmup steps (default 0)\n"
    "  --weight-decay W        AdamW weight decay (default 0)\n"
    "  --grad-accum G          micro-batches per optimizer step (default 1)\n"
    "  --clip C                global gradient-norm clip (default 1; 0: none)\n"
    "  --seed S                data order and dropout (default 0)\n"
    "  --shuffle on|off        shuffled windows per epoch (default on); off: consecutive windows\n"
    "                          from the start of the file\n"
    "  --adapter-init DIR      start from this PEFT adapter (its r, alpha, targets and layers\n"
    "                          must be the run's)\n"
    "  --checkpoint-dir DIR    write a training checkpoint (adapter, AdamW state, step, data\n"
    "                          position, seed) there, at the end and every --save-every steps\n"
    "  --save-every N          steps between training checkpoints (default 0: only at the end)\n"
    "  --resume DIR            continue exactly from a training checkpoint (same flags and data)\n"
    "  --stop-after N          stop after optimizer step N of the --steps schedule\n"
    "  --eval-data FILE        eval loss on this token file before and after training\n"
    "  --eval-text FILE        the same on the bytes of a text file\n"
    "  --eval-batches N        batches of the eval file (default 0: all)\n"
    "  --json                  one JSON object per step and a summary object on stdout\n"
    "                          (the other lines go to stderr)\n"
    "  --checkpoint-every N    (policy) activation checkpoint every N layers, as in lvt plan\n";

}  // namespace

int lvt_cmd_train(int argc, char** argv) {
  using namespace lvt;
  using nlohmann::json;
  namespace fs = std::filesystem;
  std::vector<std::string> switches = cli::policy_switches;
  switches.insert(switches.end(), {"--json", "--help"});
  std::vector<std::string> valued = cli::policy_flags;
  valued.insert(valued.end(), cli::model_data_flags.begin(), cli::model_data_flags.end());
  valued.insert(valued.end(),
                {"--out", "--steps", "--lr", "--weight-decay", "--warmup", "--grad-accum", "--clip",
                 "--seed", "--shuffle", "--adapter-init", "--checkpoint-dir", "--save-every",
                 "--resume", "--stop-after", "--eval-data", "--eval-text", "--eval-batches"});
  const cli::Args a = cli::parse_args(argc, argv, switches, valued);
  if (a.has("--help")) {
    std::printf("%s%s%s", train_help, cli::model_data_help, cli::policy_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  const bool as_json = a.has("--json");
  std::FILE* info = as_json ? stderr : stdout;  // stdout holds only JSON with --json

  // Flags first, so a typo fails before any work.
  const ModelConfig model = cli::model_of(a);
  const PlanOptions options = cli::plan_options(a);
  if (!a.has("--out")) throw Error("--out DIR is required (where the PEFT adapter is written)");
  const fs::path out = a.get("--out");
  FitOptions f;
  if (a.has("--steps")) f.steps = cli::parse_int("--steps", a.get("--steps"), 1, 1ll << 40);
  if (a.has("--lr")) f.lr = cli::parse_double("--lr", a.get("--lr"));
  if (!(f.lr > 0)) throw Error("--lr must be positive");
  if (a.has("--weight-decay")) f.weight_decay = cli::parse_double("--weight-decay", a.get("--weight-decay"));
  if (f.weight_decay < 0) throw Error("--weight-decay must be >= 0");
  if (a.has("--warmup")) f.warmup = cli::parse_int("--warmup", a.get("--warmup"), 0, 1ll << 40);
  if (a.has("--grad-accum")) f.grad_accum = int(cli::parse_int("--grad-accum", a.get("--grad-accum"), 1, 1 << 20));
  if (a.has("--clip")) f.clip = cli::parse_double("--clip", a.get("--clip"));
  if (a.has("--seed"))
    f.seed = std::uint64_t(cli::parse_int("--seed", a.get("--seed"), 0, std::numeric_limits<long long>::max()));
  if (a.has("--shuffle")) {
    const std::string s = a.get("--shuffle");
    if (s != "on" && s != "off") throw Error("--shuffle '" + s + "': expected on or off");
    f.shuffle = s == "on";
  }
  if (a.has("--stop-after")) f.stop_after = cli::parse_int("--stop-after", a.get("--stop-after"), 1, f.steps);
  if (a.has("--save-every")) {
    if (!a.has("--checkpoint-dir")) throw Error("--save-every needs --checkpoint-dir DIR");
    f.checkpoint_every = cli::parse_int("--save-every", a.get("--save-every"), 1, 1ll << 40);
  }
  if (a.has("--checkpoint-dir")) f.checkpoint_dir = a.get("--checkpoint-dir");
  if (a.has("--resume") && a.has("--adapter-init"))
    throw Error("--resume and --adapter-init exclude each other (a checkpoint holds the adapter)");
  const std::int64_t eval_batches =
      a.has("--eval-batches") ? cli::parse_int("--eval-batches", a.get("--eval-batches"), 0, 1ll << 40) : 0;

  cli::Tokens train = cli::open_tokens(a, model, "--data", "--text", true);
  cli::Tokens eval = cli::open_tokens(a, model, "--eval-data", "--eval-text", false);

  Run run = cli::make_run(a, model, options);
  std::fprintf(info, "%s\n%s\n%s\n", cli::backend_line().c_str(), cli::model_line(a, model).c_str(),
               cli::plan_line(run.backend().plan()).c_str());
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
  const std::int64_t windows = std::int64_t((train.data->size() - 1) / std::uint64_t(options.seq));
  std::fprintf(info, "data: %s %s: %zu tokens, %lld windows of %d, %s\n", train.flag.c_str(),
               train.name.c_str(), train.data->size(), static_cast<long long>(windows),
               options.seq + 1, f.shuffle ? "shuffled per epoch" : "in order");
  if (windows < options.batch)
    throw Error(train.flag + " " + train.name + ": " + std::to_string(windows) +
                " windows of --seq " + std::to_string(options.seq) + ", fewer than one --batch of " +
                std::to_string(options.batch));

  json summary = {{"event", "summary"}, {"backend", "host"}, {"out", out.string()}};
  if (eval.data) {
    const double before = run.evaluate(*eval.data, eval_batches);
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
  const FitResult r = run.fit(*train.data, f);
  if (eval.data) {
    const double after = run.evaluate(*eval.data, eval_batches);
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
    if (!f.checkpoint_dir.empty()) summary["checkpoint"] = f.checkpoint_dir.string();
    std::printf("%s\n", summary.dump().c_str());
  }
  return 0;
}
