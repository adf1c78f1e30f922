#pragma once
// tokenizer.json normalizers: Sequence, NFC, NFKC, Prepend, Replace.
#include <memory>
#include <string>
#include <vector>

#include "lvt/text/json_path.hpp"
#include "lvt/text/pattern.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

class Normalizer {
 public:
  explicit Normalizer(const JsonAt& j) {
    std::string t = j.type();
    if (t == "Sequence") {
      auto list = j["normalizers"];
      for (size_t i = 0; i < list.size(); ++i) steps_.push_back(Step::parse(list[i]));
    } else {
      steps_.push_back(Step::parse(j));
    }
  }
  std::string operator()(std::string s) const {
    for (auto& st : steps_) s = st.apply(std::move(s));
    return s;
  }

 private:
  struct Step {
    enum Kind { NFC, NFKC, Prepend, Replace } kind;
    std::string text;  // Prepend's prefix or Replace's content
    std::shared_ptr<Pattern> pattern;

    static Step parse(const JsonAt& j) {
      std::string t = j.type();
      if (t == "NFC") return {NFC, {}, nullptr};
      if (t == "NFKC") return {NFKC, {}, nullptr};
      if (t == "Prepend") return {Prepend, j["prepend"].str(), nullptr};
      if (t == "Replace") return {Replace, j["content"].str(), std::make_shared<Pattern>(j["pattern"])};
      j["type"].fail("unknown normalizer \"" + t + "\"");
    }
    std::string apply(std::string s) const {
      switch (kind) {
        case NFC: return normalize_unicode(s, NormalForm::NFC);
        case NFKC: return normalize_unicode(s, NormalForm::NFKC);
        case Prepend: return s.empty() ? s : text + s;
        case Replace: {
          std::string out;
          size_t prev = 0;
          for (auto [b, e] : pattern->find_all(s)) {
            out.append(s, prev, b - prev);
            out += text;
            prev = e;
          }
          out.append(s, prev, std::string::npos);
          return out;
        }
      }
      return s;
    }
  };
  std::vector<Step> steps_;
};

}  // namespace lvt::text
