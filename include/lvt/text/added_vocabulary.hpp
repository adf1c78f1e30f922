#pragma once
// Added tokens (tokenizer.json's added_tokens), split out of the text before the model sees it,
// with tokenizers' added_vocabulary.rs semantics: leftmost-longest matches, lstrip / rstrip take
// the whitespace next to a match, single_word only matches between non-word characters, and
// normalized tokens are matched in the normalized text (the others in the raw text).
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lvt/text/json_path.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// A run of text, or one added token (id >= 0).
struct Segment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;
};

class AddedVocabulary {
 public:
  void add(AddedToken t) {
    by_id_[t.id] = tokens_.size();
    tokens_.push_back(std::move(t));
    index_.clear();
  }
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find_id(int32_t id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
  }
  const AddedToken* find_content(std::string_view s) const {
    for (auto& t : tokens_)
      if (t.content == s) return &t;
    return nullptr;
  }

  // Splits s into text runs and added tokens whose `normalized` flag equals `normalized`.
  void split(std::string_view s, bool normalized, bool at_start, std::vector<Segment>& out) const {
    if (index_.empty()) build_index();
    const auto& starts = normalized ? index_norm_ : index_raw_;
    size_t text_from = 0, pos = 0;
    while (pos < s.size()) {
      // Longest token starting at pos (leftmost-longest).
      const AddedToken* best = nullptr;
      for (size_t k : starts[static_cast<unsigned char>(s[pos])]) {
        const auto& t = tokens_[k];
        if (s.compare(pos, t.content.size(), t.content) == 0 && (!best || t.content.size() > best->content.size()))
          best = &t;
      }
      if (!best) {
        ++pos;
        continue;
      }
      size_t b = pos, e = pos + best->content.size();
      if (best->single_word) {
        bool left_ok = b == 0 || !ends_with_word(s.substr(0, b));
        bool right_ok = e == s.size() || !starts_with_word(s.substr(e));
        if (!left_ok || !right_ok) {
          ++pos;
          continue;
        }
      }
      if (best->lstrip) {
        size_t nb = b;
        while (nb > text_from) {
          size_t k = nb - 1;
          while (k > text_from && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
          size_t kk = k;
          if (!is_whitespace(utf8_next(s, kk))) break;
          nb = k;
        }
        b = nb;
      }
      if (best->rstrip)
        while (e < s.size()) {
          size_t k = e;
          if (!is_whitespace(utf8_next(s, k))) break;
          e = k;
        }
      if (b > text_from) out.push_back({std::string(s.substr(text_from, b - text_from)), -1, at_start && text_from == 0});
      out.push_back({best->content, best->id, false});
      text_from = pos = e;
    }
    if (text_from < s.size()) out.push_back({std::string(s.substr(text_from)), -1, at_start && text_from == 0});
  }

 private:
  static bool word_char(char32_t c) { return is_alphanumeric(c) || c == '_'; }
  static bool ends_with_word(std::string_view s) {
    size_t k = s.size() - 1;
    while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    return word_char(utf8_next(s, k));
  }
  static bool starts_with_word(std::string_view s) {
    size_t k = 0;
    return word_char(utf8_next(s, k));
  }
  void build_index() const {
    index_.assign(1, 0);
    index_raw_.assign(256, {});
    index_norm_.assign(256, {});
    for (size_t k = 0; k < tokens_.size(); ++k) {
      if (tokens_[k].content.empty()) continue;
      auto& idx = tokens_[k].normalized ? index_norm_ : index_raw_;
      idx[static_cast<unsigned char>(tokens_[k].content[0])].push_back(k);
    }
  }

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  mutable std::vector<int> index_;  // non-empty once built
  mutable std::vector<std::vector<size_t>> index_raw_, index_norm_;
};

}  // namespace lvt::text
