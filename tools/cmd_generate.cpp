// `lvt generate`: text from a model (and optionally a PEFT adapter) with a KV cache, streamed to
// stdout as it is produced. Runs on the host backend, or with --backend cuda on the CUDA
// backend's decode path (generate_job.hpp holds the part both share; cuda_commands.cu its CUDA
// instantiation).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/text/chat_template.hpp"
#include "lvt/text/stream.hpp"
#include "lvt/text/tokenizer.hpp"
#include "lvt/text/training_data.hpp"
#include "generate_job.hpp"

namespace {

namespace fs = std::filesystem;

const char* generate_help =
    "usage: lvt generate --model M (--prompt TEXT | --chat TEXT | --prompt-ids LIST)\n"
    "                    [--adapter DIR] [--max-new-tokens N] [--temperature T] [--top-k K]\n"
    "                    [--top-p P] [--seed S] [--tokenizer DIR] [policies]\n\n"
    "Prefills the prompt into a KV cache and generates one token at a time, printing the text to\n"
    "stdout as it completes (whole UTF-8 characters). Stops at an eos id (generation_config.json's\n"
    "eos_token_id, int or list, else config.json's; and the tokenizer's eos_token), after\n"
    "--max-new-tokens, or when the context is full. A summary line goes to stderr.\n\n"
    "  --prompt TEXT           the prompt, tokenized as the tokenizer does (special tokens added)\n"
    "  --chat TEXT             one user message rendered with the chat template\n"
    "                          (tokenizer_config.json, or a .gguf model's), with\n"
    "                          add_generation_prompt\n"
    "  --prompt-ids LIST       the prompt as token ids (1,2,3): no tokenizer needed\n"
    "  --tokenizer DIR         tokenizer.json (+ tokenizer_config.json), or a .gguf file; default:\n"
    "                          the --model folder or .gguf file\n"
    "  --adapter DIR           a PEFT adapter; its r, alpha, targets and layers set the run's LoRA\n"
    "  --max-new-tokens N      default 128\n"
    "  --temperature T         0: greedy; > 0: sample from softmax(logits / T). Default from\n"
    "                          generation_config.json: do_sample true -> its temperature (1.0 if\n"
    "                          absent), top_k (50 if absent) and top_p (1.0); else greedy\n"
    "  --top-k K               keep the K largest logits when sampling (0: off)\n"
    "  --top-p P               nucleus: the smallest set with probability >= P (1: off)\n"
    "  --seed S                sampling seed (default 0): the same seed gives the same text\n"
    "  --context N             KV cache tokens (default prompt + max-new-tokens, at most\n"
    "                          max_position_embeddings)\n"
    "  --ignore-eos            do not stop at eos (benchmarks)\n"
    "  --print-ids             print the new token ids (one line) instead of the text\n"
    "  --quant ...             base weights quantized as in training (default nf4, as lvt train);\n"
    "                          --quant none keeps the model's weights as they are (in fp32 on\n"
    "                          the host, bf16 / fp16 on the GPU)\n"
    "  --backend auto|host|cuda  where it runs: auto and host take the host backend (the fp32\n"
    "                          reference); cuda the GPU (bf16, fp16 on sm_75 or with --precision\n"
    "                          fp16), which fails with the reason when no GPU is usable. auto\n"
    "                          stays on the host while the CUDA decode path is new (it has not\n"
    "                          run on a GPU yet)\n"
    "  --threads N             host threads, 1 to the cores this process may use (default: all)\n";

nlohmann::json read_json_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw lvt::Error(p.string() + ": cannot open");
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw lvt::Error(p.string() + ": not a JSON object");
  return j;
}

// eos_token_id: an int or a list of ints.
void add_eos(std::vector<std::int32_t>& out, const nlohmann::json& j, const fs::path& src) {
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return;
  const nlohmann::json& e = j["eos_token_id"];
  auto one = [&](const nlohmann::json& v) {
    if (!v.is_number_integer()) throw lvt::Error(src.string() + ": field 'eos_token_id' must be an int or a list of ints");
    out.push_back(v.get<std::int32_t>());
  };
  if (e.is_array())
    for (const auto& v : e) one(v);
  else
    one(e);
}

