#pragma once
// A Hugging Face tokenizer.json (+ tokenizer_config.json) that encodes and decodes as the Rust
// `tokenizers` library does, with transformers' add_bos_token / add_eos_token on top. The
// tokenizer of a GGUF file's metadata is built into the same types by text/gguf_tokenizer.hpp
// (tokenizer_from_gguf, load_tokenizer), kept out of this header for its users' compile time.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/text/added_vocabulary.hpp"
#include "lvt/text/bpe.hpp"
#include "lvt/text/decoder.hpp"
#include "lvt/text/json_path.hpp"
#include "lvt/text/normalizer.hpp"
#include "lvt/text/post_processor.hpp"
#include "lvt/text/pre_tokenizer.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

class Tokenizer {
 public:
  // tokenizer.json and, when present, tokenizer_config.json in dir.
  static Tokenizer from_dir(const std::filesystem::path& dir) {
    auto config = dir / "tokenizer_config.json";
    return from_files(dir / "tokenizer.json", std::filesystem::exists(config) ? config : std::filesystem::path());
  }

  // config may be empty: then tokenizer.json's post-processor alone decides the special tokens.
  static Tokenizer from_files(const std::filesystem::path& json, const std::filesystem::path& config = {}) {
    std::string name = json.filename().string();
    Tokenizer t(read_json(json, name), name);
    if (!config.empty()) t.apply_config(read_json(config, config.filename().string()), config.filename().string());
    return t;
  }

  // From a tokenizer.json object built in memory (text/gguf_tokenizer.hpp builds one from a GGUF
  // file's metadata); bos / eos name tokens as tokenizer_config.json's bos_token would.
  static Tokenizer from_json_object(const Json& root, const std::string& name,
                                    const std::optional<std::string>& bos_token = {},
                                    const std::optional<std::string>& eos_token = {}) {
    Tokenizer t(root, name);
    if (bos_token) t.bos_id_ = t.token_to_id(*bos_token);
    if (eos_token) t.eos_id_ = t.token_to_id(*eos_token);
    return t;
  }

