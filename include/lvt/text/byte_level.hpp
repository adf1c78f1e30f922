#pragma once
// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes
// map to U+0100 upwards in byte order.
#include <array>
#include <string>
#include <string_view>

#include "lvt/text/unicode.hpp"

namespace lvt::text {

struct ByteLevelMap {
  std::array<std::string, 256> byte_to_utf8;  // the mapped character, UTF-8 encoded
  std::array<int, 512> cp_to_byte;            // code point -> byte, -1 when not a mapped char
  std::array<std::array<char, 2>, 256> utf8;  // the same as byte_to_utf8, inline (1 or 2 bytes)
  std::array<unsigned char, 256> utf8_len;

  // Appends the mapped characters of the bytes of s.
  void append(std::string& out, std::string_view s) const {
    size_t n = out.size();
    out.resize(n + 2 * s.size());
    char* d = out.data() + n;
    for (unsigned char c : s) {
      d[0] = utf8[c][0];
      d[1] = utf8[c][1];
      d += utf8_len[c];
    }
    out.resize(static_cast<size_t>(d - out.data()));
  }

  ByteLevelMap() {
    cp_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      int cp = printable ? b : next++;
      byte_to_utf8[b].clear();
      utf8_append(byte_to_utf8[b], static_cast<char32_t>(cp));
      cp_to_byte[cp] = b;
      utf8_len[b] = static_cast<unsigned char>(byte_to_utf8[b].size());
      utf8[b] = {byte_to_utf8[b][0], utf8_len[b] > 1 ? byte_to_utf8[b][1] : '\0'};
    }
  }
  static const ByteLevelMap& get() {
    static const ByteLevelMap map;
    return map;
  }
};

}  // namespace lvt::text
