#pragma once
// Tokenized training examples (instruction data), packed into rows of seq tokens.
//
// ExampleSet: the token ids of every example back to back, a loss mask (1: the token is a
// training target) and where each example starts, plus the file line it came from (for
// errors). text/training_data.hpp makes one from a JSONL file; it is cached on disk as a
// safetensors file (write_example_cache / read_example_cache) keyed by a ContentHash.
//
// PackedExamples: examples in file order, each put into the current row when it fits and
// otherwise into a new row (greedy, no reordering); an example longer than seq is truncated to
// its first seq tokens (counted), or rejected when truncation is off. A row holds, for every
// example, positions 0..n-1 and targets
//   target[i] = ids[i+1] when mask[i+1] is 1, else target_ignore (-100); the last token of an
//   example has target_ignore (it never predicts the next example),
// then padding to seq: the pad id, target_ignore, positions 0, 1, 2, ... (its own segment).
// A position 0 starts a new segment: the backend's attention never crosses one.
//
// PackedLoader: rows sequential or shuffled per epoch with the seed (shuffled_order, as
// WindowLoader), DataPosition {epoch, index} resumes exactly.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/safetensors.hpp"
#include "lvt/io/tokens.hpp"  // target_ignore, DataPosition, shuffled_order

namespace lvt::io {

// 128-bit content hash for cache keys: detects changed inputs, not adversaries. Each add() is
// one length-prefixed field, so ("ab", "c") and ("a", "bc") differ.
class ContentHash {
 public:
  ContentHash& add(std::string_view bytes) {
    word(0x6c76742d6669656cull ^ bytes.size());
    std::size_t i = 0;
    for (; i + 8 <= bytes.size(); i += 8) {
      std::uint64_t w;
      std::memcpy(&w, bytes.data() + i, 8);
      word(w);
    }
    std::uint64_t tail = 0;
    if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
    word(tail ^ (std::uint64_t(bytes.size() - i) << 59));
    return *this;
  }
  ContentHash& add(std::span<const std::byte> bytes) {
    return add(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  // 32 hex digits.
  std::string hex() const {
    const std::uint64_t x = fmix(a_ ^ rotl(b_, 17)), y = fmix(b_ + x);
    static const char* digits = "0123456789abcdef";
    std::string s(32, '0');
    for (int k = 0; k < 16; ++k) {
      s[std::size_t(15 - k)] = digits[(x >> (4 * k)) & 15];
      s[std::size_t(31 - k)] = digits[(y >> (4 * k)) & 15];
    }
    return s;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
  static std::uint64_t fmix(std::uint64_t x) {  // MurmurHash3's finalizer
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
  }
  void word(std::uint64_t w) {
    a_ = rotl(a_ ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full + 0x52dce729;
    b_ = rotl(b_ ^ (w * 0x4cf5ad432745937full), 33) * 0x87c37b91114253d5ull + a_;
  }
  std::uint64_t a_ = 0x243f6a8885a308d3ull, b_ = 0x13198a2e03707344ull;
};

struct ExampleSet {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> mask;     // per token: 1 = a training target
  std::vector<std::uint64_t> starts;  // example k is [starts[k], starts[k + 1]); size examples + 1
  std::vector<std::uint64_t> lines;   // 1-based line of example k in `source`
  std::string source;                 // the data file (messages say "source:line")
  std::int32_t pad_id = 0;            // padding token of packed rows (never a target)
  std::uint64_t skipped = 0;          // examples left out by the maker (e.g. no exact loss mask)
  std::string first_skipped;          // why the first of them was, with its file line

  ExampleSet() : starts{0} {}
  std::size_t examples() const { return starts.size() - 1; }
  std::size_t tokens() const { return ids.size(); }
  std::size_t length(std::size_t k) const { return std::size_t(starts[k + 1] - starts[k]); }
  std::string where(std::size_t k) const { return source + ":" + std::to_string(lines[k]); }

  void add(std::span<const std::int32_t> example_ids, std::span<const std::uint8_t> example_mask,
           std::uint64_t line) {
    if (example_ids.size() != example_mask.size())
      throw Error(source + ":" + std::to_string(line) + ": ids and loss mask differ in length");
    ids.insert(ids.end(), example_ids.begin(), example_ids.end());
    mask.insert(mask.end(), example_mask.begin(), example_mask.end());
    starts.push_back(ids.size());
    lines.push_back(line);
  }

  // Tokens that are targets somewhere (a 1 in the mask after an example's first token).
  std::size_t target_tokens() const {
    std::size_t n = 0;
    for (std::size_t k = 0; k < examples(); ++k)
      for (std::uint64_t i = starts[k] + 1; i < starts[k + 1]; ++i) n += mask[i];
    return n;
  }

  // Every id below the model's vocab_size; the error names the file line.
  void check_vocab(int vocab) const {
    for (std::size_t k = 0; k < examples(); ++k)
      for (std::uint64_t i = starts[k]; i < starts[k + 1]; ++i)
        if (ids[i] < 0 || ids[i] >= vocab)
          throw Error(where(k) + ": token " + std::to_string(i - starts[k]) + " is id " +
                      std::to_string(ids[i]) + ", not below the model's vocab_size " +
                      std::to_string(vocab));
  }
};

// ---- the cache file ---------------------------------------------------------------------------
// A safetensors file: "ids" I32 [tokens], "mask" U8 [tokens], "starts" I64 [examples + 1],
// "lines" I64 [examples]; metadata format = lvt-examples, version, key, source, pad_id.

inline constexpr const char* example_cache_format = "lvt-examples";
inline constexpr const char* example_cache_version = "2";

// Written to PATH.tmp.PID, fsynced, renamed onto PATH: a reader never sees a partial cache.
inline void write_example_cache(const std::filesystem::path& path, const ExampleSet& s,
                                const std::string& key) {
  if (s.examples() == 0) throw Error(path.string() + ": no examples to cache");
  std::vector<std::int64_t> starts(s.starts.begin(), s.starts.end()),
      lines(s.lines.begin(), s.lines.end());
  const auto n = std::int64_t(s.ids.size()), k = std::int64_t(s.examples());
  std::vector<TensorSpec> specs = {{"ids", StDtype::I32, {n}},
                                   {"mask", StDtype::U8, {n}},
                                   {"starts", StDtype::I64, {k + 1}},
                                   {"lines", StDtype::I64, {k}}};
  const std::map<std::string, std::string> meta = {{"format", example_cache_format},
                                                   {"version", example_cache_version},
                                                   {"key", key},
                                                   {"source", s.source},
                                                   {"pad_id", std::to_string(s.pad_id)},
                                                   {"skipped", std::to_string(s.skipped)},
                                                   {"first_skipped", s.first_skipped}};
  auto bytes = [](const auto& v) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte*>(v.data()),
                                      v.size() * sizeof(v[0]));
  };
  SafetensorsWriter w(path, std::move(specs), meta);
  w.write("ids", bytes(s.ids));
  w.write("mask", bytes(s.mask));
  w.write("starts", bytes(starts));
  w.write("lines", bytes(lines));
  w.finish();
}

// The cached set when `path` holds one made under `key`; false when it is missing, made under
// another key or version, or not a valid cache (the caller rebuilds it). `why` says which.
inline bool read_example_cache(const std::filesystem::path& path, const std::string& key,
                               ExampleSet& out, std::string& why) {
  if (!std::filesystem::exists(path)) {
    why = "no cache yet";
    return false;
  }
  try {
    const SafetensorsFile f(path);
    auto meta = [&](const char* k) {
      auto it = f.metadata().find(k);
      return it == f.metadata().end() ? std::string() : it->second;
    };
    if (meta("format") != example_cache_format || meta("version") != example_cache_version) {
      why = "not an lvt example cache of version " + std::string(example_cache_version);
      return false;
    }
    if (meta("key") != key) {
      why = "the data, tokenizer or format options changed";
      return false;
    }
    ExampleSet s;
    s.source = meta("source");
    s.pad_id = std::int32_t(std::stol(meta("pad_id")));
    s.skipped = std::stoull(meta("skipped"));
    s.first_skipped = meta("first_skipped");
    auto get = [&](const char* name, StDtype dt, auto& v) {
      const TensorInfo& t = f.at(name);
      if (t.dtype != dt || t.shape.size() != 1) throw Error(std::string("tensor ") + name + ": bad dtype or shape");
      v.resize(std::size_t(t.shape[0]));
      const auto b = f.bytes(t);
      std::memcpy(v.data(), b.data(), b.size());
    };
    std::vector<std::int64_t> starts, lines;
    get("ids", StDtype::I32, s.ids);
    get("mask", StDtype::U8, s.mask);
    get("starts", StDtype::I64, starts);
    get("lines", StDtype::I64, lines);
    bool ok = s.ids.size() == s.mask.size() && starts.size() == lines.size() + 1 &&
              starts.front() == 0 && std::uint64_t(starts.back()) == s.ids.size();
    for (std::size_t i = 1; ok && i < starts.size(); ++i) ok = starts[i] >= starts[i - 1];
    if (!ok) throw Error("inconsistent example starts");
    s.starts.assign(starts.begin(), starts.end());
    s.lines.assign(lines.begin(), lines.end());
    out = std::move(s);
    return true;
  } catch (const std::exception& e) {
    why = std::string("unreadable (") + e.what() + ")";
    return false;
  }
}

// ---- packing ----------------------------------------------------------------------------------

class PackedExamples {
 public:
  // `truncate` false: an example longer than seq is an error naming its line.
  PackedExamples(ExampleSet set, int seq, bool truncate) : set_(std::move(set)), seq_(seq) {
    if (seq < 2) throw Error(set_.source + ": packed rows need seq >= 2");
    if (set_.examples() == 0) throw Error(set_.source + ": no examples");
    std::size_t used = 0;
    row_first_.push_back(0);
    for (std::size_t k = 0; k < set_.examples(); ++k) {
      std::size_t n = set_.length(k);
      if (n > std::size_t(seq)) {
        if (!truncate)
          throw Error(set_.where(k) + ": example of " + std::to_string(n) +
                      " tokens is longer than seq " + std::to_string(seq) + " (truncation is off)");
        truncated_tokens_ += n - std::size_t(seq);
        ++truncated_;
        n = std::size_t(seq);
      }
      if (n == 0) continue;
      if (used + n > std::size_t(seq)) {
        row_first_.push_back(k);
        used = 0;
      }
      used += n;
      tokens_ += n;
    }
    row_first_.push_back(set_.examples());
    if (tokens_ == 0) throw Error(set_.source + ": every example is empty");
    targets_ = count_targets();
  }

  const ExampleSet& set() const { return set_; }
  const std::string& source() const { return set_.source; }
  int seq() const { return seq_; }
  std::uint64_t rows() const { return row_first_.size() - 1; }
  std::size_t tokens() const { return tokens_; }         // example tokens in rows (after truncation)
  std::size_t pad_tokens() const { return std::size_t(rows()) * std::size_t(seq_) - tokens_; }
  std::size_t targets() const { return targets_; }       // targets that are not target_ignore
  std::size_t truncated() const { return truncated_; }   // examples cut to seq
  std::size_t truncated_tokens() const { return truncated_tokens_; }

  // Row r: seq tokens, targets and positions (see the top of the file). Returns how many of the
  // seq tokens are examples' (the rest is padding).
  std::size_t fill_row(std::uint64_t r, std::int32_t* tokens, std::int32_t* targets,
                std::int32_t* positions) const {
    if (r >= rows()) throw Error(set_.source + ": row " + std::to_string(r) + " of " + std::to_string(rows()));
    std::size_t at = 0;
    for (std::uint64_t k = row_first_[r]; k < row_first_[r + 1]; ++k) {
      const std::size_t n = std::min(set_.length(k), std::size_t(seq_));
      const std::size_t s = std::size_t(set_.starts[k]);
      for (std::size_t i = 0; i < n; ++i) {
        tokens[at + i] = set_.ids[s + i];
        positions[at + i] = std::int32_t(i);
        targets[at + i] = i + 1 < n && set_.mask[s + i + 1] ? set_.ids[s + i + 1] : target_ignore;
      }
      at += n;
    }
    for (std::size_t j = at; j < std::size_t(seq_); ++j) {
      tokens[j] = set_.pad_id;
      targets[j] = target_ignore;
      positions[j] = std::int32_t(j - at);
    }
    return at;
  }

 private:
  std::size_t count_targets() const {
    std::size_t n = 0;
    for (std::size_t k = 0; k < set_.examples(); ++k) {
      const std::size_t len = std::min(set_.length(k), std::size_t(seq_));
      for (std::size_t i = 1; i < len; ++i) n += set_.mask[std::size_t(set_.starts[k]) + i];
    }
    return n;
  }

  ExampleSet set_;
  int seq_;
  std::vector<std::uint64_t> row_first_;  // row r holds examples [row_first_[r], row_first_[r + 1])
  std::size_t tokens_ = 0, targets_ = 0, truncated_ = 0, truncated_tokens_ = 0;
};

// Serves packed rows, in order or shuffled per epoch with a seed.
class PackedLoader {
 public:
  PackedLoader(const PackedExamples& data, bool shuffle, std::uint64_t seed)
      : data_(&data), shuffle_(shuffle), seed_(seed) {
    make_order();
  }

  std::uint64_t rows() const { return data_->rows(); }
  DataPosition position() const { return pos_; }
  void seek(DataPosition p) {
    if (p.index >= rows())
      throw Error(data_->source() + ": data position index " + std::to_string(p.index) +
                  " is beyond the " + std::to_string(rows()) + " packed rows");
    const bool new_epoch = p.epoch != pos_.epoch;
    pos_ = p;
    if (new_epoch) make_order();
  }

  std::uint64_t next_row() {
    const std::uint64_t r = shuffle_ ? order_[pos_.index] : pos_.index;
    if (++pos_.index == rows()) {
      pos_.index = 0;
      ++pos_.epoch;
      make_order();
    }
    return r;
  }

  // Fills seq tokens, targets and positions of the next row; returns its example tokens.
  std::size_t next(std::int32_t* tokens, std::int32_t* targets, std::int32_t* positions) {
    return data_->fill_row(next_row(), tokens, targets, positions);
  }

 private:
  void make_order() {
    if (shuffle_) shuffled_order(order_, rows(), seed_, pos_.epoch);
  }

  const PackedExamples* data_;
  bool shuffle_;
  std::uint64_t seed_;
  DataPosition pos_{};
  std::vector<std::uint64_t> order_;
};

}  // namespace lvt::io
