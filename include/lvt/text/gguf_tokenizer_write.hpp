#pragma once
// The tokenizer.* metadata llama.cpp's convert_hf_to_gguf.py writes for a Hugging Face tokenizer
// folder (tokenizer.json + tokenizer_config.json), for the GGUF writer (io/gguf_export.hpp,
// `lvt merge --gguf`, `lvt export-gguf`) and the tests, which make their GGUF files without
// Python. Step for step as tools/peers/make_gguf_tokenizer_goldens.py does it with the
// converter's own functions:
//   byte-level (TextModel._set_vocab_gpt2): get_vocab_base's tokens and types, [PADn] up to
//     vocab_size, tokenizer.json's merges (gguf-py's SpecialVocab, load_merges=True);
//   SentencePiece (TextModel._set_vocab_sentencepiece): pieces in id order, <0xNN> BYTE, the unk
//     token UNKNOWN, special added tokens CONTROL (score 0), the k-th other piece NORMAL with
//     score -k (SentencePiece's BPE trainer), then tokenizer_config.json's added_tokens_decoder;
//   both: SpecialVocab's special token ids, add_bos/eos/sep from the TemplateProcessing
//     post-processor and the config, the chat template.
// The text suite's goldens hold a crc32 of every tokenizer.* value the Python side wrote, and
// check this code writes the same values.
//
// tokenizer.ggml.pre: the converter names it by hashing the ids of a probe text;
// gguf_tokenizer_options(dir) names it from the pre-tokenizer instead, as the inverse of what
// text/gguf_tokenizer.hpp builds for each name (the Split regex, digits first, ignore_merges).
// gguf_tokenizer_metadata_checked then builds the reader's tokenizer from the metadata and
// requires the folder's ids on that probe text: a folder whose tokenizer the metadata cannot
// carry is an error naming what differs, never a silently different tokenizer.
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

#include "lvt/error.hpp"
#include "lvt/io/gguf.hpp"
#include "lvt/text/gguf_tokenizer.hpp"

