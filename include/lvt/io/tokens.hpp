#pragma once
// Token datasets: llm.c's .bin files and JSONL token arrays, cut into training windows.
//
// llm.c .bin (dev/data/data_common.py write_datafile): a header of 256 little-endian int32,
// header[0] magic, header[1] version, header[2] token count, then the tokens:
//   magic 20240520, version 1: uint16 tokens (llm.c "gpt-2")
//   magic 20240801, version 7: uint32 tokens (llm.c "llama-3"), lvt's uint32 variant
// Files are memory-mapped; a billion-token file costs address space, not RAM.
//
// JSONL: one document per line, either a bare array of token ids `[1, 2, 3]` or an object
// {"input_ids": [...], "loss_mask": [0, 0, 1, ...]} (mask 1 = the token is a training target).
// Documents are packed back to back, each followed by EOS when an eos id is given.
//
// Windows: seq + 1 consecutive tokens; window k starts at token k * seq (inputs are its first
// seq tokens, targets its last seq), as llm.c's dataloader cuts them. The last
// ceil(val_fraction * windows) windows form the validation split. Order is sequential, or a
// seeded Fisher-Yates permutation per epoch; DataPosition {epoch, index} resumes exactly.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/safetensors.hpp"  // MappedFile, write_text_atomic

namespace lvt::io {

inline constexpr std::int32_t llmc_magic_u16 = 20240520;
inline constexpr std::int32_t llmc_version_u16 = 1;
inline constexpr std::int32_t llmc_magic_u32 = 20240801;
inline constexpr std::int32_t llmc_version_u32 = 7;
inline constexpr std::size_t llmc_header_bytes = 256 * 4;

// Target value of a position that does not count in the loss (PyTorch's ignore_index).
inline constexpr std::int32_t target_ignore = -100;

class TokenDataset {
 public:
  // `vocab` > 0: every token must be < vocab. `eos` >= 0: JSONL documents end with it.
  static TokenDataset open(const std::filesystem::path& path, int vocab, int eos = -1) {
    const std::string ext = path.extension().string();
    if (ext == ".jsonl" || ext == ".json") return open_jsonl(path, vocab, eos);
    return open_llmc(path, vocab);
  }

  static TokenDataset open_llmc(const std::filesystem::path& path, int vocab) {
    TokenDataset d;
    d.source_ = path.string();
    d.map_ = MappedFile(path);
    const auto bytes = d.map_.bytes();
    if (bytes.size() < llmc_header_bytes)
      throw Error(d.source_ + ": truncated: " + std::to_string(bytes.size()) +
                  " bytes, shorter than the 1024-byte llm.c header");
    std::int32_t h[3];
    std::memcpy(h, bytes.data(), sizeof h);
    if (h[0] == llmc_magic_u16) {
      d.width_ = 2;
      if (h[1] != llmc_version_u16)
        throw Error(d.source_ + ": header version " + std::to_string(h[1]) +
                    " (magic 20240520 files are version 1)");
    } else if (h[0] == llmc_magic_u32) {
      d.width_ = 4;
      if (h[1] != llmc_version_u32)
        throw Error(d.source_ + ": header version " + std::to_string(h[1]) +
                    " (magic 20240801 files are version 7)");
    } else {
      throw Error(d.source_ + ": header magic " + std::to_string(h[0]) +
                  " is not an llm.c token file (20240520 uint16 or 20240801 uint32)");
    }
    if (h[2] < 0) throw Error(d.source_ + ": header token count " + std::to_string(h[2]) + " is negative");
    if (h[2] == 0) throw Error(d.source_ + ": empty dataset (token count 0)");
    d.n_ = std::size_t(h[2]);
    const std::size_t need = llmc_header_bytes + d.n_ * std::size_t(d.width_);
    if (bytes.size() < need)
      throw Error(d.source_ + ": truncated: the header says " + std::to_string(d.n_) +
                  " tokens (" + std::to_string(need) + " bytes) but the file has " +
                  std::to_string(bytes.size()) + " bytes");
    if (bytes.size() > need)
      throw Error(d.source_ + ": " + std::to_string(bytes.size() - need) +
                  " bytes after the " + std::to_string(d.n_) + " tokens the header declares");
    d.data_ = bytes.data() + llmc_header_bytes;
    d.check_vocab(vocab);
    return d;
  }

