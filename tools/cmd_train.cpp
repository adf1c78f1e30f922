// `lvt train`: fine-tunes LoRA adapters on a token file and writes them as PEFT does.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train_job.hpp"

namespace {

const char* train_help =
    "usage: lvt train --model M --data FILE|--text FILE --out DIR [options] [policies]\n\n"
    "Trains LoRA adapters on consecutive seq + 1 token windows of the file, or on packed rows of\n"
    "training examples (a JSONL file of texts, prompt-completions, conversations), shuffled per\n"
    "epoch unless --shuffle off, and writes DIR/adapter_model.safetensors + DIR/adapter_config.json\n"
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
    "  --backend auto|host|cuda  where the step runs (default auto: the GPU when lvt was built\n"
    "                          with CUDA and one is usable, else the CPU reference)\n"
    "  --checkpoint-every N    (policy) activation checkpoint every N layers, as in lvt plan\n";

}  // namespace

int lvt_cmd_train(int argc, char** argv) {
  using namespace lvt;
  using nlohmann::json;
  namespace fs = std::filesystem;
  std::vector<std::string> switches = cli::policy_switches;
  switches.insert(switches.end(), {"--json", "--help"});
  switches.insert(switches.end(), cli::data_switches.begin(), cli::data_switches.end());
  std::vector<std::string> valued = cli::policy_flags;
  valued.insert(valued.end(), cli::model_data_flags.begin(), cli::model_data_flags.end());
  valued.insert(valued.end(),
                {"--out", "--steps", "--lr", "--weight-decay", "--warmup", "--grad-accum", "--clip",
                 "--seed", "--shuffle", "--adapter-init", "--checkpoint-dir", "--save-every",
                 "--resume", "--stop-after", "--eval-data", "--eval-text", "--eval-batches",
                 "--backend"});
  const cli::Args a = cli::parse_args(argc, argv, switches, valued);
  if (a.has("--help")) {
    std::printf("%s%s%s", train_help, cli::model_data_help, cli::policy_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  const bool as_json = a.has("--json");

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

  std::FILE* info = as_json ? stderr : stdout;
  const fs::path cache_dir = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  cli::Tokens train = cli::open_tokens(a, model, "--data", "--text", true, options.seq, cache_dir, info);
  cli::Tokens eval = cli::open_tokens(a, model, "--eval-data", "--eval-text", false, options.seq, cache_dir, info);
  cli::check_example_flags(a, train, eval);

  cli::TrainJob job{a, model, options, f, out, &train, &eval, eval_batches, as_json,
                    cli::choose_backend(a, options)};
  if (job.backend.cuda) {
    job.options.precision = job.backend.precision;
#if LVT_HAVE_CUDA_BACKEND
    return lvt_train_cuda(job);
#endif
  }
  return cli::train_job<Run>(job);
}
