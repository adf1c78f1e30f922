#pragma once
// Test helper: a tokenizer folder (tokenizer.json + tokenizer_config.json) as the tokenizer.*
// metadata llama.cpp's convert_hf_to_gguf.py writes for it, so tests make their GGUF files
// without Python. The subset the test folders need, step for step as
// tools/peers/make_gguf_tokenizer_goldens.py does it with the converter's own functions:
//   byte-level (TextModel._set_vocab_gpt2): get_vocab_base's tokens and types, [PADn] up to
//     vocab_size, tokenizer.json's merges (gguf-py's SpecialVocab, load_merges=True);
//   SentencePiece (TextModel._set_vocab_sentencepiece): pieces in id order, <0xNN> BYTE, the unk
//     token UNKNOWN, special added tokens CONTROL (score 0), the k-th other piece NORMAL with
//     score -k (SentencePiece's BPE trainer), then tokenizer_config.json's added_tokens_decoder;
//   both: SpecialVocab's special token ids, add_bos/eos/sep from the TemplateProcessing
//     post-processor and the config, the chat template.
// The goldens hold a crc32 of every tokenizer.* value the Python side wrote; the text suite
// checks this helper writes the same values.
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

namespace lvt::testing {

struct GgufFolderOptions {
  std::string model = "gpt2";     // or "llama" (SentencePiece)
  std::string pre = "gpt-2";      // tokenizer.ggml.pre for gpt2 (llama writes "default")
  std::int64_t vocab_size = 0;    // config.json's vocab_size (0: the tokenizer's)
  std::map<std::string, std::int64_t> ids;  // SpecialVocab overrides: "eos" -> id, ...
  std::optional<std::string> chat_template;  // overrides the folder's
  std::vector<std::pair<std::string, io::GgufValue>> extra;  // appended (or replacing) keys
};

inline std::string read_text_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(p.string() + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<std::pair<std::string, io::GgufValue>> gguf_tokenizer_from_folder(
    const std::filesystem::path& dir, const GgufFolderOptions& o) {
  using io::GgufValue;
  using io::GgufValueType;
  using J = nlohmann::json;  // not ordered_json: its object lookup is linear (150k-token vocabularies)
  const J tj = J::parse(read_text_file(dir / "tokenizer.json"));
  const auto cfg_path = dir / "tokenizer_config.json";
  J cfg = std::filesystem::exists(cfg_path) ? J::parse(read_text_file(cfg_path)) : J::object();
  const J& model = tj["model"];
  const J added = tj.contains("added_tokens") ? tj["added_tokens"] : J::array();

  // id -> token over the model vocab and the added tokens (transformers' get_vocab)
  std::map<std::int64_t, std::string> by_id;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) by_id[it.value().get<std::int64_t>()] = it.key();
  std::map<std::string, const J*> added_by_content;
  for (const auto& a : added) {
    by_id[a["id"].get<std::int64_t>()] = a["content"].get<std::string>();
    added_by_content[a["content"].get<std::string>()] = &a;
  }
  const std::int64_t n = o.vocab_size ? o.vocab_size : by_id.rbegin()->first + 1;
  auto looks_special = [](const std::string& t) {
    auto starts = [&](const char* p) { return t.rfind(p, 0) == 0; };
    auto ends = [&](const std::string& p) { return t.size() >= p.size() && t.compare(t.size() - p.size(), p.size(), p) == 0; };
    return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || (starts("<|") && ends("|>")) ||
           (starts("<\xEF\xBD\x9C") && ends("\xEF\xBD\x9C>")) || (starts("<unused") && ends(">"));
  };
  auto respace = [](std::string t) {  // user-defined tokens: U+2581 -> ' '
    for (std::size_t p; (p = t.find("\xE2\x96\x81")) != std::string::npos;) t.replace(p, 3, " ");
    return t;
  };

  std::vector<GgufValue> tokens, types, scores;
  if (o.model == "gpt2") {
    for (std::int64_t i = 0; i < n; ++i) {
      auto it = by_id.find(i);
      if (it == by_id.end()) {
        tokens.push_back(GgufValue::str("[PAD" + std::to_string(i) + "]"));
        types.push_back(GgufValue::signed_of(GgufValueType::i32, 5));
        continue;
      }
      std::string t = it->second;
      int type = 1;
      if (auto a = added_by_content.find(t); a != added_by_content.end()) {
        if (a->second->value("special", false) || looks_special(t)) type = 3;
        else { t = respace(t); type = 4; }
      }
      tokens.push_back(GgufValue::str(t));
      types.push_back(GgufValue::signed_of(GgufValueType::i32, type));
    }
  } else {
    std::vector<std::string> t(static_cast<std::size_t>(n));
    std::vector<double> s(static_cast<std::size_t>(n), -10000.0);
    std::vector<int> ty(static_cast<std::size_t>(n), 5);
    for (std::int64_t i = 0; i < n; ++i) t[std::size_t(i)] = "[PAD" + std::to_string(i) + "]";
    std::map<std::int64_t, std::string> pieces;
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) pieces[it.value().get<std::int64_t>()] = it.key();
    const std::string unk = model.contains("unk_token") && model["unk_token"].is_string() ? model["unk_token"].get<std::string>() : "";
    std::int64_t k = 0;
    for (auto& [i, tok] : pieces) {
      int type = 1;
      double score = 0;
      const J* a = added_by_content.count(tok) ? added_by_content[tok] : nullptr;
      if (tok.size() == 6 && tok.rfind("<0x", 0) == 0 && tok[5] == '>') type = 6;
      else if (tok == unk) type = 2;
      else if (a && a->value("special", false)) type = 3;
      else score = -double(k++);
      t[std::size_t(i)] = tok;
      s[std::size_t(i)] = score;
      ty[std::size_t(i)] = type;
    }
    if (cfg.contains("added_tokens_decoder"))
      for (auto& [key, d] : cfg["added_tokens_decoder"].items()) {
        const std::int64_t id = std::stoll(key);
        if (id >= n) continue;
        std::string tok = d["content"].get<std::string>();
        if (d.value("special", false) || looks_special(tok)) ty[std::size_t(id)] = 3;
        else { tok = respace(tok); ty[std::size_t(id)] = 4; }
        s[std::size_t(id)] = -1000.0;
        t[std::size_t(id)] = tok;
      }
    for (std::int64_t i = 0; i < n; ++i) {
      tokens.push_back(GgufValue::str(t[std::size_t(i)]));
      scores.push_back(GgufValue::f32(float(s[std::size_t(i)])));
      types.push_back(GgufValue::signed_of(GgufValueType::i32, ty[std::size_t(i)]));
    }
  }

