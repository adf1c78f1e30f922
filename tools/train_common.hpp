#pragma once
// What `lvt train` and `lvt eval` share: the model (a Hugging Face folder, or random frozen
// weights for a config.json or preset), the token data (an llm.c .bin / JSONL file, or the bytes
// of a text file), the lines that say which backend runs and what the plan holds.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "lvt/plan/report.hpp"
#include "lvt/run.hpp"
#if LVT_HAVE_CUDA_RUNTIME || LVT_HAVE_CUDA_BACKEND
#include "lvt/backend/cuda_device.hpp"
#endif
#include "options.hpp"

namespace lvt::cli {

// Flags both commands take besides the policy flags.
inline const std::vector<std::string> model_data_flags = {"--model", "--data", "--text",
                                                          "--random-weights", "--init-std",
                                                          "--tokenizer", "--chat-template", "--cache",
                                                          "--threads"};
// Switches both commands take for training examples.
inline const std::vector<std::string> data_switches = {"--train-on-prompt", "--no-truncate", "--skip-mismatched"};

inline const char* model_data_help =
    "  --model M               a Hugging Face folder (config.json + safetensors), a llama .gguf\n"
    "                          file (requantized to --quant on load; its tokenizer and chat\n"
    "                          template serve training examples), or with --random-weights a\n"
    "                          config.json, a folder or a preset name\n"
    "  --random-weights SEED   random frozen weights (normal, --init-std, default 0.02; norms 1)\n"
    "                          instead of loading them: for a model without safetensors\n"
    "  --init-std X            standard deviation of --random-weights (default 0.02)\n"
    "  --data FILE             tokens: llm.c .bin (uint16 or uint32) or .jsonl (token arrays, or\n"
    "                          training examples: {\"text\"}, {\"prompt\", \"completion\"},\n"
    "                          {\"messages\"}, alpaca {\"instruction\", \"input\", \"output\"};\n"
    "                          tokenized once, cached, packed into rows of --seq tokens)\n"
    "  --text FILE             instead of --data: the bytes of a text file as tokens 0..255\n"
    "                          (the model's vocab_size must be >= 256)\n"
    "  --tokenizer DIR         tokenizer.json + tokenizer_config.json (or a .gguf file) for\n"
    "                          training examples (default: the --model folder or .gguf file)\n"
    "  --chat-template FILE    for {\"messages\"}: this template (.jinja or a tokenizer_config.json)\n"
    "  --train-on-prompt       loss on prompts and user turns too (default: completions and\n"
    "                          assistant turns only)\n"
    "  --no-truncate           an example longer than --seq is an error (default: cut, counted)\n"
    "  --skip-mismatched       leave out (and count) an example whose prompt's tokens are not a\n"
    "                          prefix of the whole example's (default: an error naming its line)\n"
    "  --cache DIR|off         folder of the token cache FILE.lvt-cache.safetensors (default:\n"
    "                          train: --out's parent folder; eval: the data file's folder)\n"
    "  --threads N             host threads, 1 to the cores this process may use (default: all);\n"
    "                          a fixed N gives bit-identical results run to run\n";

// --threads N: the host backend's threads (RunOptions::threads; absent: every core). 0 or more
// than the machine has is an error that says how many it has.
inline RunOptions run_options(const Args& a) {
  RunOptions r;
  if (!a.has("--threads")) return r;
  const std::string v = a.get("--threads");
  const int cores = ops::parallel::available();
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != 0 || errno != 0 || n < 1 || n > cores)
    throw Error("--threads '" + v + "': expected 1 to " + std::to_string(cores) + " (this machine " +
                "lets lvt use " + std::to_string(cores) + " core" + (cores == 1 ? "" : "s") +
                "; leave --threads out to use all of them)");
  r.threads = int(n);
  return r;
}

