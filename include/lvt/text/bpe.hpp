#pragma once
// The BPE model of tokenizer.json: vocab, ranked merges looked up by a hash of the pair's ids,
// byte_fallback, unk_token / fuse_unk, ignore_merges, continuing_subword_prefix and
// end_of_word_suffix, and a word cache.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lvt/text/json_path.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

// A hash table from 64-bit keys to two int32 values, open addressing with linear probing over a
// power-of-two array: the BPE merge loop looks a pair up once per adjacent pair, and a node-based
// std::unordered_map (a pointer chase and a modulo by a prime per lookup) was most of its time.
class IdTable {
 public:
  struct Slot {
    uint64_t key;
    int32_t a, b;
  };
  // Keeps the first value inserted for a key, as unordered_map::emplace.
  void emplace(uint64_t key, int32_t a, int32_t b) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    size_t i = hash(key) & mask_;
    while (slots_[i].key != kEmpty) {
      if (slots_[i].key == key) return;
      i = (i + 1) & mask_;
    }
    slots_[i] = {key, a, b};
    ++size_;
  }
  const Slot* find(uint64_t key) const {
    if (size_ == 0) return nullptr;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s;
      if (s.key == kEmpty) return nullptr;
    }
  }
  void reserve(size_t n) {
    while (slots_.size() < n * 2) grow();
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // keys are built from ids < 2^22: never all ones
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 29;
    return static_cast<size_t>(k);
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{kEmpty, 0, 0});
    mask_ = slots_.size() - 1;
    size_ = 0;
    for (auto& s : old)
      if (s.key != kEmpty) emplace(s.key, s.a, s.b);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

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
    // Single-character tokens by code point: the initial symbols of a word without a string
    // hash per character (unused with a continuing_subword_prefix or end_of_word_suffix).
    for (auto& [token, id] : vocab_) {
      size_t k = 0;
      if (token.empty() || utf8_valid_len(token, 0) != token.size()) continue;
      char_ids_.emplace(utf8_next(token, k), id, 0);
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
    merges_.reserve(n);
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
      merges_.emplace(key(ia->second, ib->second), static_cast<int32_t>(i), iab->second);
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
      auto it = cache.find(word);  // string_view lookup: no std::string built per word
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
    sym.reserve(word.size());
    std::string buf;
    bool prev_unk = false;
    const bool plain = prefix_.empty() && suffix_.empty();
    for (size_t i = 0; i < word.size();) {
      size_t b = i;
      char32_t cp = utf8_next(word, i);
      if (plain) {
        if (auto* c = char_ids_.find(cp)) {
          sym.push_back(c->a);
          prev_unk = false;
          continue;
        }
      }
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
    struct Cand { int32_t rank; int pos; int32_t left, right, merged; };
    auto cmp = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
    std::vector<Cand> heap;  // a min-heap by (rank, pos) through cmp
    heap.reserve(n);
    auto candidate = [&](int i) {
      int j = next[i];
      if (i < 0 || j < 0) return false;
      auto* m = merges_.find(key(sym[i], sym[j]));
      if (m) heap.push_back({m->a, i, sym[i], sym[j], m->b});
      return m != nullptr;
    };
    auto push = [&](int i) {
      if (candidate(i)) std::push_heap(heap.begin(), heap.end(), cmp);
    };
    for (size_t i = 0; i + 1 < n; ++i) candidate(static_cast<int>(i));
    std::make_heap(heap.begin(), heap.end(), cmp);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), cmp);
      Cand c = heap.back();
      heap.pop_back();
      int i = c.pos;
      if (!alive[i] || sym[i] != c.left || next[i] < 0 || sym[next[i]] != c.right) continue;
      int j = next[i];
      sym[i] = c.merged;
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
  IdTable merges_;    // key(left, right) -> (rank, merged id)
  IdTable char_ids_;  // code point -> (id of the one-character token, unused)
  std::string unk_, prefix_, suffix_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256] = {};
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Cache {
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
    std::mutex mutex;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

}  // namespace lvt::text
