#pragma once
// Decoders: ByteLevel, Metaspace, Sequence of Replace / ByteFallback / Fuse / Strip, as
// tokenizers' decode_chain: each step maps the list of token strings to a new list.
#include <memory>
#include <string>
#include <vector>

#include "lvt/text/byte_level.hpp"
#include "lvt/text/json_path.hpp"
#include "lvt/text/pattern.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

class Decoder {
 public:
  Decoder() = default;
  explicit Decoder(const JsonAt& j) { parse(j); }
  bool empty() const { return steps_.empty(); }

  std::string operator()(std::vector<std::string> tokens) const {
    for (auto& s : steps_) s.apply(tokens);
    std::string out;
    for (auto& t : tokens) out += t;
    return out;
  }

 private:
  struct Step {
    enum Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip } kind;
    std::shared_ptr<Pattern> pattern;
    std::string content, replacement;
    size_t start = 0, stop = 0;
    bool strip_first = true;

    void apply(std::vector<std::string>& toks) const {
      switch (kind) {
        case ByteLevel: {
          auto& map = ByteLevelMap::get();
          std::string bytes;
          for (auto& t : toks) {
            std::string mine;
            bool ok = true;
            for (size_t i = 0; i < t.size() && ok;) {
              char32_t c = utf8_next(t, i);
              int b = c < 512 ? map.cp_to_byte[c] : -1;
              if (b < 0) ok = false;
              else mine += static_cast<char>(b);
            }
            bytes += ok ? mine : t;
          }
          toks.assign(1, utf8_lossy(bytes));
          return;
        }
        case Metaspace:
          for (size_t i = 0; i < toks.size(); ++i) {
            std::string o;
            for (size_t p = 0; p < toks[i].size();) {
              if (toks[i].compare(p, replacement.size(), replacement) == 0) {
                o += ' ';
                p += replacement.size();
              } else {
                o += toks[i][p++];
              }
            }
            if (i == 0 && strip_first && !o.empty() && o[0] == ' ') o.erase(0, 1);
            toks[i] = std::move(o);
          }
          return;
        case Replace:
          for (auto& t : toks) {
            std::string o;
            size_t prev = 0;
            for (auto [b, e] : pattern->find_all(t)) {
              o.append(t, prev, b - prev);
              o += content;
              prev = e;
            }
            o.append(t, prev, std::string::npos);
            t = std::move(o);
          }
          return;
        case ByteFallback: {
          std::vector<std::string> out;
          std::string bytes;
          size_t nbytes = 0;
          auto flush = [&] {
            if (!nbytes) return;
            if (utf8_first_invalid(bytes) == std::string::npos) out.push_back(bytes);
            else
              for (size_t k = 0; k < nbytes; ++k) out.push_back("\xEF\xBF\xBD");
            bytes.clear();
            nbytes = 0;
          };
          for (auto& t : toks) {
            int v = -1;
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
              auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
              int hi = hex(t[3]), lo = hex(t[4]);
              if (hi >= 0 && lo >= 0) v = hi * 16 + lo;
            }
            if (v >= 0) {
              bytes += static_cast<char>(v);
              ++nbytes;
            } else {
              flush();
              out.push_back(t);
            }
          }
          flush();
          toks = std::move(out);
          return;
        }
        case Fuse: {
          std::string all;
          for (auto& t : toks) all += t;
          toks.assign(1, std::move(all));
          return;
        }
        case Strip:
          for (auto& t : toks) {
            // Strips up to `start` leading and `stop` trailing characters equal to content.
            size_t b = 0, e = t.size();
            for (size_t k = 0; k < start && t.compare(b, content.size(), content) == 0 && b < e; ++k) b += content.size();
            for (size_t k = 0; k < stop && e >= b + content.size() && t.compare(e - content.size(), content.size(), content) == 0; ++k)
              e -= content.size();
            t = t.substr(b, e - b);
          }
          return;
      }
    }
  };

  void parse(const JsonAt& j) {
    std::string t = j.type();
    Step s{};
    if (t == "Sequence") {
      auto list = j["decoders"];
      for (size_t i = 0; i < list.size(); ++i) parse(list[i]);
      return;
    } else if (t == "ByteLevel") {
      s.kind = Step::ByteLevel;
    } else if (t == "Metaspace") {
      s.kind = Step::Metaspace;
      s.replacement = j["replacement"].str();
      if (s.replacement.empty()) j["replacement"].fail("expected one character");
      std::string scheme = j.str_or("prepend_scheme", j.bool_or("add_prefix_space", true) ? "always" : "never");
      s.strip_first = scheme != "never";
    } else if (t == "Replace") {
      s.kind = Step::Replace;
      s.pattern = std::make_shared<Pattern>(j["pattern"]);
      s.content = j["content"].str();
    } else if (t == "ByteFallback") {
      s.kind = Step::ByteFallback;
    } else if (t == "Fuse") {
      s.kind = Step::Fuse;
    } else if (t == "Strip") {
      s.kind = Step::Strip;
      s.content = j["content"].str();
      if (s.content.empty()) j["content"].fail("expected one character");
      s.start = static_cast<size_t>(j["start"].integer());
      s.stop = static_cast<size_t>(j["stop"].integer());
    } else {
      j["type"].fail("unknown decoder \"" + t + "\"");
    }
    steps_.push_back(std::move(s));
  }

  std::vector<Step> steps_;
};

}  // namespace lvt::text
