#pragma once
// tokenizer.json pre-tokenizers: Sequence, Split, ByteLevel, Metaspace, Digits. Each step splits
// every current piece into smaller ones, as tokenizers' PreTokenizedString::split does.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lvt/text/byte_level.hpp"
#include "lvt/text/json_path.hpp"
#include "lvt/text/pattern.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the original input (Metaspace's prepend_scheme "first")
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

// Splits s at the given matches (sorted, non-overlapping) the way SplitDelimiterBehavior says.
inline void split_with(std::string_view s, bool at_start, const std::vector<std::pair<size_t, size_t>>& matches,
                       SplitBehavior how, bool invert, std::vector<Piece>& out) {
  struct Part { size_t b, e; bool match; };
  std::vector<Part> parts;
  parts.reserve(2 * matches.size() + 1);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) parts.push_back({prev, b, invert});
    parts.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != s.size()) parts.push_back({prev, s.size(), invert});
  std::vector<std::pair<size_t, size_t>> ranges;
  ranges.reserve(parts.size());
  switch (how) {
    case SplitBehavior::Isolated:
      for (auto& q : parts) ranges.emplace_back(q.b, q.e);
      break;
    case SplitBehavior::Removed:
      for (auto& q : parts)
        if (!q.match) ranges.emplace_back(q.b, q.e);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto& q : parts) {
        if (q.match && !ranges.empty() && !prev_match) ranges.back().second = q.e;
        else ranges.emplace_back(q.b, q.e);
        prev_match = q.match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (auto& q : parts) {
        if (!q.match && !ranges.empty() && prev_match) ranges.back().second = q.e;
        else ranges.emplace_back(q.b, q.e);
        prev_match = q.match;
      }
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (auto& q : parts) {
        if (q.match && prev_match && !ranges.empty()) ranges.back().second = q.e;
        else ranges.emplace_back(q.b, q.e);
        prev_match = q.match;
      }
      break;
    }
  }
  for (auto [b, e] : ranges)
    if (b != e) out.push_back({std::string(s.substr(b, e - b)), at_start && b == 0});
}
inline void split_with(const Piece& p, const std::vector<std::pair<size_t, size_t>>& matches,
                       SplitBehavior how, bool invert, std::vector<Piece>& out) {
  split_with(p.text, p.at_start, matches, how, invert, out);
}

class PreTokenizer {
 public:
  explicit PreTokenizer(const JsonAt& j) {
    if (j.type() == "Sequence") {
      auto list = j["pretokenizers"];
      for (size_t i = 0; i < list.size(); ++i) {
        if (list[i].type() == "Sequence") {
          PreTokenizer inner(list[i]);
          for (auto& s : inner.steps_) steps_.push_back(std::move(s));
        } else {
          steps_.push_back(Step::parse(list[i]));
        }
      }
    } else {
      steps_.push_back(Step::parse(j));
    }
  }
  // True when a ByteLevel step maps bytes to characters (the model sees mapped text).
  bool byte_level() const {
    for (auto& s : steps_)
      if (s.kind == Step::ByteLevel) return true;
    return false;
  }
  void operator()(std::vector<Piece>& pieces) const {
    std::vector<Piece> next;
    for (auto& st : steps_) {
      next.clear();
      for (auto& p : pieces) st.apply(p, next);
      pieces.swap(next);
    }
  }

  static const std::string& gpt2_pattern() {
    static const std::string p =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    return p;
  }

 private:
  struct Step {
    enum Kind { Split, ByteLevel, Metaspace, Digits } kind;
    std::shared_ptr<Pattern> pattern;
    std::shared_ptr<Regex> regex;
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false, add_prefix_space = false, use_regex = false, split = true, individual = false;
    std::string replacement;
    enum Prepend { Always, First, Never } prepend = Always;

