#pragma once
// Oniguruma regexes compiled as tokenizers' onig feature does (Ruby syntax, UTF-8, no options),
// with find_iter's handling of empty matches.
#include <memory>
#include <mutex>
#include <oniguruma.h>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lvt/error.hpp"

namespace lvt::text {

class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    static std::once_flag once;
    std::call_once(once, [] {
      OnigEncoding enc = ONIG_ENCODING_UTF8;
      onig_initialize(&enc, 1);
    });
    OnigErrorInfo info;
    regex_t* re = nullptr;
    auto p = reinterpret_cast<const OnigUChar*>(pattern.data());
    int r = onig_new(&re, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_RUBY, &info);
    if (r != ONIG_NORMAL) {
      OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(msg, r, &info);
      throw Error("bad regex \"" + pattern + "\": " + reinterpret_cast<char*>(msg));
    }
    re_.reset(re);
  }

  // Every non-overlapping match as [begin, end) byte offsets, like the onig crate's find_iter.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    auto start = reinterpret_cast<const OnigUChar*>(s.data());
    auto end = start + s.size();
    size_t pos = 0;
    size_t last_end = std::string_view::npos;
    // A region per call, not per regex: a compiled regex_t is read-only while searching, so
    // threads encoding at once share it without a lock.
    OnigRegion region;
    onig_region_init(&region);
    struct FreeRegion {
      OnigRegion* r;
      ~FreeRegion() { onig_region_free(r, 0); }
    } free_region{&region};
    while (pos <= s.size()) {
      int r = onig_search(re_.get(), start, end, start + pos, end, &region, ONIG_OPTION_NONE);
      if (r < 0) break;
      size_t b = static_cast<size_t>(region.beg[0]), e = static_cast<size_t>(region.end[0]);
      if (b == e) {
        // An empty match right after the previous match is skipped; step one character on.
        size_t step = 1;
        if (b < s.size()) {
          unsigned char c = static_cast<unsigned char>(s[b]);
          step = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        }
        if (last_end != b) out.emplace_back(b, e);
        last_end = e;
        pos = b + step;
        continue;
      }
      out.emplace_back(b, e);
      last_end = e;
      pos = e;
    }
    return out;
  }

 private:
  struct Free {
    void operator()(regex_t* r) const { onig_free(r); }
  };
  std::unique_ptr<regex_t, Free> re_;
};

}  // namespace lvt::text