  static TokenDataset open_jsonl(const std::filesystem::path& path, int vocab, int eos = -1) {
    TokenDataset d;
    d.source_ = path.string();
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(d.source_ + ": cannot open");
    std::string line;
    bool any_mask = false;
    std::vector<std::uint8_t> mask;
    for (std::size_t lineno = 1; std::getline(f, line); ++lineno) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = d.source_ + ":" + std::to_string(lineno);
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) throw Error(where + ": not JSON");
      const nlohmann::json* ids = &j;
      const nlohmann::json* m = nullptr;
      if (j.is_object()) {
        auto it = j.find("input_ids");
        if (it == j.end()) throw Error(where + ": field 'input_ids' missing");
        ids = &*it;
        if (auto mi = j.find("loss_mask"); mi != j.end() && !mi->is_null()) m = &*mi;
      }
      if (!ids->is_array())
        throw Error(where + ": expected an array of token ids or {\"input_ids\": [...]}");
      if (ids->empty()) continue;
      if (m && (!m->is_array() || m->size() != ids->size()))
        throw Error(where + ": field 'loss_mask' must be an array as long as 'input_ids' (" +
                    std::to_string(ids->size()) + ")");
      std::uint8_t last = 1;
      for (std::size_t i = 0; i < ids->size(); ++i) {
        const auto& t = (*ids)[i];
        if (!t.is_number_unsigned() || t.get<std::uint64_t>() > 0xffffffffull)
          throw Error(where + ": token " + std::to_string(i) + " is " + t.dump() +
                      ", not a token id");
        d.owned_.push_back(t.get<std::uint32_t>());
        last = 1;
        if (m) {
          const auto& mv = (*m)[i];
          if (!(mv.is_number_integer() || mv.is_boolean()))
            throw Error(where + ": field 'loss_mask' holds " + mv.dump() + " (expected 0/1)");
          last = mv.is_boolean() ? std::uint8_t(mv.get<bool>())
                                 : std::uint8_t(mv.get<std::int64_t>() != 0);
          any_mask = any_mask || !last;
        }
        mask.push_back(last);
      }
      if (eos >= 0) {
        d.owned_.push_back(std::uint32_t(eos));
        mask.push_back(last);  // predicting the end counts when the document's end counts
      }
    }
    if (d.owned_.empty()) throw Error(d.source_ + ": empty dataset (no tokens)");
    if (any_mask) d.mask_ = std::move(mask);
    d.n_ = d.owned_.size();
    d.width_ = 4;
    d.data_ = reinterpret_cast<const std::byte*>(d.owned_.data());
    d.check_vocab(vocab);
    return d;
  }

  std::size_t size() const { return n_; }
  const std::string& source() const { return source_; }
  bool has_mask() const { return !mask_.empty(); }
  int token_bytes() const { return width_; }

  std::uint32_t operator[](std::size_t i) const {
    if (width_ == 2) {
      std::uint16_t v;
      std::memcpy(&v, data_ + 2 * i, 2);
      return v;
    }
    std::uint32_t v;
    std::memcpy(&v, data_ + 4 * i, 4);
    return v;
  }
  bool counts(std::size_t i) const { return mask_.empty() || mask_[i]; }

  TokenDataset(TokenDataset&&) noexcept = default;
  TokenDataset& operator=(TokenDataset&&) noexcept = default;

 private:
  TokenDataset() = default;
  void check_vocab(int vocab) const {
    if (vocab <= 0) return;
    for (std::size_t i = 0; i < n_; ++i) {
      const std::uint32_t t = (*this)[i];
      if (t >= std::uint32_t(vocab))
        throw Error(source_ + ": token " + std::to_string(i) + " is id " + std::to_string(t) +
                    ", not below the model's vocab_size " + std::to_string(vocab));
    }
  }

  std::string source_;
  MappedFile map_;
  std::vector<std::uint32_t> owned_;  // JSONL tokens (vector storage moves without reallocating)
  std::vector<std::uint8_t> mask_;
  const std::byte* data_ = nullptr;
  std::size_t n_ = 0;
  int width_ = 2;
};

// Writes an llm.c token file atomically: uint16 (magic 20240520, v1) when `wide` is false,
// uint32 (magic 20240801, v7) otherwise.
inline void write_llmc_tokens(const std::filesystem::path& path,
                              const std::vector<std::uint32_t>& tokens, bool wide) {
  if (tokens.size() > 0x7fffffffu)
    throw Error(path.string() + ": " + std::to_string(tokens.size()) +
                " tokens exceed the int32 count of the llm.c header");
  std::string out(llmc_header_bytes, '\0');
  const std::int32_t h[3] = {wide ? llmc_magic_u32 : llmc_magic_u16,
                             wide ? llmc_version_u32 : llmc_version_u16, std::int32_t(tokens.size())};
  std::memcpy(out.data(), h, sizeof h);
  out.resize(llmc_header_bytes + tokens.size() * (wide ? 4 : 2));
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (!wide && tokens[i] > 0xffff)
      throw Error(path.string() + ": token " + std::to_string(i) + " is id " +
                  std::to_string(tokens[i]) + ", too large for uint16 (write the uint32 variant)");
    if (wide) {
      std::memcpy(out.data() + llmc_header_bytes + 4 * i, &tokens[i], 4);
    } else {
      const std::uint16_t v = std::uint16_t(tokens[i]);
      std::memcpy(out.data() + llmc_header_bytes + 2 * i, &v, 2);
    }
  }
  write_text_atomic(path, out);
}

