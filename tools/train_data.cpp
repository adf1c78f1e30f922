// `--data FILE.jsonl` of training examples for `lvt train` / `lvt eval`: tokenized with the
// --tokenizer folder (text/training_data.hpp), cached, packed into rows of --seq tokens
// (io/examples.hpp). Its own file so that only g++ sees the tokenizer and Jinja code (the CUDA
// bodies in cuda_commands.cu include train_common.hpp).
#include <cstdio>
#include <filesystem>
#include <string>

#include "lvt/text/training_data.hpp"
#include "train_common.hpp"

namespace lvt::cli {

std::unique_ptr<io::PackedExamples> open_examples(const Args& a, const ModelConfig& m, const std::string& flag,
                                                  const std::filesystem::path& path, int seq,
                                                  const std::filesystem::path& cache_dir, std::FILE* log) {
  namespace fs = std::filesystem;
  fs::path tok_dir;
  if (a.has("--tokenizer")) {
    tok_dir = a.get("--tokenizer");
    if (!text::is_tokenizer_source(tok_dir))
      throw Error("--tokenizer '" + tok_dir.string() + "': no tokenizer.json there (give a tokenizer folder or a .gguf file)");
  } else {
    // The --model folder's tokenizer.json, or a .gguf model's own tokenizer metadata.
    const fs::path model = a.get("--model");
    if (!text::is_tokenizer_source(model))
      throw Error(flag + " " + path.string() + " holds training examples: give --tokenizer DIR (the --model " +
                  (fs::is_directory(model) ? "folder has no tokenizer.json)"
                   : text::is_gguf_file(model) ? ".gguf file has no tokenizer metadata)"
                                               : "is not a folder or a .gguf file)"));
    tok_dir = model;
  }
  text::DataOptions o;
  o.train_on_prompt = a.has("--train-on-prompt");
  o.skip_mismatched = a.has("--skip-mismatched");
  if (a.has("--chat-template")) o.chat_template = a.get("--chat-template");
  fs::path cache;
  const std::string cache_flag = a.get("--cache");
  if (cache_flag != "off") {
    const fs::path dir = a.has("--cache") ? fs::path(cache_flag) : cache_dir;
    if (a.has("--cache") && !fs::is_directory(dir))
      throw Error("--cache '" + cache_flag + "': not a folder (or 'off')");
    cache = (dir.empty() ? fs::path(".") : dir) / (path.filename().string() + ".lvt-cache.safetensors");
  }
  text::LoadedExamples ex;
  try {
    ex = text::load_examples(path, tok_dir, o, cache, stderr);
  } catch (const text::MaskMismatch& e) {
    throw Error(std::string(e.what()) + " (--skip-mismatched leaves such examples out, counted)");
  }
  std::fprintf(log, "tokens: %s\n", ex.note.empty() ? "no cache (--cache off)" : ex.note.c_str());
  if (ex.set.skipped)
    std::fprintf(log, "tokens: %llu examples skipped (--skip-mismatched): no exact loss mask; the first: %s\n",
                 static_cast<unsigned long long>(ex.set.skipped), ex.set.first_skipped.c_str());
  ex.set.check_vocab(m.vocab);
  return std::make_unique<io::PackedExamples>(std::move(ex.set), seq, !a.has("--no-truncate"));
}

}  // namespace lvt::cli
