#pragma once
// The {"String": ...} / {"Regex": ...} pattern of Split, Replace: literal or Oniguruma matches.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lvt/text/json_path.hpp"
#include "lvt/text/regex.hpp"

namespace lvt::text {

class Pattern {
 public:
  explicit Pattern(const JsonAt& j) {
    if (j.has("String")) {
      literal_ = j["String"].str();
    } else if (j.has("Regex")) {
      try {
        regex_ = std::make_shared<Regex>(j["Regex"].str());
      } catch (const Error& e) {
        j["Regex"].fail(e.what());
      }
    } else {
      j.fail("expected {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    if (regex_) return regex_->find_all(s);
    std::vector<std::pair<size_t, size_t>> out;
    if (literal_.empty()) return out;
    for (size_t p = s.find(literal_); p != std::string_view::npos; p = s.find(literal_, p + literal_.size()))
      out.emplace_back(p, p + literal_.size());
    return out;
  }

 private:
  std::string literal_;
  std::shared_ptr<Regex> regex_;
};

}  // namespace lvt::text
