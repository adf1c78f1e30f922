// Streaming detokenization (text/stream.hpp): ids pushed one at a time print only whole UTF-8
// characters, and the pieces add up to the decoded text, with byte-fallback tokens
// (SentencePiece-style <0xE2>) and byte-level tokens that split a character.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "lvt/text/stream.hpp"

namespace fs = std::filesystem;
using lvt::text::TextStream;
using lvt::text::Tokenizer;

namespace {

const fs::path kTokenizers = fs::path(LVT_SOURCE_ROOT) / "tests" / "text" / "tokenizers";

void check_stream(const Tokenizer& t, const std::string& text) {
  const std::vector<std::int32_t> ids = t.encode(text, false);
  TextStream s(t);
  std::string out;
  int held = 0;  // pushes that printed nothing (a character still incomplete)
  for (std::int32_t id : ids) {
    const std::string piece = s.push(id);
    held += piece.empty();
    CHECK(lvt::text::utf8_first_invalid(piece) == std::string::npos);
    CHECK(piece.find("\xEF\xBF\xBD") == std::string::npos);
    out += piece;
  }
  out += s.finish();
  CHECK(out == t.decode(ids, true));
  MESSAGE(ids.size() << " ids, " << held << " pushes held back");
}

}  // namespace

TEST_CASE("streamed text grows by whole characters: byte fallback") {
  const Tokenizer t = Tokenizer::from_dir(kTokenizers / "metaspace_byte_fallback");
  // Characters outside the small vocabulary fall back to their UTF-8 bytes, one token each.
  const std::string text = "Grüße aus Köln ✓ 日本語 🙂 done";
  const std::vector<std::int32_t> ids = t.encode(text, false);
  int byte_tokens = 0;
  for (std::int32_t id : ids) byte_tokens += t.id_to_token(id).value_or("").rfind("<0x", 0) == 0;
  REQUIRE(byte_tokens >= 6);
  check_stream(t, text);
}

TEST_CASE("streamed text grows by whole characters: byte-level BPE") {
  check_stream(Tokenizer::from_dir(kTokenizers / "smollm2_style"), "naïve café — 東京 🙂 end\nnext");
  check_stream(Tokenizer::from_dir(kTokenizers / "llama3_style"), "Ünïcödé ✓✓ 🙂🙂 ok");
}

TEST_CASE("complete_prefix holds back U+FFFD and incomplete sequences") {
  CHECK(TextStream::complete_prefix("ab") == 2);
  CHECK(TextStream::complete_prefix("ab\xEF\xBF\xBD") == 2);
  CHECK(TextStream::complete_prefix("ab\xEF\xBF\xBD\xEF\xBF\xBD") == 2);
  CHECK(TextStream::complete_prefix("ab\xE2\x9C") == 2);      // 2 of the 3 bytes of U+2713
  CHECK(TextStream::complete_prefix("ab\xE2\x9C\x93") == 5);  // complete
  CHECK(TextStream::complete_prefix("\xF0\x9F\x99") == 0);
  CHECK(TextStream::complete_prefix("") == 0);
}
