#pragma once
// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes
// map to U+0100 upwards in byte order.
#include <array>
#include <string>

#include "lvt/text/unicode.hpp"

namespace lvt::text {

struct ByteLevelMap {
  std::array<std::string, 256> byte_to_utf8;  // the mapped character, UTF-8 encoded
  std::array<int, 512> cp_to_byte;            // code point -> byte, -1 when not a mapped char

  ByteLevelMap() {
    cp_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      int cp = printable ? b : next++;
      byte_to_utf8[b].clear();
      utf8_append(byte_to_utf8[b], static_cast<char32_t>(cp));
      cp_to_byte[cp] = b;
    }
  }
  static const ByteLevelMap& get() {
    static const ByteLevelMap map;
    return map;
  }
};

}  // namespace lvt::text
