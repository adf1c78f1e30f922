// libFuzzer target: the safetensors parser on arbitrary bytes. It must either accept the file
// or throw lvt::Error; no crash, no read outside the buffer (ASan), no UB (UBSan). Accepted
// files get every tensor span read and converted, so a span check that let one through would
// be an ASan report here. Built and run by tools/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lvt/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // An exact-size heap copy, so ASan sees one byte past the end as out of bounds.
  std::vector<std::byte> buf(size);
  if (size) std::memcpy(buf.data(), data, size);
  try {
    const lvt::io::SafetensorsHeader h = lvt::io::parse_safetensors(buf, "fuzz.safetensors");
    std::uint64_t sum = 0;
    std::vector<float> tmp;
    for (const auto& t : h.tensors) {
      const std::byte* p = buf.data() + h.data_offset + t.begin;
      for (std::uint64_t i = 0; i < t.nbytes(); ++i) sum += std::to_integer<unsigned>(p[i]);
      const bool fl = t.dtype == lvt::io::StDtype::F32 || t.dtype == lvt::io::StDtype::F16 ||
                      t.dtype == lvt::io::StDtype::BF16 || t.dtype == lvt::io::StDtype::F64;
      if (fl && t.numel() <= (1 << 20)) {
        tmp.resize(std::size_t(t.numel()));
        lvt::io::convert_to_float(t.dtype, p, tmp.size(), tmp.data(), t.name);
      }
    }
    volatile std::uint64_t sink = sum;
    (void)sink;
  } catch (const lvt::Error&) {
  }
  return 0;
}
