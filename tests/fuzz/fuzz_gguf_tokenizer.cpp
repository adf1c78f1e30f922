// libFuzzer target: arbitrary bytes as a GGUF file whose tokenizer metadata lvt builds a
// tokenizer and chat template from (text/gguf_tokenizer.hpp). Only lvt::Error may come out; a
// tokenizer that builds encodes fixed strings and decodes every id it gave. Built and run by
// tools/fuzz.sh (seeds: tests/fuzz/corpus/gguf_tokenizer, written by
// tools/peers/make_gguf_tokenizer_goldens.py).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lvt/text/gguf_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> buf(size);  // an exact-size heap copy: ASan sees reads past the end
  if (size) std::memcpy(buf.data(), data, size);
  try {
    const lvt::io::GgufHeader h = lvt::io::parse_gguf(buf, "fuzz.gguf");
    try {
      const auto info = lvt::text::gguf_chat_info(h, "fuzz.gguf");
      if (info.chat_template) (void)lvt::text::chat_template_from_gguf(h, "fuzz.gguf");
    } catch (const lvt::Error&) {
    }
    const lvt::text::Tokenizer t = lvt::text::tokenizer_from_gguf(h, "fuzz.gguf");
    for (const char* s : {"Hello, world! 123 <s> caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  \n", "  42\t<|im_start|>x", ""}) {
      const auto ids = t.encode(s, true);
      (void)t.decode(ids, false);
      (void)t.decode(ids, true);
    }
  } catch (const lvt::Error&) {
  }
  return 0;
}
