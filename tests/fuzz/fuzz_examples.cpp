// libFuzzer target: arbitrary bytes as one line of a training JSONL file (text/examples.hpp):
// parse_example, then the encoder with a real tokenizer and chat template, then packing. Only
// lvt::Error may come out; a mask that comes back is as long as its ids.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lvt/io/examples.hpp"
#include "lvt/text/training_data.hpp"

namespace {

struct Fixture {
  lvt::text::Tokenizer tok = lvt::text::Tokenizer::from_dir(LVT_SOURCE_ROOT "/tests/text/tokenizers/smollm2_style");
  std::unique_ptr<lvt::text::ChatTemplate> chat;
  Fixture() {
    lvt::text::DataOptions o;
    o.chat_template = LVT_SOURCE_ROOT "/tests/text/templates/smollm2.jinja";
    chat = lvt::text::load_chat_template(LVT_SOURCE_ROOT "/tests/text/tokenizers/smollm2_style", o);
    lvt::text::jinja::Limits lim;
    lim.max_output_bytes = 1 << 16;
    chat->set_limits(lim);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixture f;
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  try {
    const lvt::text::Example e = lvt::text::parse_example(line, "fuzz:1");
    for (bool all : {false, true}) {
      const lvt::text::ExampleEncoder enc(f.tok, f.chat.get(), all);
      const lvt::text::EncodedExample x = enc.encode(e, "fuzz:1");
      if (x.ids.size() != x.mask.size()) std::abort();
      lvt::io::ExampleSet s;
      s.add(x.ids, x.mask, 1);
      const lvt::io::PackedExamples p(std::move(s), 16, true);
      std::int32_t tok[16], tgt[16], pos[16];
      for (std::uint64_t r = 0; r < p.rows(); ++r) p.fill_row(r, tok, tgt, pos);
    }
  } catch (const lvt::Error&) {
  }
  return 0;
}
