#pragma once
// A JSONL file of training examples (text/examples.hpp) tokenized once into an io::ExampleSet,
// with a progress line, and cached: the cache file (io/examples.hpp) is reused while its key —
// a hash of the data file's bytes, tokenizer.json, tokenizer_config.json (or a GGUF file's
// metadata), the chat template,
// the format options and the format version — is unchanged, and rebuilt otherwise. The cache
// holds whole examples: --seq and truncation apply when rows are packed, so they are not part
// of the key.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>

#include <unistd.h>

#include "lvt/io/examples.hpp"
#include "lvt/text/examples.hpp"
#include "lvt/text/gguf_tokenizer.hpp"

namespace lvt::text {

struct DataOptions {
  bool train_on_prompt = false;
  // An example without an exact loss mask (MaskMismatch) is left out and counted instead of
  // being an error.
  bool skip_mismatched = false;
  // A chat template file instead of the tokenizer folder's: a .jinja file (special tokens from
  // the folder's tokenizer_config.json) or a tokenizer_config.json. Empty: the folder's own.
  std::filesystem::path chat_template;
};

// Bumped whenever a rule of examples.hpp changes what ids or masks a line gives.
inline constexpr const char* example_rules_version = "lvt-examples-rules-1";

inline std::string read_file_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(p.string() + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A tokenizer is a folder with tokenizer.json (+ tokenizer_config.json), or a .gguf file whose
// metadata holds one (tokenizer.ggml.model, text/gguf_tokenizer.hpp).
inline bool is_tokenizer_source(const std::filesystem::path& p) {
  if (is_gguf_file(p)) return io::GgufFile(p).find_value("tokenizer.ggml.model") != nullptr;
  return std::filesystem::is_regular_file(p / "tokenizer.json");
}

// The chat template of `tokenizer_dir` (a folder or a .gguf file; or opts.chat_template); null
// when there is none.
inline std::unique_ptr<ChatTemplate> load_chat_template(const std::filesystem::path& tokenizer_dir,
                                                        const DataOptions& opts) {
  namespace fs = std::filesystem;
  const bool gguf = is_gguf_file(tokenizer_dir);
  std::optional<io::GgufFile> gguf_file;
  if (gguf) gguf_file.emplace(tokenizer_dir);
  const fs::path config = tokenizer_dir / "tokenizer_config.json";
  if (!opts.chat_template.empty()) {
    const fs::path& t = opts.chat_template;
    if (t.extension() == ".json") return std::make_unique<ChatTemplate>(ChatTemplate::from_tokenizer_config(t.string()));
    // A bare template: the special tokens come from the folder's config (or the GGUF metadata).
    std::vector<std::pair<std::string, std::string>> special;
    if (gguf) {
      special = gguf_chat_info(gguf_file->header(), tokenizer_dir.string()).special_tokens;
    } else if (fs::exists(config)) {
      const OrderedJson cfg = OrderedJson::parse(read_file_bytes(config), nullptr, false);
      if (cfg.is_object())
        for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
          auto it = cfg.find(key);
          if (it == cfg.end()) continue;
          if (it->is_string()) special.emplace_back(key, it->get<std::string>());
          else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
            special.emplace_back(key, (*it)["content"].get<std::string>());
        }
    }
    try {
      return std::make_unique<ChatTemplate>(read_file_bytes(t), std::move(special));
    } catch (const Error& e) {
      throw Error(t.string() + ": " + e.what());
    }
  }
  if (gguf) {
    if (!gguf_chat_info(gguf_file->header(), tokenizer_dir.string()).chat_template) return nullptr;
    return std::make_unique<ChatTemplate>(chat_template_from_gguf(gguf_file->header(), tokenizer_dir.string()));
  }
  if (!fs::exists(config)) return nullptr;
  const OrderedJson cfg = OrderedJson::parse(read_file_bytes(config), nullptr, false);
  if (!cfg.is_object() || !cfg.contains("chat_template")) return nullptr;
  return std::make_unique<ChatTemplate>(ChatTemplate::from_tokenizer_config(config.string()));
}

// The cache key of a data file under a tokenizer folder and options.
inline std::string example_cache_key(std::span<const std::byte> data, const std::filesystem::path& tokenizer_dir,
                                     const DataOptions& opts) {
  namespace fs = std::filesystem;
  io::ContentHash h;
  h.add(std::string_view(io::example_cache_version)).add(std::string_view(example_rules_version));
  h.add(data);
  if (is_gguf_file(tokenizer_dir)) {
    // The metadata (the bytes before the tensor infos), not the weights: all the tokenizer is.
    const io::MappedFile map(tokenizer_dir);
    const io::GgufHeader hdr = io::parse_gguf(map.bytes(), tokenizer_dir.string());
    const std::uint64_t end = hdr.tensors.empty() ? hdr.data_offset : hdr.tensors.front().info_offset;
    h.add(std::string_view("gguf")).add(map.bytes().subspan(0, std::size_t(end)));
  } else {
    h.add(read_file_bytes(tokenizer_dir / "tokenizer.json"));
    const fs::path config = tokenizer_dir / "tokenizer_config.json";
    h.add(fs::exists(config) ? read_file_bytes(config) : std::string());
  }
  h.add(opts.chat_template.empty() ? std::string() : read_file_bytes(opts.chat_template));
  h.add(std::string_view(opts.train_on_prompt ? "train_on_prompt=1" : "train_on_prompt=0"));
  h.add(std::string_view(opts.skip_mismatched ? "skip_mismatched=1" : "skip_mismatched=0"));
  return h.hex();
}

struct TokenizeProgress {
  std::size_t lines = 0, examples = 0, tokens = 0;
  double seconds = 0;
};

inline std::string progress_text(const TokenizeProgress& p) {
  char s[200];
  std::snprintf(s, sizeof s, "%zu lines (%.0f lines/s), %zu examples, %zu tokens", p.lines,
                p.seconds > 0 ? double(p.lines) / p.seconds : 0.0, p.examples, p.tokens);
  return s;
}

// Tokenizes every non-blank line of `data_bytes` (the contents of `source`). `progress`
// (optional) is called about once a second and at the end.
inline io::ExampleSet tokenize_examples(std::string_view data_bytes, const std::string& source,
                                        const Tokenizer& tok, const ChatTemplate* chat, const DataOptions& opts,
                                        const std::function<void(const TokenizeProgress&)>& progress = {}) {
  const ExampleEncoder enc(tok, chat, opts.train_on_prompt);
  io::ExampleSet set;
  set.source = source;
  set.pad_id = tok.eos_id().value_or(0);
  TokenizeProgress p;
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  std::size_t at = 0;
  while (at < data_bytes.size()) {
    std::size_t end = data_bytes.find('\n', at);
    if (end == std::string_view::npos) end = data_bytes.size();
    std::string_view line = data_bytes.substr(at, end - at);
    at = end + 1;
    ++p.lines;
    if (p.lines == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);  // a BOM
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = source + ":" + std::to_string(p.lines);
    EncodedExample ex;
    try {
      ex = enc.encode(parse_example(line, where), where);
    } catch (const MaskMismatch& e) {
      if (!opts.skip_mismatched) throw;
      if (set.skipped++ == 0) set.first_skipped = e.what();
      continue;
    }
    set.add(ex.ids, ex.mask, p.lines);
    ++p.examples;
    p.tokens += ex.ids.size();
    if (progress && (p.lines & 63) == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last > std::chrono::seconds(1)) {
        last = now;
        p.seconds = std::chrono::duration<double>(now - t0).count();
        progress(p);
      }
    }
  }
  p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (progress) progress(p);
  if (set.examples() == 0)
    throw Error(source + (set.skipped ? ": no examples left (" + std::to_string(set.skipped) +
                                            " skipped without an exact loss mask; the first: " + set.first_skipped + ")"
                                      : std::string(": no examples (the file has no non-blank lines)")));
  return set;
}