  std::vector<std::pair<std::string, GgufValue>> kv;
  kv.emplace_back("tokenizer.ggml.model", GgufValue::str(o.model));
  kv.emplace_back("tokenizer.ggml.pre", GgufValue::str(o.model == "gpt2" ? o.pre : "default"));
  kv.emplace_back("tokenizer.ggml.tokens", GgufValue::array_of(GgufValueType::string, std::move(tokens)));
  if (o.model != "gpt2") kv.emplace_back("tokenizer.ggml.scores", GgufValue::array_of(GgufValueType::f32, std::move(scores)));
  kv.emplace_back("tokenizer.ggml.token_type", GgufValue::array_of(GgufValueType::i32, std::move(types)));
  if (o.model == "gpt2") {
    std::vector<GgufValue> merges;
    for (const auto& m : model["merges"]) {
      if (m.is_string()) {
        merges.push_back(GgufValue::str(m.get<std::string>()));
        continue;
      }
      std::string s;
      for (int p = 0; p < 2; ++p) {  // SpecialVocab: a space inside a part becomes U+0120
        if (p) s += ' ';
        for (char c : m[std::size_t(p)].get<std::string>()) s += c == ' ' ? std::string("\xC4\xA0") : std::string(1, c);
      }
      merges.push_back(GgufValue::str(s));
    }
    kv.emplace_back("tokenizer.ggml.merges", GgufValue::array_of(GgufValueType::string, std::move(merges)));
  }