    static SplitBehavior parse_behavior(const JsonAt& j) {
      std::string b = j.str();
      if (b == "Isolated") return SplitBehavior::Isolated;
      if (b == "Removed") return SplitBehavior::Removed;
      if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
      if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
      if (b == "Contiguous") return SplitBehavior::Contiguous;
      j.fail("unknown split behavior \"" + b + "\"");
    }
    static Step parse(const JsonAt& j) {
      std::string t = j.type();
      Step s{};
      if (t == "Split") {
        s.kind = Split;
        s.pattern = std::make_shared<Pattern>(j["pattern"]);
        s.behavior = parse_behavior(j["behavior"]);
        s.invert = j.bool_or("invert", false);
      } else if (t == "ByteLevel") {
        s.kind = ByteLevel;
        s.add_prefix_space = j.bool_or("add_prefix_space", true);
        s.use_regex = j.bool_or("use_regex", true);
        if (s.use_regex) s.regex = std::make_shared<Regex>(gpt2_pattern());
      } else if (t == "Metaspace") {
        s.kind = Metaspace;
        s.replacement = j["replacement"].str();
        if (s.replacement.empty()) j["replacement"].fail("expected one character");
        s.split = j.bool_or("split", true);
        std::string scheme = j.str_or("prepend_scheme", j.bool_or("add_prefix_space", true) ? "always" : "never");
        if (scheme == "always") s.prepend = Always;
        else if (scheme == "first") s.prepend = First;
        else if (scheme == "never") s.prepend = Never;
        else j["prepend_scheme"].fail("unknown prepend_scheme \"" + scheme + "\"");
      } else if (t == "Digits") {
        s.kind = Digits;
        s.individual = j.bool_or("individual_digits", false);
      } else {
        j["type"].fail("unknown pre-tokenizer \"" + t + "\"");
      }
      return s;
    }

    void apply(const Piece& p, std::vector<Piece>& out) const {
      switch (kind) {
        case Split: split_with(p, pattern->find_all(p.text), behavior, invert, out); return;
        case ByteLevel: {
          auto& map = ByteLevelMap::get();
          bool prefix = add_prefix_space && (p.text.empty() || p.text[0] != ' ');
          if (!use_regex) {  // the whole piece, mapped: no intermediate copies
            Piece q{{}, p.at_start};
            q.text.reserve(2 * p.text.size() + 2);
            if (prefix) map.append(q.text, " ");
            map.append(q.text, p.text);
            out.push_back(std::move(q));
            return;
          }
          std::string spaced;
          if (prefix) spaced = " " + p.text;
          const std::string& text = prefix ? spaced : p.text;
          size_t from = out.size();
          split_with(text, p.at_start, regex->find_all(text), SplitBehavior::Isolated, false, out);
          std::string mapped;
          for (size_t k = from; k < out.size(); ++k) {
            mapped.clear();
            map.append(mapped, out[k].text);
            out[k].text.assign(mapped);
          }
          return;
        }
        case Metaspace: {
          Piece q{{}, p.at_start};
          for (char c : p.text) {
            if (c == ' ') q.text += replacement;
            else q.text += c;
          }
          bool starts = q.text.compare(0, replacement.size(), replacement) == 0;
          if (!starts && (prepend == Always || (prepend == First && p.at_start))) q.text.insert(0, replacement);
          if (!split) {
            if (!q.text.empty()) out.push_back(std::move(q));
            return;
          }
          std::vector<std::pair<size_t, size_t>> m;
          for (size_t f = q.text.find(replacement); f != std::string::npos; f = q.text.find(replacement, f + replacement.size()))
            m.emplace_back(f, f + replacement.size());
          split_with(q, m, SplitBehavior::MergedWithNext, false, out);
          return;
        }
        case Digits: {
          std::vector<std::pair<size_t, size_t>> m;
          for (size_t i = 0; i < p.text.size();) {
            size_t b = i;
            char32_t c = utf8_next(p.text, i);
            if (is_numeric(c)) m.emplace_back(b, i);
          }
          split_with(p, m, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous, false, out);
          return;
        }
      }
    }
  };
  std::vector<Step> steps_;
};

}  // namespace lvt::text
