// `lvt eval`: the mean token loss of a model (and optionally a PEFT adapter) over a token file.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train_common.hpp"

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
    "  --quant ...             evaluate with the base weights quantized as in training\n";

// The LoRA flags of `o` set from an adapter's config, so the plan holds its shapes.
void lora_from_adapter(lvt::PlanOptions& o, const lvt::io::LoraConfig& c, int layers,
                       const std::string& source) {
  o.lora_rank = c.r;
  o.lora_alpha = c.alpha;
  o.rslora = c.rslora;
  o.lora_targets = c.targets;
  o.sparse_first = o.sparse_last = -1;
  if (c.layers.empty()) return;
  // layers_to_transform must be the first F and the last L layers (--sparse F,L).
  int first = 0;
  while (first < int(c.layers.size()) && c.layers[std::size_t(first)] == first) ++first;
  const int last = int(c.layers.size()) - first;
  for (int i = 0; i < last; ++i)
    if (c.layers[std::size_t(first + i)] != layers - last + i)
      throw lvt::Error(source + ": field 'layers_to_transform' is not the first F and last L layers "
                                "of the model's " + std::to_string(layers) + " (what --sparse F,L trains)");
  o.sparse_first = first;
  o.sparse_last = last;
}

}  // namespace

int lvt_cmd_eval(int argc, char** argv) {
  using namespace lvt;
  std::vector<std::string> switches = cli::policy_switches;
  switches.insert(switches.end(), {"--json", "--help"});
  std::vector<std::string> valued = cli::policy_flags;
  valued.insert(valued.end(), cli::model_data_flags.begin(), cli::model_data_flags.end());
  valued.insert(valued.end(), {"--adapter", "--max-batches"});
  const cli::Args a = cli::parse_args(argc, argv, switches, valued);
  if (a.has("--help")) {
    std::printf("%s%s%s", eval_help, cli::model_data_help, cli::policy_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  const bool as_json = a.has("--json");
  std::FILE* info = as_json ? stderr : stdout;

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
    lora_from_adapter(options, adapter.config, model.layers,
                      (std::filesystem::path(dir) / "adapter_config.json").string());
  }
  options.lora_dropout = 0;  // evaluation: no dropout
  const cli::Tokens data = cli::open_tokens(a, model, "--data", "--text", true);

  Run run = cli::make_run(a, model, options);
  std::fprintf(info, "%s\n%s\n%s\n", cli::backend_line().c_str(), cli::model_line(a, model).c_str(),
               cli::plan_line(run.backend().plan()).c_str());
  if (a.has("--adapter")) {
    run.load_adapter(a.get("--adapter"));
    std::fprintf(info, "adapter: %s (r %d, alpha %g, %zu pairs)\n", a.get("--adapter").c_str(),
                 adapter.config.r, adapter.config.alpha, adapter.pairs.size());
  }

  // The windows evaluate() reads, to count the targets that enter the loss (a JSONL loss mask
  // leaves some out).
  io::WindowLoader loader(*data.data, options.seq, io::Split::train, 0.0, false, 0);
  const std::int64_t all = std::int64_t(loader.windows()) / options.batch;
  if (all == 0)
    throw Error(data.flag + " " + data.name + ": " + std::to_string(loader.windows()) +
                " windows of --seq " + std::to_string(options.seq) + ", fewer than one --batch of " +
                std::to_string(options.batch));
  const std::int64_t batches = max_batches > 0 && max_batches < all ? max_batches : all;
  std::int64_t tokens = 0;
  std::vector<std::int32_t> in(std::size_t(options.seq)), tgt(in.size());
  for (std::int64_t w = 0; w < batches * options.batch; ++w) {
    loader.next(in.data(), tgt.data());
    for (std::int32_t t : tgt) tokens += t != io::target_ignore;
  }

  const double loss = run.evaluate(*data.data, batches);
  if (as_json) {
    nlohmann::json j = {{"loss", loss},
                        {"perplexity", std::exp(loss)},
                        {"tokens", tokens},
                        {"batches", batches},
                        {"batch", options.batch},
                        {"seq", options.seq},
                        {"data", data.name},
                        {"backend", "host"}};
    if (a.has("--adapter")) j["adapter"] = a.get("--adapter");
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("eval loss %.4f (perplexity %.2f) over %lld tokens: %lld batches of %d x %d from %s\n",
                loss, std::exp(loss), static_cast<long long>(tokens), static_cast<long long>(batches),
                options.batch, options.seq, data.name.c_str());
  }
  return 0;
}
