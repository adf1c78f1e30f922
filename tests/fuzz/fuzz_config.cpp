// libFuzzer target: config.json and adapter_config.json parsing on arbitrary text. Either a
// ModelConfig / LoraConfig comes back or lvt::Error is thrown; nothing else. Built and run by
// tools/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "lvt/io/hf_config.hpp"
#include "lvt/io/peft.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const lvt::ModelConfig c = lvt::io::parse_hf_config(j, "fuzz/config.json");
    // An accepted config must be one validate() accepts, with non-negative sizes.
    if (lvt::validate(c) != nullptr || c.params() <= 0) __builtin_trap();
  } catch (const lvt::Error&) {
  }
  try {
    (void)lvt::io::parse_peft_adapter_config(j, "fuzz/adapter_config.json");
  } catch (const lvt::Error&) {
  }
  return 0;
}
