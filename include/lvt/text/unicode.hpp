#pragma once
// UTF-8 helpers for the tokenizer: validation, code point walking, NFC/NFKC via utf8proc, Unicode
// categories via utf8proc (no hand-written tables), and Rust's from_utf8_lossy replacement rule.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utf8proc.h>

#include "lvt/error.hpp"

namespace lvt::text {

// Length in bytes of the UTF-8 sequence starting at s[i] when it is valid, 0 when it is not.
inline size_t utf8_valid_len(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n = s.size() - i;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return (n >= 2 && (b(i + 1) & 0xC0) == 0x80) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 2) return 0;
    unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    if (b(i + 1) < lo || b(i + 1) > hi) return 0;
    return (n >= 3 && (b(i + 2) & 0xC0) == 0x80) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 2) return 0;
    unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (b(i + 1) < lo || b(i + 1) > hi) return 0;
    if (n < 3 || (b(i + 2) & 0xC0) != 0x80) return 0;
    return (n >= 4 && (b(i + 3) & 0xC0) == 0x80) ? 4 : 0;
  }
  return 0;
}

// Byte offset of the first invalid sequence, or npos when s is valid UTF-8.
inline size_t utf8_first_invalid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_valid_len(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

// Like Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
inline std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_valid_len(s, i);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    // The maximal subpart: the longest prefix of a valid sequence, at least one byte.
    size_t k = 1;
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t want = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
    while (k < want && i + k < s.size()) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      unsigned char lo = 0x80, hi = 0xBF;
      if (k == 1) {
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      }
      if (d < lo || d > hi) break;
      ++k;
    }
    out += "\xEF\xBF\xBD";
    i += k;
  }
  return out;
}

// Decodes the code point at s[i] (s must be valid) and advances i.
inline char32_t utf8_next(std::string_view s, size_t& i) {
  utf8proc_int32_t cp = 0;
  auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                            static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  i += n > 0 ? static_cast<size_t>(n) : 1;
  return static_cast<char32_t>(cp < 0 ? 0xFFFD : cp);
}

inline void utf8_append(std::string& out, char32_t cp) {
  utf8proc_uint8_t buf[4];
  auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

enum class NormalForm { NFC, NFKC };

// NFC / NFKC through utf8proc, run by run: ASCII characters are unchanged by both forms, are
// starters (combining class 0) and are never the second character of a canonical composition, so
// the text may be cut before any ASCII character. Only each non-ASCII run, with the one ASCII
// character before it (a following mark may compose with it), goes through utf8proc; ASCII text
// is copied. Same result as normalizing the whole string (checked in tests/text).
inline void normalize_unicode_append(std::string& out, std::string_view s, NormalForm form) {
  if (s.empty()) return;
  utf8proc_uint8_t* dst = nullptr;
  int options = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (form == NormalForm::NFKC ? UTF8PROC_COMPAT : 0);
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                        static_cast<utf8proc_ssize_t>(s.size()), &dst,
                        static_cast<utf8proc_option_t>(options));
  if (n < 0) throw Error(std::string("unicode normalization failed: ") + utf8proc_errmsg(n));
  out.append(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
  std::free(dst);
}

inline std::string normalize_unicode(std::string_view s, NormalForm form) {
  std::string out;
  out.reserve(s.size());
  auto ascii = [&](size_t k) { return static_cast<unsigned char>(s[k]) < 0x80; };
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && ascii(j)) ++j;
    if (j == s.size()) {
      out.append(s.substr(i));
      break;
    }
    size_t from = j > i ? j - 1 : j;  // the ASCII character before the run goes with it
    out.append(s.substr(i, from - i));
    size_t k = j;
    while (k < s.size() && !ascii(k)) ++k;
    normalize_unicode_append(out, s.substr(from, k - from), form);
    i = k;
  }
  return out;
}

// Rust's char::is_whitespace (the White_Space property).
inline bool is_whitespace(char32_t c) {
  if ((c >= 9 && c <= 13) || c == 0x85) return true;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// Rust's char::is_numeric: general categories Nd, Nl, No.
inline bool is_numeric(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

inline bool is_alphanumeric(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) || is_numeric(c);
}

}  // namespace lvt::text