// Where a loader stands: in epoch `epoch`, the next window is the `index`-th of that epoch.
struct DataPosition {
  std::uint64_t epoch = 0;
  std::uint64_t index = 0;
  constexpr bool operator==(const DataPosition&) const = default;
};

enum class Split : std::uint8_t { train, validation };

// The order of `count` items in `epoch` under `seed`: Fisher-Yates with an unbiased bounded draw
// from mt19937_64, so the same order on every platform (std::shuffle's algorithm is
// implementation-defined). WindowLoader and PackedLoader (io/examples.hpp) both use it.
inline void shuffled_order(std::vector<std::uint64_t>& order, std::uint64_t count,
                           std::uint64_t seed, std::uint64_t epoch) {
  order.resize(count);
  for (std::uint64_t i = 0; i < count; ++i) order[i] = i;
  if (count < 2) return;
  std::mt19937_64 rng(seed ^ (0x9e3779b97f4a7c15ull * (epoch + 1)));
  for (std::uint64_t i = count - 1; i > 0; --i) {
    const std::uint64_t bound = i + 1;
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    std::uint64_t r;
    do r = rng(); while (r >= limit);
    std::swap(order[i], order[r % bound]);
  }
}

// Serves windows of one split, sequential or shuffled per epoch with a seed.
class WindowLoader {
 public:
  WindowLoader(const TokenDataset& data, int seq, Split split, double val_fraction, bool shuffle,
               std::uint64_t seed)
      : data_(&data), seq_(seq), shuffle_(shuffle), seed_(seed) {
    if (seq <= 0) throw Error(data.source() + ": sequence length must be positive");
    if (!(val_fraction >= 0 && val_fraction < 1))
      throw Error(data.source() + ": validation fraction must be in [0, 1)");
    if (data.size() < std::size_t(seq) + 1)
      throw Error(data.source() + ": " + std::to_string(data.size()) +
                  " tokens, fewer than one window of seq + 1 = " + std::to_string(seq + 1));
    const std::uint64_t windows = (data.size() - 1) / std::uint64_t(seq);
    std::uint64_t val = std::uint64_t(std::ceil(val_fraction * double(windows)));
    if (val_fraction > 0 && val >= windows)
      throw Error(data.source() + ": " + std::to_string(windows) + " windows of " +
                  std::to_string(seq + 1) + " tokens leave none for training after the " +
                  "validation split");
    first_ = split == Split::train ? 0 : windows - val;
    count_ = split == Split::train ? windows - val : val;
    if (count_ == 0)
      throw Error(data.source() + ": empty dataset split (" +
                  (split == Split::train ? "train" : "validation") + ": 0 windows)");
    make_order();
  }

  std::uint64_t windows() const { return count_; }
  DataPosition position() const { return pos_; }
  void seek(DataPosition p) {
    if (p.index >= count_)
      throw Error(data_->source() + ": data position index " + std::to_string(p.index) +
                  " is beyond the split's " + std::to_string(count_) + " windows");
    const bool new_epoch = p.epoch != pos_.epoch;
    pos_ = p;
    if (new_epoch) make_order();
  }

  // Window number (within the dataset) of the next window, then advances.
  std::uint64_t next_window() {
    const std::uint64_t w = first_ + (shuffle_ ? order_[pos_.index] : pos_.index);
    if (++pos_.index == count_) {
      pos_.index = 0;
      ++pos_.epoch;
      make_order();
    }
    return w;
  }

  // Fills seq inputs and seq targets (target_ignore where the loss mask is 0).
  void next(std::int32_t* inputs, std::int32_t* targets) {
    const std::size_t start = std::size_t(next_window()) * std::size_t(seq_);
    for (int t = 0; t < seq_; ++t) {
      inputs[t] = std::int32_t((*data_)[start + t]);
      const std::size_t j = start + t + 1;
      targets[t] = data_->counts(j) ? std::int32_t((*data_)[j]) : target_ignore;
    }
  }

 private:
  void make_order() {
    if (shuffle_) shuffled_order(order_, count_, seed_, pos_.epoch);
  }

  const TokenDataset* data_;
  int seq_;
  bool shuffle_;
  std::uint64_t seed_;
  std::uint64_t first_ = 0, count_ = 0;
  DataPosition pos_{};
  std::vector<std::uint64_t> order_;
};

}  // namespace lvt::io
