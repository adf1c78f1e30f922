#pragma once
// The BPE model of tokenizer.json: vocab, ranked merges looked up by a hash of the pair's ids,
// byte_fallback, unk_token / fuse_unk, ignore_merges, continuing_subword_prefix and
// end_of_word_suffix, and a word cache.
#include <cstdint>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lvt/text/json_path.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

class Bpe {
 public:
  explicit Bpe(const JsonAt& j) {
    if (j.type() != "BPE") j["type"].fail("unknown model \"" + j.type() + "\" (only BPE is supported)");
    if (j.has("dropout")) j["dropout"].fail("BPE dropout is not supported (use null)");
    auto vocab = j["vocab"];
    if (!vocab.value.is_object()) vocab.fail("expected an object of token: id");
    for (auto it = vocab.value.begin(); it != vocab.value.end(); ++it) {
      if (!it->is_number_integer()) JsonAt{*it, vocab.path + "/" + it.key(), j.file}.fail("expected an integer id");
      auto id = it->get<int64_t>();
      if (id < 0 || id >= kMaxId) JsonAt{*it, vocab.path + "/" + it.key(), j.file}.fail("id out of range");
      add_vocab(it.key(), static_cast<int32_t>(id));
    }
    unk_ = j.str_or("unk_token", "");
    fuse_unk_ = j.bool_or("fuse_unk", false);
    byte_fallback_ = j.bool_or("byte_fallback", false);
    ignore_merges_ = j.bool_or("ignore_merges", false);
    prefix_ = j.str_or("continuing_subword_prefix", "");
    suffix_ = j.str_or("end_of_word_suffix", "");
    if (!unk_.empty()) {
      auto it = vocab_.find(unk_);
      if (it == vocab_.end()) j["unk_token"].fail("unk_token \"" + unk_ + "\" is not in the vocab");
      unk_id_ = it->second;
    }
    if (byte_fallback_)
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        auto it = vocab_.find(name);
        byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
      }
    auto merges = j["merges"];
    size_t n = merges.size();
    merges_.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
      auto m = merges[i];
      std::string a, b;
      if (m.value.is_string()) {
        std::string s = m.str();
        size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) m.fail("expected \"a b\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.value.is_array() && m.value.size() == 2) {
        a = m[size_t{0}].str();
        b = m[size_t{1}].str();
      } else {
        m.fail("expected \"a b\" or [a, b]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b.substr(std::min(b.size(), prefix_.size())));
      if (ia == vocab_.end() || ib == vocab_.end()) m.fail("merge of a token that is not in the vocab");
      if (iab == vocab_.end()) m.fail("merged token is not in the vocab");
      merges_.emplace(key(ia->second, ib->second), Merge{static_cast<int32_t>(i), iab->second});
    }
  }

  void add_vocab(const std::string& token, int32_t id) {
    vocab_[token] = id;
    if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(static_cast<size_t>(id) + 1);
    id_to_token_[static_cast<size_t>(id)] = token;
  }
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }
  const std::vector<std::string>& id_to_token() const { return id_to_token_; }

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    auto& cache = cache_->words;
    {
      std::lock_guard lock(cache_->mutex);
      auto it = cache.find(std::string(word));  // one lookup string per word, not per char
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids;
    merge_word(word, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    if (word.size() >= kCacheMaxBytes) return;  // as tokenizers: long words (whole documents) stay out
    std::lock_guard lock(cache_->mutex);
    if (cache.size() >= kCacheWords) cache.clear();
    cache.emplace(std::string(word), std::move(ids));
  }

 private:
  static constexpr size_t kCacheWords = 1 << 16;
  static constexpr size_t kCacheMaxBytes = 256;  // tokenizers' MAX_LENGTH: longer words are not cached
  static constexpr int64_t kMaxId = 1 << 22;  // real vocabularies stay far below; bounds the id table
  struct Merge { int32_t rank, id; };
  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  void merge_word(std::string_view word, std::vector<int32_t>& ids) const {
    if (ignore_merges_) {
      auto it = vocab_.find(std::string(word));
      if (it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    // Initial symbols: one per character (with prefix/suffix), byte fallback or unk otherwise.
    std::vector<int32_t> sym;
    std::string buf;
    bool prev_unk = false;
    for (size_t i = 0; i < word.size();) {
      size_t b = i;
      utf8_next(word, i);
      buf.clear();
      if (b > 0) buf += prefix_;
      buf.append(word.substr(b, i - b));
      if (i == word.size()) buf += suffix_;
      auto it = vocab_.find(buf);
      if (it != vocab_.end()) {
        sym.push_back(it->second);
        prev_unk = false;
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (size_t k = b; k < i; ++k) all = all && byte_ids_[static_cast<unsigned char>(word[k])] >= 0;
        if (all) {
          for (size_t k = b; k < i; ++k) sym.push_back(byte_ids_[static_cast<unsigned char>(word[k])]);
          prev_unk = false;
          continue;
        }
      }
      if (unk_id_ >= 0) {
        if (!(fuse_unk_ && prev_unk)) sym.push_back(unk_id_);
        prev_unk = true;
      }
    }
    // Merge the lowest-ranked pair first, leftmost among equals, as tokenizers' Word::merge_all.
    size_t n = sym.size();
    std::vector<int> next(n), prev(n);
    std::vector<char> alive(n, 1);
    for (size_t i = 0; i < n; ++i) {
      next[i] = i + 1 < n ? static_cast<int>(i + 1) : -1;
      prev[i] = static_cast<int>(i) - 1;
    }
    struct Cand { int32_t rank; int pos; int32_t left, right; };
    auto cmp = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
    std::priority_queue<Cand, std::vector<Cand>, decltype(cmp)> heap(cmp);
    auto push = [&](int i) {
      int j = next[i];
      if (i < 0 || j < 0) return;
      auto it = merges_.find(key(sym[i], sym[j]));
      if (it != merges_.end()) heap.push({it->second.rank, i, sym[i], sym[j]});
    };
    for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int>(i));
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      int i = c.pos;
      if (!alive[i] || sym[i] != c.left || next[i] < 0 || sym[next[i]] != c.right) continue;
      int j = next[i];
      sym[i] = merges_.at(key(c.left, c.right)).id;
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      if (prev[i] >= 0) push(prev[i]);
      push(i);
    }
    for (int i = n ? 0 : -1; i >= 0; i = next[i]) ids.push_back(sym[i]);
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::string unk_, prefix_, suffix_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256] = {};
  struct Cache {
    std::unordered_map<std::string, std::vector<int32_t>> words;
    std::mutex mutex;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

}  // namespace lvt::text
