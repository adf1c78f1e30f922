// lvt::text::Tokenizer encode throughput, single thread, on real text: one benchmark per tokenizer
// folder of the shared data (qwen3, mistral, ...) and per corpus. tools/peers/bench_tokenizers.py
// measures the Rust `tokenizers` library on the very same documents; tools/bench-tokenizer runs
// both and prints them side by side.
//
// Corpora (the same rule on both sides, so the same documents):
//   docs   README.md then docs/*.md in name order, each file one document (English prose,
//          tables, code spans: what a fine-tuning corpus of technical text looks like)
//   mixed  the 330 strings of tests/text/corpus.jsonl, each one document (20 scripts, CJK,
//          emoji and ZWJ sequences, combining marks, code, numbers, whitespace runs, special
//          tokens inside text)
// Each document is encoded with Tokenizer::encode(doc, add_special_tokens = true), the tokenizer
// loaded with from_files(tokenizer.json) (no tokenizer_config.json: the pipeline of
// tokenizers.Tokenizer.from_file). The word cache is warm after the first iteration, as it is for
// any long-running encode loop. Counters: bytes_per_second (UTF-8 input), tokens_per_s, and the
// per-pass totals `bytes`, `tokens`, `docs`, and `ids_hash`, a 48-bit hash of every id of a pass
// in order (h = (h * 1000003 + id + 1) mod 2^48, per document in corpus order), which the driver
// checks against the same hash of tokenizers' ids: the two libraries encoded the same tokens.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lvt/text/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> docs_corpus(const fs::path& root) {
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(root / "docs"))
    if (e.path().extension() == ".md") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  files.insert(files.begin(), root / "README.md");
  std::vector<std::string> out;
  for (auto& f : files) out.push_back(read_file(f));
  return out;
}

std::vector<std::string> mixed_corpus(const fs::path& root) {
  std::vector<std::string> out;
  std::ifstream f(root / "tests" / "text" / "corpus.jsonl");
  for (std::string line; std::getline(f, line);) out.push_back(lvt::text::Json::parse(line).get<std::string>());
  return out;
}

void encode_corpus(benchmark::State& st, std::shared_ptr<const lvt::text::Tokenizer> tok,
                   std::shared_ptr<const std::vector<std::string>> corpus) {
  size_t bytes = 0, tokens = 0;
  uint64_t hash = 0;
  for (auto& d : *corpus) {
    bytes += d.size();
    for (int32_t id : tok->encode(d, true)) hash = (hash * 1000003u + static_cast<uint64_t>(id) + 1) & ((1ull << 48) - 1);
  }
  for (auto _ : st) {
    tokens = 0;
    for (auto& d : *corpus) {
      auto ids = tok->encode(d, true);
      tokens += ids.size();
      benchmark::DoNotOptimize(ids.data());
    }
  }
  double n = static_cast<double>(st.iterations());
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * bytes));
  st.counters["tokens_per_s"] = benchmark::Counter(n * static_cast<double>(tokens), benchmark::Counter::kIsRate);
  st.counters["bytes"] = static_cast<double>(bytes);
  st.counters["tokens"] = static_cast<double>(tokens);
  st.counters["docs"] = static_cast<double>(corpus->size());
  st.counters["ids_hash"] = static_cast<double>(hash);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const fs::path root = LVT_SOURCE_ROOT;
  const char* env = std::getenv("LVT_SHARED_DATA");
  fs::path shared = env && *env ? fs::path(env) : fs::path(LVT_SHARED_DATA);
  fs::path tokdir = shared.empty() ? fs::path() : shared / "tokenizers";
  std::vector<fs::path> folders;
  if (!tokdir.empty() && fs::is_directory(tokdir))
    for (auto& e : fs::directory_iterator(tokdir))
      if (fs::exists(e.path() / "tokenizer.json")) folders.push_back(e.path());
  std::sort(folders.begin(), folders.end());
  if (folders.empty()) {
    std::fprintf(stderr, "bench_text: no tokenizer folders under \"%s\" (set LVT_SHARED_DATA to the shared data "
                 "folder); nothing measured\n", tokdir.string().c_str());
    return 77;
  }
  auto docs = std::make_shared<const std::vector<std::string>>(docs_corpus(root));
  auto mixed = std::make_shared<const std::vector<std::string>>(mixed_corpus(root));
  for (auto& dir : folders) {
    auto tok = std::make_shared<const lvt::text::Tokenizer>(lvt::text::Tokenizer::from_files(dir / "tokenizer.json"));
    std::string name = dir.filename().string();
    for (auto& [cname, corpus] : {std::pair{"docs", docs}, std::pair{"mixed", mixed}})
      benchmark::RegisterBenchmark(("BM_encode/" + name + "/" + cname).c_str(), encode_corpus, tok, corpus)
          ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
