// `lvt eval`: the mean token loss of a model (and optionally a PEFT adapter) over a token file.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train_job.hpp"

namespace {

const char* eval_help =
    "usage: lvt eval --model M --data FILE|--text FILE [--adapter DIR] [--seq T] [--batch B]\n"
    "                [--max-batches N] [--json] [policies]\n\n"
    "Prints the mean token loss over the file's consecutive seq + 1 token windows (from the\n"
    "start; the last partial batch is left out) and the number of tokens it counted.\n\n"
    "  --adapter DIR           a PEFT adapter (adapter_config.json + adapter_model.safetensors);\n"
    "                          its r, alpha, targets and layers set the run's LoRA\n"
    "  --max-batches N         the first N batches only (default 0: all)\n"
    "  --json                  print {\"loss\", \"tokens\", \"batches\", ...} as JSON\n"
    "  --quant ...             evaluate with the base weights quantized as in training\n"
    "  --backend auto|host|cuda  where it runs (default auto: the GPU when usable)\n";

}  // namespace

int lvt_cmd_eval(int argc, char** argv) {
  using namespace lvt;
  std::vector<std::string> switches = cli::policy_switches;
  switches.insert(switches.end(), {"--json", "--help"});
  switches.insert(switches.end(), cli::data_switches.begin(), cli::data_switches.end());
  std::vector<std::string> valued = cli::policy_flags;
  valued.insert(valued.end(), cli::model_data_flags.begin(), cli::model_data_flags.end());
  valued.insert(valued.end(), {"--adapter", "--max-batches", "--backend"});
  const cli::Args a = cli::parse_args(argc, argv, switches, valued);
  if (a.has("--help")) {
    std::printf("%s%s%s", eval_help, cli::model_data_help, cli::policy_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  const bool as_json = a.has("--json");

  const ModelConfig model = cli::model_of(a);
  PlanOptions options = cli::plan_options(a);
  const std::int64_t max_batches =
      a.has("--max-batches") ? cli::parse_int("--max-batches", a.get("--max-batches"), 0, 1ll << 40) : 0;
  io::LoraAdapter adapter;
  if (a.has("--adapter")) {
    for (const char* f : {"--lora-r", "--lora-alpha", "--targets", "--sparse", "--rslora"})
      if (a.has(f))
        throw Error(std::string(f) + " comes from the adapter's adapter_config.json with --adapter");
    const std::string dir = a.get("--adapter");
    adapter = io::load_lora_adapter(dir, &model);
    cli::lora_from_adapter(options, adapter.config, model.layers,
                      (std::filesystem::path(dir) / "adapter_config.json").string());
  }
  options.lora_dropout = 0;  // evaluation: no dropout
  cli::Tokens data = cli::open_tokens(a, model, "--data", "--text", true, options.seq, {},
                                      as_json ? stderr : stdout);
  cli::Tokens none;
  cli::check_example_flags(a, data, none);

  cli::EvalJob job{a, model, options, &data, adapter, max_batches,
                   as_json, cli::choose_backend(a, options)};
  if (job.backend.cuda) {
    job.options.precision = job.backend.precision;
#if LVT_HAVE_CUDA_BACKEND
    return lvt_eval_cuda(job);
#endif
  }
  return cli::eval_job<Run>(job);
}