// The model's description, from --model (required).
inline ModelConfig model_of(const Args& a) {
  if (!a.has("--model"))
    throw Error("--model is required (a Hugging Face folder or a .gguf file; with --random-weights also a "
                "config.json or a preset name)");
  return load_model(a.get("--model"));
}

// Checks the flags against the model before planning, naming the flag.
inline void check_shape(const Args& a, const ModelConfig& m, const PlanOptions& o) {
  if (m.max_position > 0 && o.seq > m.max_position)
    throw Error("--seq " + std::to_string(o.seq) + (a.has("--seq") ? "" : " (the default)") + " exceeds the model's max_position_embeddings " +
                std::to_string(m.max_position) + " (--model " + a.get("--model") + ")");
}

// The run: weights loaded from the folder, or random ones with --random-weights.
template <class R = Run>
R make_run(const Args& a, const ModelConfig& m, const PlanOptions& o) {
  check_shape(a, m, o);
  if (a.has("--random-weights")) {
    const auto seed = std::uint64_t(parse_int("--random-weights", a.get("--random-weights"), 0,
                                              std::numeric_limits<long long>::max()));
    const double std = a.has("--init-std") ? parse_double("--init-std", a.get("--init-std")) : 0.02;
    if (!(std > 0 && std <= 10)) throw Error("--init-std '" + a.get("--init-std") + "': expected 0 < X <= 10");
    R r(m, o, run_options(a));
    r.init_random_weights(seed, float(std));
    return r;
  }
  if (a.has("--init-std")) throw Error("--init-std needs --random-weights SEED");
  const std::filesystem::path dir(a.get("--model"));
  const bool gguf = dir.extension() == ".gguf" && std::filesystem::is_regular_file(dir);
  if (!std::filesystem::is_directory(dir) && !gguf)
    throw Error("--model '" + a.get("--model") +
                "' has no weights (a preset or a config.json): give a Hugging Face folder with "
                "safetensors, a .gguf file, or --random-weights SEED");
  return R::from_pretrained(dir, o, &m, run_options(a));
}

// The token file of `data_flag`, or the bytes of `text_flag`'s file (tokens 0..255). One of them
// is required when `required`; returns false when neither is given.
struct Tokens {
  std::unique_ptr<io::TokenDataset> data;
  std::unique_ptr<io::PackedExamples> packed;  // training examples (JSONL), instead of data
  std::string flag;  // the flag it came from
  std::string name;  // the file the user named (a --text file's tokens live in a temporary file)
};

inline std::vector<std::uint32_t> text_bytes(const std::string& flag, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(flag + " '" + path + "': cannot open");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return std::vector<std::uint32_t>(reinterpret_cast<const unsigned char*>(text.data()),
                                    reinterpret_cast<const unsigned char*>(text.data()) + text.size());
}

// A .jsonl / .json file whose first non-blank line is an object without "input_ids": training
// examples, not token arrays.
inline bool is_example_file(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext != ".jsonl" && ext != ".json") return false;
  std::ifstream f(path, std::ios::binary);
  for (std::string line; std::getline(f, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    // A line that is not JSON: the example reader names it with its line number.
    return j.is_discarded() || (j.is_object() && !j.contains("input_ids"));
  }
  return false;
}

#if LVT_HAVE_TEXT
// train_data.cpp: tokenized (cached), packed into rows of seq tokens.
std::unique_ptr<io::PackedExamples> open_examples(const Args& a, const ModelConfig& m, const std::string& flag,
                                                  const std::filesystem::path& path, int seq,
                                                  const std::filesystem::path& cache_dir, std::FILE* log);
#endif