namespace lvt::text {

namespace detail_ggtw {
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(p.string() + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace detail_ggtw

struct GgufFolderOptions {
  std::string model = "gpt2";     // or "llama" (SentencePiece)
  std::string pre = "gpt-2";      // tokenizer.ggml.pre for gpt2 (llama writes "default")
  std::int64_t vocab_size = 0;    // config.json's vocab_size (0: the tokenizer's)
  std::map<std::string, std::int64_t> ids;  // SpecialVocab overrides: "eos" -> id, ...
  std::optional<std::string> chat_template;  // overrides the folder's
  std::vector<std::pair<std::string, io::GgufValue>> extra;  // appended (or replacing) keys
};

inline std::vector<std::pair<std::string, io::GgufValue>> gguf_tokenizer_metadata(
    const std::filesystem::path& dir, const GgufFolderOptions& o) {
  using io::GgufValue;
  using io::GgufValueType;
  using J = nlohmann::json;  // not ordered_json: its object lookup is linear (150k-token vocabularies)
  const J tj = J::parse(detail_ggtw::read_text(dir / "tokenizer.json"));
  const auto cfg_path = dir / "tokenizer_config.json";
  J cfg = std::filesystem::exists(cfg_path) ? J::parse(detail_ggtw::read_text(cfg_path)) : J::object();
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
  if (!tmpl && std::filesystem::exists(dir / "chat_template.jinja")) tmpl = detail_ggtw::read_text(dir / "chat_template.jinja");
  if (tmpl) kv.emplace_back("tokenizer.chat_template", GgufValue::str(*tmpl));
  for (auto& [key, v] : o.extra) {
    bool replaced = false;
    for (auto& [k2, v2] : kv)
      if (k2 == key) { v2 = v; replaced = true; }
    if (!replaced) kv.emplace_back(key, v);
  }
  return kv;
}


// The tokenizer.ggml.model and tokenizer.ggml.pre a folder's tokenizer.json needs (vocab_size
// left 0: the caller sets config.json's). Errors name the file and the field.
inline GgufFolderOptions gguf_tokenizer_options(const std::filesystem::path& dir) {
  using J = nlohmann::json;
  const std::filesystem::path file = dir / "tokenizer.json";
  const std::string src = file.string();
  if (!std::filesystem::exists(file))
    throw Error(src + ": missing (lvt writes a GGUF tokenizer from a folder's tokenizer.json; "
                "tokenizer.model alone is not read)");
  const J tj = J::parse(detail_ggtw::read_text(file), nullptr, false);
  if (tj.is_discarded() || !tj.is_object()) throw Error(src + ": not a JSON object");
  const J model = tj.value("model", J::object());
  const std::string type = model.value("type", "");
  if (type != "BPE")
    throw Error(src + ": field 'model.type': '" + type + "' has no GGUF tokenizer lvt writes (BPE only: "
                "byte-level as 'gpt2', byte-fallback SentencePiece as 'llama')");
  GgufFolderOptions o;
  const J pre = tj.value("pre_tokenizer", J());
  const J norm = tj.value("normalizer", J());
  auto type_of = [](const J& x) { return x.is_object() ? x.value("type", "") : std::string(); };
  if (model.value("byte_fallback", false)) {
    // SentencePiece as a BPE: Metaspace, or (older files) a Prepend + Replace normalizer.
    const bool metaspace = type_of(pre) == "Metaspace" && pre.value("prepend_scheme", "first") == "first";
    const bool prepend = pre.is_null() && type_of(norm) == "Sequence";
    if (!metaspace && !prepend)
      throw Error(src + ": field 'pre_tokenizer': a byte-fallback BPE needs Metaspace (prepend_scheme first) or "
                  "a Prepend + Replace normalizer to be written as a 'llama' GGUF tokenizer");
    o.model = "llama";
    return o;
  }
  if (!norm.is_null())
    throw Error(src + ": field 'normalizer': a byte-level GGUF tokenizer has none ('" + type_of(norm) +
                "' cannot be carried)");
  // The steps before ByteLevel: nothing, Digits(individual), or one Split(Regex, Isolated).
  std::vector<J> steps;
  if (type_of(pre) == "Sequence") steps = pre.value("pretokenizers", J::array()).get<std::vector<J>>();
  else if (!pre.is_null()) steps.push_back(pre);
  if (steps.empty() || type_of(steps.back()) != "ByteLevel")
    throw Error(src + ": field 'pre_tokenizer': not a byte-level BPE (no ByteLevel step last): its GGUF "
                "tokenizer is not one lvt writes");
  const bool bl_regex = steps.back().value("use_regex", true);
  steps.pop_back();
  std::string regex;
  bool digits = false;
  for (const J& s : steps) {
    if (type_of(s) == "Digits" && s.value("individual_digits", false) && !digits && regex.empty()) digits = true;
    else if (type_of(s) == "Split" && regex.empty() && s.value("behavior", "") == "Isolated" &&
             !s.value("invert", false) && s.contains("pattern") && s["pattern"].contains("Regex"))
      regex = s["pattern"]["Regex"].get<std::string>();
    else
      throw Error(src + ": field 'pre_tokenizer': step '" + type_of(s) + "' has no tokenizer.ggml.pre lvt knows");
  }
  if (!regex.empty() && bl_regex)
    throw Error(src + ": field 'pre_tokenizer': a Split regex and a ByteLevel with its own regex: no "
                "tokenizer.ggml.pre lvt knows");
  const bool ignore = model.value("ignore_merges", false);
  // The names the converter writes for the common models first, then the rest of the table.
  std::vector<std::string_view> names = {"llama-bpe", "smaug-bpe", "qwen2", "gpt-2", "smollm", "tekken", "gpt-4o", "qwen35"};
  for (const auto& p : gguf_pre_types()) names.push_back(p.name);
  for (std::string_view n : names) {
    const GgufPreType* p = find_gguf_pre_type(n);
    if (p && p->split_regex == regex && p->digits_first == digits && p->ignore_merges == ignore) {
      o.pre = std::string(n);
      return o;
    }
  }
  throw Error(src + ": field 'pre_tokenizer': " +
              (regex.empty() ? std::string("ByteLevel") + (digits ? " after Digits" : "") : "Split regex '" + regex + "'") +
              (ignore ? " with" : " without") + " ignore_merges matches no tokenizer.ggml.pre lvt reads");
}

// The probe text of convert_hf_to_gguf.py's get_vocab_base_pre (whitespace runs, emoji, digits,
// scripts, contractions), plus a few plain sentences.
inline constexpr std::string_view gguf_tokenizer_probe_text =
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\xF0\x9F\x9A\x80 (normal) "
    "\xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F (multiple emojis concatenated) \xE2\x9C\x85 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple"
    "\xE5\xB7\xA5\xE4\xBD\x9C" "1314151\xE5\xA4\xA9\xEF\xBD\x9E ------======= "
    "\xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE \xD0\xBD\xD0\xB0 '''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL "
    "Hello world, 12345 and  42 apples.\nThe quick brown fox jumps over the lazy dog.";

// gguf_tokenizer_metadata of the folder with the model and pre it needs, checked: the reader's
// tokenizer built from that metadata (tokenizer_from_gguf) must give the folder's ids
// (Tokenizer::from_dir) on the probe text, with and without special tokens (bos / eos aside).
inline std::vector<std::pair<std::string, io::GgufValue>> gguf_tokenizer_metadata_checked(
    const std::filesystem::path& dir, std::int64_t vocab_size) {
  GgufFolderOptions o = gguf_tokenizer_options(dir);
  o.vocab_size = vocab_size;
  auto kv = gguf_tokenizer_metadata(dir, o);
  io::GgufHeader h;
  for (const auto& [k, v] : kv) h.metadata.push_back({k, v, 0});
  const std::string src = dir.string() + " (as GGUF tokenizer metadata)";
  const Tokenizer mine = tokenizer_from_gguf(h, src);
  const Tokenizer theirs = Tokenizer::from_dir(dir);
  // bos / eos follow the converter (tokenizer_config.json's add_*_token over the post-processor,
  // as gguf-py's SpecialVocab), so with special tokens only the text between them must agree.
  const auto strip = [](std::vector<int32_t> ids, const Tokenizer& t) {
    if (!ids.empty() && t.bos_id() && ids.front() == *t.bos_id()) ids.erase(ids.begin());
    if (!ids.empty() && t.eos_id() && ids.back() == *t.eos_id()) ids.pop_back();
    return ids;
  };
  for (bool special : {false, true}) {
    auto a = theirs.encode(gguf_tokenizer_probe_text, special), b = mine.encode(gguf_tokenizer_probe_text, special);
    if (special) a = strip(a, theirs), b = strip(b, mine);
    if (a != b) {
      std::size_t i = 0;
      while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
      throw Error((dir / "tokenizer.json").string() + ": its GGUF tokenizer (model '" + o.model + "'" +
                  (o.model == "gpt2" ? ", pre '" + o.pre + "'" : std::string()) +
                  ") would tokenize differently: ids differ at position " + std::to_string(i) + " of " +
                  std::to_string(a.size()) + (special ? " (with special tokens)" : "") +
                  ": this tokenizer cannot be written to GGUF by lvt");
    }
  }
  return kv;
}

}  // namespace lvt::text