std::vector<std::int32_t> parse_ids(const std::string& flag, const std::string& v, int vocab) {
  std::vector<std::int32_t> ids;
  std::size_t start = 0;
  while (start <= v.size()) {
    const auto comma = v.find(',', start);
    const std::string x = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    ids.push_back(std::int32_t(lvt::cli::parse_int(flag, x, 0, vocab - 1)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return ids;
}

}  // namespace

int lvt_cmd_generate(int argc, char** argv) {
  using namespace lvt;
  std::vector<std::string> switches = cli::policy_switches;
  switches.insert(switches.end(), {"--help", "--ignore-eos", "--print-ids"});
  std::vector<std::string> valued = cli::policy_flags;
  valued.insert(valued.end(), {"--model", "--random-weights", "--init-std", "--adapter", "--prompt",
                               "--chat", "--prompt-ids", "--tokenizer", "--max-new-tokens",
                               "--temperature", "--top-k", "--top-p", "--seed", "--context",
                               "--backend", "--threads"});
  const cli::Args a = cli::parse_args(argc, argv, switches, valued);
  if (a.has("--help")) {
    std::printf("%s%s", generate_help, cli::policy_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  const int prompts = a.has("--prompt") + a.has("--chat") + a.has("--prompt-ids");
  if (prompts != 1) throw Error("give one of --prompt TEXT, --chat TEXT or --prompt-ids LIST");
  const std::string backend = a.get("--backend", "auto");
  if (backend != "auto" && backend != "host" && backend != "cuda")
    throw Error("--backend '" + backend + "': expected auto, host or cuda");

  const ModelConfig model = cli::model_of(a);
  const fs::path model_dir = fs::is_directory(a.get("--model")) ? fs::path(a.get("--model")) : fs::path();
  const fs::path model_gguf = text::is_gguf_file(a.get("--model")) ? fs::path(a.get("--model")) : fs::path();

  // The tokenizer: --tokenizer, else the model folder when it has one, or a .gguf model's own.
  std::optional<text::Tokenizer> tok;
  fs::path tok_dir = a.has("--tokenizer") ? fs::path(a.get("--tokenizer")) : !model_gguf.empty() ? model_gguf : model_dir;
  if (a.has("--tokenizer")) {
    if (!text::is_gguf_file(tok_dir) && !text::is_tokenizer_source(tok_dir))  // a .gguf says what it lacks
      throw Error("--tokenizer '" + a.get("--tokenizer") + "': no tokenizer.json there (a folder or a .gguf file)");
    tok = text::load_tokenizer(tok_dir);
  } else if (!tok_dir.empty() && text::is_tokenizer_source(tok_dir)) {
    tok = text::load_tokenizer(tok_dir);
  }
  if (!tok && !a.has("--prompt-ids"))
    throw Error(std::string(a.has("--chat") ? "--chat" : "--prompt") +
                " needs a tokenizer: a --model folder with tokenizer.json or a .gguf file with tokenizer metadata, "
                "or --tokenizer DIR "
                "(or give --prompt-ids)");

  std::vector<std::int32_t> prompt;
  if (a.has("--prompt-ids")) {
    prompt = parse_ids("--prompt-ids", a.get("--prompt-ids"), model.vocab);
  } else if (a.has("--prompt")) {
    prompt = tok->encode(a.get("--prompt"), true);
  } else if (text::is_gguf_file(tok_dir)) {
    const text::ChatTemplate t = text::chat_template_from_gguf(tok_dir);  // tokenizer.chat_template
    const std::vector<text::Message> chat = {{"user", a.get("--chat")}};
    prompt = tok->encode(t.render(chat, true), false);
  } else {
    const fs::path cfg = tok_dir / "tokenizer_config.json";
    if (!fs::exists(cfg)) throw Error("--chat: " + cfg.string() + " is missing (it holds the chat template)");
    const text::ChatTemplate t = text::ChatTemplate::from_tokenizer_config(cfg.string());
    const std::vector<text::Message> chat = {{"user", a.get("--chat")}};
    prompt = tok->encode(t.render(chat, true), false);  // as apply_chat_template
  }
  if (prompt.empty()) throw Error("the prompt is empty after tokenization");
  for (std::int32_t id : prompt)
    if (id < 0 || id >= model.vocab)
      throw Error("prompt token id " + std::to_string(id) + " is outside the model's vocab_size " +
                  std::to_string(model.vocab) + " (does --tokenizer belong to --model?)");

  // Generation settings: generation_config.json, then the flags.
  GenerateOptions g;
  g.max_new_tokens = a.has("--max-new-tokens")
                         ? int(cli::parse_int("--max-new-tokens", a.get("--max-new-tokens"), 0, 1 << 24))
                         : 128;
  nlohmann::json gen_cfg;
  if (!model_dir.empty() && fs::exists(model_dir / "generation_config.json")) {
    const fs::path p = model_dir / "generation_config.json";
    gen_cfg = read_json_file(p);
    add_eos(g.eos_ids, gen_cfg, p);
    if (gen_cfg.value("do_sample", false)) {
      g.temperature = gen_cfg.value("temperature", 1.0);
      g.top_k = gen_cfg.value("top_k", 50);
      g.top_p = gen_cfg.value("top_p", 1.0);
    }
  } else if (!model_dir.empty() && fs::exists(model_dir / "config.json")) {
    add_eos(g.eos_ids, read_json_file(model_dir / "config.json"), model_dir / "config.json");
  }
  if (tok && tok->eos_id()) g.eos_ids.push_back(*tok->eos_id());
  if (a.has("--ignore-eos")) g.eos_ids.clear();
  if (a.has("--temperature")) {
    g.temperature = cli::parse_double("--temperature", a.get("--temperature"));
    if (g.temperature < 0) throw Error("--temperature must be >= 0 (0: greedy)");
  }
  if (a.has("--top-k")) g.top_k = int(cli::parse_int("--top-k", a.get("--top-k"), 0, 1 << 30));
  if (a.has("--top-p")) {
    g.top_p = cli::parse_double("--top-p", a.get("--top-p"));
    if (!(g.top_p > 0 && g.top_p <= 1)) throw Error("--top-p must be in (0, 1]");
  }
  if (a.has("--seed"))
    g.seed = std::uint64_t(cli::parse_int("--seed", a.get("--seed"), 0, std::numeric_limits<long long>::max()));

  // The plan: one sequence, a KV cache of prompt + new tokens; the step's own buffers at
  // --seq (default 1: generation does not use them).
  PlanOptions options = cli::plan_options(a);
  options.batch = 1;
  if (!a.has("--seq")) options.seq = 1;
  options.lora_dropout = 0;
  io::LoraAdapter adapter;  // its config sets the plan's LoRA; the run loads the tensors again
  if (a.has("--adapter")) {
    for (const char* f : {"--lora-r", "--lora-alpha", "--targets", "--sparse", "--rslora"})
      if (a.has(f))
        throw Error(std::string(f) + " comes from the adapter's adapter_config.json with --adapter");
    const std::string dir = a.get("--adapter");
    adapter = io::load_lora_adapter(dir, &model);
    cli::lora_from_adapter(options, adapter.config, model.layers,
                           (fs::path(dir) / "adapter_config.json").string());
  } else if (!a.has("--lora-r")) {
    // No adapter: PEFT's fresh one (B = 0) adds nothing; rank 1 keeps its buffers small and
    // fits every model (the default rank 16 exceeds a multi-query tiny model's kv width).
    options.lora_rank = 1;
  }
  std::int64_t context = std::int64_t(prompt.size()) + g.max_new_tokens;
  if (a.has("--context")) context = cli::parse_int("--context", a.get("--context"), 1, 1 << 24);
  else if (a.has("--generate-context"))
    context = cli::parse_int("--generate-context", a.get("--generate-context"), 1, 1 << 24);
  if (model.max_position > 0 && context > model.max_position) {
    if (a.has("--context") || a.has("--generate-context"))
      throw Error("--context " + std::to_string(context) + " exceeds the model's max_position_embeddings " +
                  std::to_string(model.max_position));
    context = model.max_position;
  }
  if (std::int64_t(prompt.size()) > context)
    throw Error("the prompt's " + std::to_string(prompt.size()) + " tokens exceed the context of " +
                std::to_string(context) + (a.has("--context") ? " (--context)" : " (max_position_embeddings)"));
  options.generate_context = int(context);

  cli::GenerateJob job{a, model, options, {}, prompt, context, adapter.config, adapter.pairs.size(), {}};
  if (backend == "cuda") {
    job.backend = cli::choose_backend(a, options);  // the GPU, or an error saying why not
    job.options.precision = job.backend.precision;
  } else {
    job.backend.line = backend == "host" ? "backend: host (fp32 reference; --backend host)"
#if LVT_HAVE_CUDA_BACKEND
                                         : "backend: host (fp32 reference; --backend cuda generates on the GPU)";
#else
                                         : "backend: host (fp32 reference)";
#endif
  }

  const bool print_ids = a.has("--print-ids") || !tok;
  std::optional<text::TextStream> stream;
  if (!print_ids) stream.emplace(*tok);
  std::string last;  // the last text printed, to end the output with one newline
  g.on_token = [&](std::int32_t id) {
    if (stream) {
      const std::string piece = stream->push(id);
      if (!piece.empty()) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        last = piece;
      }
    }
    return true;
  };
  job.g = std::move(g);
  GenerateResult r;
  if (job.backend.cuda) {
#if LVT_HAVE_CUDA_BACKEND
    r = lvt_generate_cuda(job);
#endif
  } else {
    r = cli::generate_job<Run>(job);
  }
  if (stream) {
    const std::string rest = stream->finish();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    if (!rest.empty()) last = rest;
    if (last.empty() || last.back() != '\n') std::fputc('\n', stdout);
  } else {
    for (std::size_t i = 0; i < r.ids.size(); ++i) std::printf("%s%d", i ? " " : "", r.ids[i]);
    std::printf("\n");
  }
  std::fflush(stdout);
  std::fprintf(stderr,
               "generated: %lld prompt tokens, %zu new tokens; prefill %.1f tok/s (%.3f s), decode "
               "%.1f tok/s (%lld steps, %.3f s); stop: %s\n",
               static_cast<long long>(r.prompt_tokens), r.ids.size(), r.prefill_tokens_per_s(),
               r.prefill_s, r.decode_tokens_per_s(), static_cast<long long>(r.decode_steps),
               r.decode_s, stop_reason_name(r.stop));
  return 0;
}
