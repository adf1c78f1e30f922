#pragma once
// Post-processors: TemplateProcessing (single / pair, special_tokens), ByteLevel (offsets only,
// no change to ids) and Sequence; any other type is an error naming it.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "lvt/text/json_path.hpp"

namespace lvt::text {

class PostProcessor {
 public:
  PostProcessor() = default;
  explicit PostProcessor(const JsonAt& j) { parse(j); }

  std::vector<int32_t> apply(std::vector<int32_t> a) const {
    if (!templated_) return a;
    std::vector<int32_t> out;
    out.reserve(a.size() + 4);
    for (auto& piece : single_) {
      if (piece.sequence) out.insert(out.end(), a.begin(), a.end());
      else out.insert(out.end(), piece.ids.begin(), piece.ids.end());
    }
    return out;
  }

 private:
  struct TemplatePiece { bool sequence; std::vector<int32_t> ids; };

  void parse(const JsonAt& j) {
    std::string t = j.type();
    if (t == "ByteLevel") return;
    if (t == "Sequence") {
      auto list = j["processors"];
      for (size_t i = 0; i < list.size(); ++i) parse(list[i]);
      return;
    }
    if (t != "TemplateProcessing") j["type"].fail("unknown post-processor \"" + t + "\"");
    if (templated_) j.fail("more than one TemplateProcessing in a Sequence");
    templated_ = true;
    std::unordered_map<std::string, std::vector<int32_t>> specials;
    auto st = j["special_tokens"];
    if (!st.value.is_object()) st.fail("expected an object");
    for (auto it = st.value.begin(); it != st.value.end(); ++it) {
      JsonAt tok{*it, st.path + "/" + it.key(), j.file};
      auto ids = tok["ids"];
      std::vector<int32_t> v;
      for (size_t i = 0; i < ids.size(); ++i) v.push_back(static_cast<int32_t>(ids[i].integer()));
      specials[tok["id"].str()] = v;
    }
    auto single = j["single"];
    for (size_t i = 0; i < single.size(); ++i) {
      auto p = single[i];
      if (p.has("Sequence")) {
        std::string id = p["Sequence"]["id"].str();
        if (id != "A") p["Sequence"]["id"].fail("a single template takes sequence A");
        single_.push_back({true, {}});
      } else if (p.has("SpecialToken")) {
        std::string id = p["SpecialToken"]["id"].str();
        auto it = specials.find(id);
        if (it == specials.end()) p["SpecialToken"]["id"].fail("\"" + id + "\" is not in special_tokens");
        single_.push_back({false, it->second});
      } else {
        p.fail("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    (void)j["pair"];  // present in every export; pairs are not encoded by this API
  }

  bool templated_ = false;
  std::vector<TemplatePiece> single_;
};

}  // namespace lvt::text