  // SpecialVocab._try_load_from_tokenizer_json: the post-processor, then the config.
  auto cfg_token = [&](const std::string& typ) -> std::optional<std::string> {
    if (!cfg.contains(typ + "_token")) return std::nullopt;
    const J& e = cfg[typ + "_token"];
    if (e.is_string()) return e.get<std::string>();
    if (e.is_object() && e.contains("content") && e["content"].is_string()) return e["content"].get<std::string>();
    return std::nullopt;
  };
  std::vector<std::pair<std::string, bool>> add_special;  // insertion order, as the dict
  auto set_add = [&](const std::string& typ, bool v) {
    for (auto& [t, x] : add_special)
      if (t == typ) { x = v; return; }
    add_special.emplace_back(typ, v);
  };
  const auto special_bos = cfg_token("bos"), special_eos = cfg_token("eos"), special_sep = cfg_token("sep"),
             special_cls = cfg_token("cls");
  if (tj.contains("post_processor") && tj["post_processor"].is_object()) {
    const J& pp = tj["post_processor"];
    const J procs = pp.contains("processors") ? pp["processors"] : J::array({pp});
    auto special_id = [](const J& piece) -> std::optional<std::string> {
      if (piece.contains("SpecialToken")) return piece["SpecialToken"]["id"].get<std::string>();
      return std::nullopt;
    };
    auto seq_id = [](const J& piece) -> std::optional<std::string> {
      if (piece.contains("Sequence")) return piece["Sequence"]["id"].get<std::string>();
      return std::nullopt;
    };
    for (const J& p : procs) {
      if (p.value("type", "") != "TemplateProcessing") continue;
      const J single = p.value("single", J::array()), pair = p.value("pair", J::array());
      std::optional<std::string> first, last;
      if (single.size() > 1) {
        if ((first = special_id(single.front())))
          set_add("bos", first == special_bos || first == special_cls);
        if ((last = special_id(single.back()))) set_add("eos", last == special_eos);  // (our folders: eos matches)
      }
      if (!pair.empty()) {
        std::size_t start = first && special_id(pair.front()) == first ? 1 : 0;
        std::size_t stop = last && special_id(pair.back()) == last ? pair.size() - 1 : pair.size();
        if (start < stop) {
          J mid(J::array());
          for (std::size_t i = start; i < stop; ++i) mid.push_back(pair[i]);
          if (seq_id(mid.front()) == "A" && seq_id(mid.back()) == "B" && mid.size() > 2) {
            bool add_sep = false;
            auto e1 = special_id(mid[1]);
            if (e1 && (e1 == special_sep || e1 == special_eos) && !last) add_sep = true;
            if (mid.size() == 4) {
              auto e2 = special_id(mid[2]);
              if (e2 && (e2 == special_sep || e2 == special_eos)) add_sep = true;
            }
            set_add("sep", add_sep);
          }
        }
      }
    }
  }
  std::vector<std::pair<std::string, std::int64_t>> special_ids;
  for (const char* typ : {"bos", "eos", "unk", "sep", "pad", "cls", "mask"}) {
    if (cfg.contains(std::string("add_") + typ + "_token") && cfg[std::string("add_") + typ + "_token"].is_boolean())
      set_add(typ, cfg[std::string("add_") + typ + "_token"].get<bool>());
    auto content = cfg_token(typ);
    if (!content) continue;
    for (const auto& a : added)
      if (a["content"] == *content) {
        if (a["id"].get<std::int64_t>() < std::int64_t(kv[2].second.array.size())) special_ids.emplace_back(typ, a["id"].get<std::int64_t>());
        break;
      }
  }
  for (auto& [typ, id] : o.ids) {
    bool found = false;
    for (auto& [t, x] : special_ids)
      if (t == typ) { x = id; found = true; }
    if (!found) special_ids.emplace_back(typ, id);
  }
  const std::map<std::string, std::string> id_key = {
      {"bos", "tokenizer.ggml.bos_token_id"}, {"eos", "tokenizer.ggml.eos_token_id"},
      {"unk", "tokenizer.ggml.unknown_token_id"}, {"sep", "tokenizer.ggml.seperator_token_id"},
      {"pad", "tokenizer.ggml.padding_token_id"}, {"mask", "tokenizer.ggml.mask_token_id"}};
  for (auto& [typ, id] : special_ids)
    if (id_key.count(typ)) kv.emplace_back(id_key.at(typ), GgufValue::u32(std::uint32_t(id)));
  for (auto& [typ, v] : add_special)
    if (typ == "bos" || typ == "eos" || typ == "sep") kv.emplace_back("tokenizer.ggml.add_" + typ + "_token", GgufValue::boolean(v));
  std::optional<std::string> tmpl = o.chat_template;
  if (!tmpl && cfg.contains("chat_template") && cfg["chat_template"].is_string()) tmpl = cfg["chat_template"].get<std::string>();
  if (!tmpl && std::filesystem::exists(dir / "chat_template.jinja")) tmpl = read_text_file(dir / "chat_template.jinja");
  if (tmpl) kv.emplace_back("tokenizer.chat_template", GgufValue::str(*tmpl));
  for (auto& [key, v] : o.extra) {
    bool replaced = false;
    for (auto& [k2, v2] : kv)
      if (k2 == key) { v2 = v; replaced = true; }
    if (!replaced) kv.emplace_back(key, v);
  }
  return kv;
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