  // From tokenizer.json text; `name` is used in error messages.
  static Tokenizer from_json(std::string_view text, const std::string& name = "tokenizer.json") {
    return Tokenizer(parse_json(text, name), name);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
    if (auto bad = utf8_first_invalid(text); bad != std::string_view::npos)
      throw Error("Tokenizer::encode: input is not valid UTF-8 (byte " + std::to_string(bad) + ")");
    std::vector<int32_t> ids;
    std::vector<Segment> raw, norm;
    std::vector<Piece> pieces;
    added_.split(text, false, true, raw);
    for (auto& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      std::string n = normalizer_ ? (*normalizer_)(std::move(seg.text)) : std::move(seg.text);
      norm.clear();
      added_.split(n, true, seg.at_start, norm);
      for (auto& s : norm) {
        if (s.id >= 0) {
          ids.push_back(s.id);
          continue;
        }
        pieces.clear();
        pieces.push_back({std::move(s.text), s.at_start});
        if (pre_tokenizer_) (*pre_tokenizer_)(pieces);
        for (auto& p : pieces) model_.encode_word(p.text, ids);
      }
    }
    return add_special_tokens ? post_processor_.apply(std::move(ids)) : ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (const AddedToken* a = added_.find_id(id)) {
        if (!(skip_special_tokens && a->special)) tokens.push_back(a->content);
        continue;
      }
      auto& table = model_.id_to_token();
      if (id < 0 || static_cast<size_t>(id) >= table.size() || (table[static_cast<size_t>(id)].empty() && !has_id(id)))
        throw Error("Tokenizer::decode: token id " + std::to_string(id) + " is out of range (vocab size " +
                    std::to_string(vocab_size()) + ")");
      tokens.push_back(table[static_cast<size_t>(id)]);
    }
    if (!decoder_.empty()) return decoder_(std::move(tokens));
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }

  std::optional<int32_t> token_to_id(std::string_view token) const {
    if (auto* a = added_.find_content(token)) return a->id;
    auto it = model_.vocab().find(std::string(token));
    if (it == model_.vocab().end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> id_to_token(int32_t id) const {
    if (auto* a = added_.find_id(id)) return a->content;
    if (has_id(id)) return model_.id_to_token()[static_cast<size_t>(id)];
    return std::nullopt;
  }
  // Highest id + 1 over the model vocab and the added tokens.
  size_t vocab_size() const {
    size_t n = model_.id_to_token().size();
    for (auto& a : added_.tokens()) n = std::max(n, static_cast<size_t>(a.id) + 1);
    return n;
  }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  const std::vector<AddedToken>& added_tokens() const { return added_.tokens(); }
  std::vector<std::string> special_tokens() const {
    std::vector<std::string> out;
    for (auto& a : added_.tokens())
      if (a.special) out.push_back(a.content);
    return out;
  }

 private:
  Tokenizer(const Json& root, const std::string& name) : file_(name), model_(JsonAt{root, "", file_}["model"]) {
    JsonAt j{root, "", file_};
    if (!root.is_object()) j.fail("expected a tokenizer.json object");
    if (j.has("normalizer")) normalizer_.emplace(j["normalizer"]);
    if (j.has("pre_tokenizer")) pre_tokenizer_.emplace(j["pre_tokenizer"]);
    if (j.has("post_processor")) post_processor_ = PostProcessor(j["post_processor"]);
    if (j.has("decoder")) decoder_ = Decoder(j["decoder"]);
    if (j.has("added_tokens")) {
      auto list = j["added_tokens"];
      for (size_t i = 0; i < list.size(); ++i) {
        auto a = list[i];
        AddedToken t;
        t.id = static_cast<int32_t>(a["id"].integer());
        if (t.id < 0 || a["id"].integer() >= (1 << 22)) a["id"].fail("id out of range");
        t.content = a["content"].str();
        if (t.content.empty()) a["content"].fail("empty added token");
        t.special = a.bool_or("special", false);
        t.lstrip = a.bool_or("lstrip", false);
        t.rstrip = a.bool_or("rstrip", false);
        t.single_word = a.bool_or("single_word", false);
        t.normalized = a.bool_or("normalized", !t.special);
        added_.add(std::move(t));
      }
    }
  }

  bool has_id(int32_t id) const {
    auto& table = model_.id_to_token();
    if (id < 0 || static_cast<size_t>(id) >= table.size()) return false;
    auto it = model_.vocab().find(table[static_cast<size_t>(id)]);
    return it != model_.vocab().end() && it->second == id;
  }

  void apply_config(const Json& root, const std::string& name) {
    JsonAt c{root, "", name};
    if (!root.is_object()) c.fail("expected an object");
    auto token_of = [&](const char* key) -> std::optional<int32_t> {
      if (!c.has(key)) return std::nullopt;
      auto v = c[key];
      std::string s = v.value.is_object() ? v["content"].str() : v.str();
      auto id = token_to_id(s);
      if (!id) v.fail("\"" + s + "\" is not a token of tokenizer.json");
      return id;
    };
    // transformers 5's LlamaTokenizer keeps the vocab and merges but rebuilds the pipeline
    // (models/llama/tokenization_llama.py): no normalizer, Metaspace with split false, "always"
    // for legacy configs and "first" otherwise, "never" without add_prefix_space.
    std::string cls = c.str_or("tokenizer_class", "");
    if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast") {
      bool prefix = c.bool_or("add_prefix_space", true), legacy = c.bool_or("legacy", false);
      std::string scheme = !prefix ? "never" : legacy ? "always" : "first";
      Json meta = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", scheme}, {"split", false}};
      Json dec = {{"type", "Sequence"}, {"decoders", Json::array({
          {{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}};
      if (prefix) dec["decoders"].push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
      normalizer_.reset();
      pre_tokenizer_.emplace(JsonAt{meta, "(LlamaTokenizer)", name});
      decoder_ = Decoder(JsonAt{dec, "(LlamaTokenizer)", name});
    }
    bos_id_ = token_of("bos_token");
    eos_id_ = token_of("eos_token");
    // add_bos_token / add_eos_token are not applied: transformers 5.23 drops them whenever a
    // tokenizer.json exists (tokenization_utils_base.py, _from_pretrained), and tokenizer.json's
    // post-processor decides; without one it builds "$A" alone, which is what an empty one does.
  }

  static Json parse_json(std::string_view text, const std::string& name) {
    try {
      return Json::parse(text.begin(), text.end());
    } catch (const Json::exception& e) {
      throw Error(name + ": not valid JSON (truncated or corrupt): " + e.what());
    }
  }
  static Json read_json(const std::filesystem::path& path, const std::string& name) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path.string() + ": cannot open");
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_json(ss.str(), name);
  }

  std::string file_;
  Bpe model_;
  std::optional<Normalizer> normalizer_;
  std::optional<PreTokenizer> pre_tokenizer_;
  PostProcessor post_processor_;
  Decoder decoder_;
  AddedVocabulary added_;
  std::optional<int32_t> bos_id_, eos_id_;
};

}  // namespace lvt::text