struct LoadedExamples {
  io::ExampleSet set;
  bool from_cache = false;
  std::string note;  // what happened with the cache, for the user
};

// The examples of `data` under the tokenizer in `tokenizer_dir` (a folder or a .gguf file): read
// from `cache` when its key
// matches, else tokenized (progress on `log`) and written to `cache` atomically. An empty `cache`
// means no caching. A cache that cannot be written is a note, not an error.
inline LoadedExamples load_examples(const std::filesystem::path& data, const std::filesystem::path& tokenizer_dir,
                                    const DataOptions& opts, const std::filesystem::path& cache,
                                    std::FILE* log = stderr) {
  namespace fs = std::filesystem;
  if (!is_tokenizer_source(tokenizer_dir))
    throw Error(tokenizer_dir.string() + ": no tokenizer.json (give the tokenizer's folder or a .gguf file)");
  const io::MappedFile map(data);
  const auto bytes = map.bytes();
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  LoadedExamples out;
  std::string key;
  if (!cache.empty()) {
    key = example_cache_key(bytes, tokenizer_dir, opts);
    std::string why;
    if (io::read_example_cache(cache, key, out.set, why)) {
      out.set.source = data.string();
      out.from_cache = true;
      out.note = "reused the cache " + cache.string() + " (data, tokenizer and options unchanged)";
      return out;
    }
    out.note = "cache " + cache.string() + ": " + why;
  }
  const Tokenizer tok = load_tokenizer(tokenizer_dir);
  const std::unique_ptr<ChatTemplate> chat = load_chat_template(tokenizer_dir, opts);
  const bool tty = log && ::isatty(::fileno(log));
  double last_line_s = 0;
  auto progress = [&](const TokenizeProgress& p) {
    if (!log) return;
    if (tty) {
      std::fprintf(log, "\rtokenizing %s: %s", data.string().c_str(), progress_text(p).c_str());
    } else if (p.seconds - last_line_s >= 10) {  // a log file: a line every 10 s
      last_line_s = p.seconds;
      std::fprintf(log, "tokenizing %s: %s\n", data.string().c_str(), progress_text(p).c_str());
    }
    std::fflush(log);
  };
  TokenizeProgress final_p;
  auto record = [&](const TokenizeProgress& p) {
    final_p = p;
    progress(p);
  };
  try {
    out.set = tokenize_examples(text, data.string(), tok, chat.get(), opts, record);
  } catch (...) {
    if (tty) std::fprintf(log, "\n");
    throw;
  }
  if (log) {
    std::fprintf(log, "%stokenized %s: %s in %.2f s (%.0f tokens/s)\n", tty ? "\n" : "", data.string().c_str(),
                 progress_text(final_p).c_str(), final_p.seconds,
                 final_p.seconds > 0 ? double(final_p.tokens) / final_p.seconds : 0.0);
  }
  if (!cache.empty()) {
    try {
      io::write_example_cache(cache, out.set, key);
      out.note += "; wrote " + cache.string();
    } catch (const std::exception& e) {
      out.note += "; not written (" + std::string(e.what()) + ")";
    }
  }
  return out;
}

}  // namespace lvt::text
