// libFuzzer target: the GGUF parser on arbitrary bytes. It must either accept the file or throw
// lvt::Error; no crash, no read outside the buffer (ASan), no UB (UBSan). Accepted files get
// every tensor's bytes read and, for the types lvt dequantizes, converted to fp32, so a bound
// check that let a tensor past the end through would be an ASan report here; the llama mapping
// runs on the accepted metadata too. Built and run by tools/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lvt/io/gguf.hpp"
#include "lvt/io/gguf_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // An exact-size heap copy, so ASan sees one byte past the end as out of bounds.
  std::vector<std::byte> buf(size);
  if (size) std::memcpy(buf.data(), data, size);
  try {
    const lvt::io::GgufHeader h = lvt::io::parse_gguf(buf, "fuzz.gguf");
    std::uint64_t sum = 0;
    std::vector<float> tmp;
    for (const auto& t : h.tensors) {
      const std::byte* p = buf.data() + h.data_offset + t.offset;
      for (std::uint64_t i = 0; i < t.nbytes; ++i) sum += std::to_integer<unsigned>(p[i]);
      if (lvt::io::ggml_type_info(t.type).dequantizable && t.numel() <= (1u << 20)) {
        tmp.resize(std::size_t(t.numel()));
        lvt::io::ggml_dequantize(t.type, p, tmp.size(), tmp.data(), t.name);
      }
    }
    try {
      const lvt::ModelConfig c = lvt::io::gguf_llama_config(h, "fuzz.gguf", buf);
      sum += std::uint64_t(c.layers);
    } catch (const lvt::Error&) {
    }
    volatile std::uint64_t sink = sum;
    (void)sink;
  } catch (const lvt::Error&) {
  }
  return 0;
}
