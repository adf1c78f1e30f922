#pragma once
// Streaming detokenization: generated ids arrive one at a time, and the text printed so far must
// only ever grow by whole characters. A byte-fallback token (<0xE2>) or a byte-level token can
// hold part of a UTF-8 character; the decoders turn an incomplete one into U+FFFD
// (tokenizers' from_utf8_lossy), so the tail of the decoded text is held back while it ends in
// U+FFFD (or in an incomplete UTF-8 sequence) and printed once the next tokens complete it.
// Each push decodes every id since the start (decoders such as Strip or Metaspace look at the
// first token), and hands out the new complete part.
#include <cstdint>
#include <string>
#include <vector>

#include "lvt/text/tokenizer.hpp"

namespace lvt::text {

class TextStream {
 public:
  explicit TextStream(const Tokenizer& t, bool skip_special_tokens = true)
      : tok_(&t), skip_(skip_special_tokens) {}

  // The text that became complete with this id (possibly empty).
  std::string push(std::int32_t id) {
    ids_.push_back(id);
    const std::string text = tok_->decode(ids_, skip_);
    return take(text, complete_prefix(text));
  }
  // Whatever is left at the end (a U+FFFD that never completed prints as it is).
  std::string finish() {
    const std::string text = tok_->decode(ids_, skip_);
    return take(text, text.size());
  }
  const std::string& printed() const { return printed_; }

  // Length of the longest prefix of s that ends neither in U+FFFD nor inside a UTF-8 sequence.
  static std::size_t complete_prefix(const std::string& s) {
    std::size_t end = s.size();
    for (;;) {
      if (end >= 3 && s.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) {
        end -= 3;
        continue;
      }
      // An incomplete trailing sequence: a lead byte with fewer continuation bytes than it needs.
      std::size_t i = end, cont = 0;
      while (i > 0 && cont < 3 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++cont;
      if (i == 0) return end;
      const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
      const std::size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
      if (need > cont) end = i - 1;
      return end;
    }
  }

 private:
  const Tokenizer* tok_;
  bool skip_;
  std::vector<std::int32_t> ids_;
  std::string printed_;

  // The part of text[0, end) beyond what was printed. A decoder whose output is not a prefix of
  // its output for more ids would rewrite printed text: then only the growth is printed.
  std::string take(const std::string& text, std::size_t end) {
    if (end <= printed_.size()) return {};
    std::string out = text.substr(printed_.size(), end - printed_.size());
    printed_ = text.substr(0, end);
    return out;
  }
};

}  // namespace lvt::text