// `seq` and `cache_dir` (the default folder of a token cache) are for training examples.
inline Tokens open_tokens(const Args& a, const ModelConfig& m, const std::string& data_flag,
                          const std::string& text_flag, bool required, int seq = 0,
                          const std::filesystem::path& cache_dir = {}, std::FILE* log = stdout) {
  Tokens t;
  if (a.has(data_flag) && a.has(text_flag))
    throw Error("give " + data_flag + " or " + text_flag + ", not both");
  if (a.has(data_flag)) {
    t.flag = data_flag;
    const std::string path = a.get(data_flag);
    t.name = path;
    if (!std::filesystem::is_regular_file(path))
      throw Error(data_flag + " '" + path + "': no such file");
    if (is_example_file(path)) {
#if LVT_HAVE_TEXT
      t.packed = open_examples(a, m, data_flag, path, seq, cache_dir.empty() ? std::filesystem::path(path).parent_path() : cache_dir, log);
#else
      (void)seq, (void)cache_dir, (void)log;
      throw Error(data_flag + " " + path + " holds training examples, but this lvt was built without "
                  "the text libraries (Oniguruma, utf8proc: tools/deps.sh installs them)");
#endif
    } else {
      t.data = std::make_unique<io::TokenDataset>(io::TokenDataset::open(path, m.vocab));
    }
  } else if (a.has(text_flag)) {
    t.flag = text_flag;
    t.name = a.get(text_flag);
    if (m.vocab < 256)
      throw Error(text_flag + " gives byte tokens 0..255 but the model's vocab_size is " +
                  std::to_string(m.vocab));
    const std::vector<std::uint32_t> bytes = text_bytes(text_flag, a.get(text_flag));
    if (bytes.empty()) throw Error(text_flag + " '" + a.get(text_flag) + "': empty file");
    // The dataset maps a file: write the bytes as an llm.c token file, map it, unlink it (the
    // mapping keeps the data).
    static int counter = 0;
    const auto tmp = std::filesystem::temp_directory_path() /
                     ("lvt-text-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".bin");
    io::write_llmc_tokens(tmp, bytes, false);
    try {
      t.data = std::make_unique<io::TokenDataset>(io::TokenDataset::open_llmc(tmp, m.vocab));
    } catch (...) {
      std::filesystem::remove(tmp);
      throw;
    }
    std::filesystem::remove(tmp);
  } else if (required) {
    throw Error(data_flag + " FILE (or " + text_flag + " FILE) is required");
  }
  return t;
}

// The training-example flags need a training-example file.
inline void check_example_flags(const Args& a, const Tokens& train, const Tokens& eval) {
  if (train.packed || eval.packed) return;
  for (const char* f : {"--tokenizer", "--chat-template", "--cache", "--train-on-prompt", "--no-truncate",
                        "--skip-mismatched"})
    if (a.has(f))
      throw Error(std::string(f) + " is for a --data JSONL file of training examples ({\"text\"}, "
                  "{\"prompt\", \"completion\"}, {\"messages\"}, ...)");
}

// The data line of a packed example file.
inline std::string packed_line(const Tokens& t) {
  const io::PackedExamples& p = *t.packed;
  char s[512];
  std::snprintf(s, sizeof s,
                "%s %s: %zu examples, %zu tokens (%zu targets) packed into %llu rows of %d (%.1f%% padding)"
                ", %zu truncated to --seq (%zu tokens cut)",
                t.flag.c_str(), t.name.c_str(), p.set().examples(), p.tokens(), p.targets(),
                static_cast<unsigned long long>(p.rows()), p.seq(),
                100.0 * double(p.pad_tokens()) / double(p.rows() * std::uint64_t(p.seq())), p.truncated(),
                p.truncated_tokens());
  return s;
}

// Which backend runs the step, and why: `--backend auto` (the default) takes the CUDA backend
// when lvt was built with it and a usable GPU is present, else the host reference; `cuda` fails
// with the reason when it cannot run; `host` always runs on the CPU. On the GPU the step runs in
// the plan's precision (bf16; fp16 with loss scaling on GPUs older than sm_80 unless
// --precision says otherwise).
struct BackendChoice {
  bool cuda = false;
  DType precision = DType::bf16;
  std::string line;  // "backend: ..." for the user
};

inline BackendChoice choose_backend(const Args& a, const PlanOptions& o) {
  const std::string want = a.has("--backend") ? a.get("--backend") : "auto";
  if (want != "auto" && want != "host" && want != "cuda")
    throw Error("--backend '" + want + "': expected auto, host or cuda");
  BackendChoice c;
  c.precision = o.precision;
  if (want == "host") {
    c.line = "backend: host (fp32 reference; --backend host)";
    return c;
  }
#if LVT_HAVE_CUDA_BACKEND
  const std::string why = cuda::unavailable_reason();
  if (!why.empty()) {
    if (want == "cuda") throw Error("--backend cuda: " + why);
    c.line = "backend: host (fp32 reference): " + why;
    return c;
  }
  const cuda::DeviceInfo d = cuda::select_device(0);
  if (d.sm < 80 && c.precision == DType::bf16) {
    if (a.has("--precision"))
      throw Error("--precision bf16: " + d.name + " is sm_" + std::to_string(d.sm) +
                  ", which has no bf16 tensor cores (use --precision fp16)");
    c.precision = DType::fp16;
  }
  c.cuda = true;
  c.line = std::string("backend: cuda (") + (c.precision == DType::bf16 ? "bf16" : "fp16") +
           (c.precision == DType::fp16 ? ", dynamic loss scaling" : "") + ") on " + d.name +
           " (sm_" + std::to_string(d.sm) + ", " + plan::format_bytes(d.free_bytes) + " free of " +
           plan::format_bytes(d.total_bytes) + ")";
  return c;
#elif LVT_HAVE_CUDA_RUNTIME
  if (want == "cuda")
    throw Error("--backend cuda: this lvt was built without the CUDA backend (nvcc not found)");
  c.line = "backend: host (fp32 reference; lvt was built without the CUDA backend)";
  return c;
#else
  if (want == "cuda")
    throw Error("--backend cuda: this lvt was built without the CUDA toolkit");
  c.line = "backend: host (fp32 reference; lvt was built without the CUDA toolkit)";
  return c;
#endif
}

// The LoRA flags of `o` set from an adapter's config, so the plan holds its shapes (`lvt eval`,
// `lvt generate`).
inline void lora_from_adapter(PlanOptions& o, const io::LoraConfig& c, int layers,
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
      throw Error(source + ": field 'layers_to_transform' is not the first F and last L "
                  "layers of the model's " + std::to_string(layers) + " (what --sparse F,L trains)");
  o.sparse_first = first;
  o.sparse_last = last;
}

inline std::string model_line(const Args& a, const ModelConfig& m) {
  char s[512];
  std::snprintf(s, sizeof s, "model: %s: %d layers, hidden %d, %d heads (%d kv), ffn %d, vocab %d%s",
                a.get("--model").c_str(), m.layers, m.hidden, m.heads, m.kv_heads, m.ffn, m.vocab,
                a.has("--random-weights")
                    ? (", RANDOM frozen weights (--random-weights " + a.get("--random-weights") + ")").c_str()
                    : ", weights loaded from the folder");
  return s;
}

inline std::string plan_line(const plan::Plan& p) {
  const plan::Summary& s = p.summary;
  const PlanOptions& o = p.options;
  char line[512];
  std::snprintf(line, sizeof line,
                "plan: arena %s (live lower bound %s), pinned %s; batch %d x seq %d, quant %s, "
                "checkpoint every %d layers, %d recomputed layer forwards, %lld LoRA params",
                plan::format_bytes(s.arena_bytes).c_str(), plan::format_bytes(s.live_lower_bound).c_str(),
                plan::format_bytes(s.pinned_bytes).c_str(), o.batch, o.seq, lvt::quant_name(o.quant),
                o.checkpoint_every, s.recompute_layers, static_cast<long long>(s.lora_params));
  return line;
}

}  // namespace lvt::cli
