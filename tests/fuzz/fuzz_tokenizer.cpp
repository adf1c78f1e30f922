// libFuzzer target: arbitrary bytes as tokenizer.json (only lvt::Error may come out), a fixed
// string through any tokenizer that loads, and the bytes as text through a valid tokenizer.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lvt/text/tokenizer.hpp"

namespace {

const lvt::text::Tokenizer& valid() {
  static const lvt::text::Tokenizer t =
      lvt::text::Tokenizer::from_files(LVT_SOURCE_ROOT "/tests/text/tokenizers/digits_nfkc/tokenizer.json");
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    auto t = lvt::text::Tokenizer::from_json(bytes);
    auto ids = t.encode("Hello, world! 123 <s> caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  \n", true);
    (void)t.decode(ids, false);
    (void)t.decode(ids, true);
  } catch (const lvt::Error&) {
  }
  try {
    auto ids = valid().encode(bytes, true);
    (void)valid().decode(ids, true);
  } catch (const lvt::Error&) {
  }
  return 0;
}
