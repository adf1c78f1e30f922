#pragma once
// Test helper: a tokenizer folder as the tokenizer.* metadata llama.cpp's convert_hf_to_gguf.py
// writes for it (the library's text/gguf_tokenizer_write.hpp, which the GGUF writer uses too),
// so tests make their GGUF files without Python; and crc32s of metadata values for the goldens
// (which hold a crc32 of every tokenizer.* value the Python side wrote).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/io/gguf.hpp"
#include "lvt/text/gguf_tokenizer_write.hpp"

namespace lvt::testing {

using GgufFolderOptions = text::GgufFolderOptions;

inline std::string read_text_file(const std::filesystem::path& p) { return text::detail_ggtw::read_text(p); }

inline std::vector<std::pair<std::string, io::GgufValue>> gguf_tokenizer_from_folder(
    const std::filesystem::path& dir, const GgufFolderOptions& o) {
  return text::gguf_tokenizer_metadata(dir, o);
}

// crc32 (zlib's) of bytes.
inline std::uint32_t crc32_of(std::string_view s) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// crc32 of a metadata value as the file encodes it: u32 value type, then the value.
inline std::uint32_t gguf_value_crc(const io::GgufValue& v) {
  std::vector<std::byte> b;
  io::detail_gguf::put(b, std::uint32_t(v.type), 4);
  io::detail_gguf::put_value(b, v);
  return crc32_of(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

}  // namespace lvt::testing
