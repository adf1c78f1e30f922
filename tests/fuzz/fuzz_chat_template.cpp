// libFuzzer target: arbitrary bytes as a chat template, rendered with a fixed conversation and
// tight limits. Either a string comes back or lvt::Error is thrown; never a crash, a hang (steps,
// macro depth, output bytes and parser nesting are bounded) or a leak. Built and run by tools/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "lvt/text/chat_template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string source(reinterpret_cast<const char*>(data), size);
  static const lvt::text::OrderedJson messages = lvt::text::OrderedJson::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi \"there\" é 🙂\n{{ x }}"},
    {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, null, true]}}}]},
    {"role": "tool", "content": "{\"ok\": 1}"},
    {"role": "user", "content": [{"type": "text", "text": "parts"}, {"type": "image"}]}
  ])");
  static const lvt::text::OrderedJson extra = lvt::text::OrderedJson::parse(R"({
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "array"}}}}}],
    "enable_thinking": false
  })");
  try {
    lvt::text::ChatTemplate t(source, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
    lvt::text::jinja::Limits limits;
    limits.max_output_bytes = 1 << 20;
    limits.max_steps = 200'000;
    limits.max_call_depth = 20;
    limits.max_items = 1 << 16;
    t.set_limits(limits);
    t.set_clock([] { std::tm tm{}; tm.tm_year = 126; tm.tm_mday = 1; return tm; });
    const std::string out = t.render(messages, true, extra);
    if (out.size() > limits.max_output_bytes) __builtin_trap();
  } catch (const lvt::Error&) {
  }
  return 0;
}
