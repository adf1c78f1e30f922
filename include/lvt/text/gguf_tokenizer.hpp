#pragma once
// The tokenizer a GGUF file's metadata describes (tokenizer.ggml.*), as a tokenizer.json object
// for text/tokenizer.hpp: the same tokenizer types as a Hugging Face folder, no second
// implementation. What is built is what transformers 5.23 builds for
// `AutoTokenizer.from_pretrained(dir, gguf_file=...)` (integrations/gguf/gguf_tokenizer_mapping.py):
//
//   tokenizer.ggml.model "gpt2"   byte-level BPE: tokens (respelled into GPT-2's byte alphabet when
//                                 they hold other characters), tokenizer.ggml.merges, no
//                                 normalizer; tokenizer.ggml.pre picks the pre-tokenizer regex
//                                 (Split, Isolated, then ByteLevel without its own regex), or
//                                 GPT-2's ByteLevel regex; ByteLevel decoder.
//   tokenizer.ggml.model "llama"  SentencePiece as a BPE with byte_fallback and fuse_unk: merges
//                                 from the file, or derived from tokens and scores as
//                                 transformers' generate_merges does; Metaspace (split false,
//                                 prepend_scheme "first"), Replace/ByteFallback/Fuse/Strip
//                                 decoder; architecture phi3: Prepend + Replace normalizer and no
//                                 pre-tokenizer instead.
//   token types                   3 (control) -> special added tokens, 4 (user-defined) -> added
//                                 tokens; bos/eos/unk/pad become special too (as transformers'
//                                 special-token attributes do), and the class defaults
//                                 (<|endoftext|>; <unk> <s> </s>) when the vocabulary has them.
//   add_bos_token / add_eos_token TemplateProcessing "[bos] $A [eos]" (llama: bos by default).
//
// Where transformers drops what the file says and llama.cpp (the file's own runtime) honors it,
// lvt honors it (docs/text.md, "GGUF"): the smollm family of pre types splits digits one by one
// first (llama.cpp's "\p{N}" regex, SmolLM's own tokenizer.json), the llama3 family and tekken
// set ignore_merges, and tokenizer.ggml.add_space_prefix false turns the Metaspace prefix off.
// transformers' GPT2Tokenizer also adds "<|endoftext|>" past the vocabulary when the file lacks
// it; lvt adds no token the file does not have.
//
// Entry points: tokenizer_from_gguf(file), load_tokenizer(folder or .gguf), chat_template_from_gguf,
// gguf_tokenizer_spec (the tokenizer.json object), write_gguf_tokenizer_folder. A header of its
// own so that tokenizer.hpp's users do not compile the GGUF code.
//
// Every error names the file and the key: an unknown tokenizer.ggml.model or pre, a missing or
// mistyped key, an id outside the vocabulary, a merge that is not two tokens of the vocabulary.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/gguf.hpp"
#include "lvt/text/byte_level.hpp"
#include "lvt/text/chat_template.hpp"
#include "lvt/text/json_path.hpp"
#include "lvt/text/tokenizer.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

// One tokenizer.ggml.pre name: a Split regex (transformers' GGUF_PRE_TOKENIZER_SPLITS, the
// regexes of the models' own tokenizer.json files), or GPT-2's ByteLevel regex, optionally after
// splitting digits; ignore_merges as llama.cpp sets it.
struct GgufPreType {
  std::string_view name;
  std::string_view split_regex;  // empty: ByteLevel with GPT-2's regex
  bool digits_first = false;     // Digits(individual) before ByteLevel (llama.cpp's "\p{N}" first)
  bool ignore_merges = false;
};

namespace gguf_pre {
inline constexpr std::string_view llama3 =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
inline constexpr std::string_view qwen2 =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
inline constexpr std::string_view qwen35 =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
inline constexpr std::string_view tekken =
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
inline constexpr std::string_view gpt4o =
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
}  // namespace gguf_pre

// Every tokenizer.ggml.pre lvt reads. The Split names are transformers' table; the ByteLevel
// ones are llama.cpp's LLAMA_VOCAB_PRE_TYPE_GPT2 names (its GPT-2 regex, as transformers'
// fallback) and its SMOLLM group (digits first, then the GPT-2 regex).
inline const std::vector<GgufPreType>& gguf_pre_types() {
  using namespace gguf_pre;
  static const std::vector<GgufPreType> t = {
      {"llama3", llama3, false, true}, {"llama-v3", llama3, false, true}, {"llama-bpe", llama3, false, true},
      {"falcon3", llama3, false, true}, {"falcon-h1", llama3, false, true}, {"pixtral", llama3, false, true},
      {"midm-2.0", llama3, false, true}, {"lfm2", llama3, false, true}, {"jina-v5-nano", llama3, false, true},
      {"dbrx", llama3}, {"smaug-bpe", llama3},
      {"qwen2", qwen2}, {"deepseek-r1-qwen", qwen2}, {"kormo", qwen2}, {"f2llmv2", qwen2}, {"megrez", qwen2},
      {"qwen35", qwen35},
      {"tekken", tekken, false, true},
      {"gpt-4o", gpt4o}, {"llama4", gpt4o}, {"kanana2", gpt4o}, {"talkie", gpt4o}, {"minimax-m2", gpt4o},
      {"gpt-2", {}}, {"phi-2", {}}, {"mpt", {}}, {"olmo", {}}, {"jais", {}}, {"trillion", {}},
      {"granite-docling", {}}, {"exaone4", {}}, {"mellum", {}}, {"a.x-4.0", {}}, {"gigachat", {}},
      {"smollm", {}, true}, {"starcoder", {}, true}, {"refact", {}, true}, {"command-r", {}, true},
      {"codeshell", {}, true}, {"exaone", {}, true}, {"minerva-7b", {}, true}, {"mellum2", {}, true},
  };
  return t;
}

inline const GgufPreType* find_gguf_pre_type(std::string_view name) {
  for (const auto& p : gguf_pre_types())
    if (p.name == name) return &p;
  return nullptr;
}

// What a GGUF file's tokenizer metadata builds.
struct GgufTokenizerSpec {
  Json tokenizer_json;  // a tokenizer.json object for Tokenizer
  std::string model;    // tokenizer.ggml.model
  std::string pre;      // tokenizer.ggml.pre ("" when absent)
  std::size_t n_tokens = 0;
  // bos / eos / unk / pad as transformers resolves them: the token string of the file's id.
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token;
  std::optional<int32_t> bos_id, eos_id;     // the file's ids of bos_token / eos_token
  std::optional<std::string> chat_template;  // tokenizer.chat_template
};

namespace detail_ggt {

inline constexpr std::size_t max_tokens = 1u << 22;      // Bpe's id bound
inline constexpr std::size_t max_token_bytes = 1u << 12;  // far above real tokens; bounds merge derivation

struct Meta {
  const io::GgufHeader& h;
  const std::string& source;

  const io::GgufKv* find(std::string_view key) const {
    for (const auto& kv : h.metadata)
      if (kv.key == key) return &kv;
    return nullptr;
  }
  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    const io::GgufKv* kv = find(key);
    throw Error(source + ": key '" + std::string(key) + "': " + what +
                (kv ? " (at byte " + std::to_string(kv->file_offset) + ")" : std::string()));
  }
  std::optional<std::string> string(std::string_view key) const {
    const io::GgufKv* kv = find(key);
    if (!kv) return std::nullopt;
    if (kv->value.type != io::GgufValueType::string)
      fail(key, std::string("expected a string, got ") + io::gguf_value_type_name(kv->value.type));
    return kv->value.s;
  }
  std::optional<bool> boolean(std::string_view key) const {
    const io::GgufKv* kv = find(key);
    if (!kv) return std::nullopt;
    if (kv->value.type != io::GgufValueType::boolean)
      fail(key, std::string("expected a bool, got ") + io::gguf_value_type_name(kv->value.type));
    return kv->value.u != 0;
  }
  // A token id: any integer type, inside the vocabulary.
  std::optional<int32_t> id(std::string_view key, std::size_t n_tokens) const {
    const io::GgufKv* kv = find(key);
    if (!kv) return std::nullopt;
    const io::GgufValue& v = kv->value;
    std::int64_t x = 0;
    if (v.is_unsigned()) x = v.u > std::uint64_t(INT64_MAX) ? INT64_MAX : std::int64_t(v.u);
    else if (v.is_signed()) x = v.i;
    else fail(key, std::string("expected an integer token id, got ") + io::gguf_value_type_name(v.type));
    if (x < 0 || std::uint64_t(x) >= n_tokens)
      fail(key, "token id " + std::to_string(x) + " is outside the vocabulary (" + std::to_string(n_tokens) + " tokens)");
    return int32_t(x);
  }
  const std::vector<io::GgufValue>* array(std::string_view key, const char* what) const {
    const io::GgufKv* kv = find(key);
    if (!kv) return nullptr;
    if (kv->value.type != io::GgufValueType::array)
      fail(key, std::string("expected an array of ") + what + ", got " + io::gguf_value_type_name(kv->value.type));
    return &kv->value.array;
  }
  std::vector<std::string> strings(std::string_view key) const {
    const auto* a = array(key, "strings");
    std::vector<std::string> out;
    if (!a) return out;
    if (!a->empty() && find(key)->value.elem_type != io::GgufValueType::string)
      fail(key, std::string("expected an array of strings, got an array of ") +
                    io::gguf_value_type_name(find(key)->value.elem_type));
    out.reserve(a->size());
    for (std::size_t i = 0; i < a->size(); ++i) {
      const std::string& s = (*a)[i].s;
      if (auto bad = utf8_first_invalid(s); bad != std::string::npos)
        fail(key, "entry " + std::to_string(i) + " is not valid UTF-8 (byte " + std::to_string(bad) + ")");
      out.push_back(s);
    }
    return out;
  }
  std::vector<std::int64_t> integers(std::string_view key) const {
    const auto* a = array(key, "integers");
    std::vector<std::int64_t> out;
    if (!a) return out;
    out.reserve(a->size());
    for (const auto& v : *a) {
      if (v.is_unsigned()) out.push_back(v.u > std::uint64_t(INT64_MAX) ? INT64_MAX : std::int64_t(v.u));
      else if (v.is_signed()) out.push_back(v.i);
      else fail(key, std::string("expected an array of integers, got an array of ") + io::gguf_value_type_name(v.type));
    }
    return out;
  }
  std::vector<double> reals(std::string_view key) const {
    const auto* a = array(key, "numbers");
    std::vector<double> out;
    if (!a) return out;
    out.reserve(a->size());
    for (std::size_t i = 0; i < a->size(); ++i) {
      const auto& v = (*a)[i];
      double x = v.is_float() ? v.f : v.is_signed() ? double(v.i) : v.is_unsigned() ? double(v.u) : 0.0;
      if (!v.is_float() && !v.is_signed() && !v.is_unsigned())
        fail(key, std::string("expected an array of numbers, got an array of ") + io::gguf_value_type_name(v.type));
      if (!std::isfinite(x)) fail(key, "entry " + std::to_string(i) + " is not finite");
      out.push_back(x);
    }
    return out;
  }
};

inline std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// transformers' generate_merges(vocab, vocab_scores) (tokenization_utils_base.py): for each token
// in file order, every split into two tokens of the vocabulary (ordered by the two ids), then all
// of them sorted stably by (score, left length, right length) in code points, highest first.
inline std::vector<std::pair<std::string, std::string>> generate_merges(
    const std::vector<std::string>& tokens, const std::vector<double>& scores,
    const std::unordered_map<std::string, int32_t>& vocab) {
  struct M {
    std::string left, right;
    double score;
    std::size_t left_len, right_len;
  };
  std::vector<M> merges;
  std::vector<M> local;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const std::string& merge = tokens[t];
    local.clear();
    for (std::size_t i = 0; i < merge.size();) {
      i += std::max<std::size_t>(1, utf8_valid_len(merge, i));
      if (i >= merge.size()) break;
      std::string l = merge.substr(0, i), r = merge.substr(i);
      if (vocab.count(l) && vocab.count(r)) local.push_back({std::move(l), std::move(r), scores[t], 0, 0});
    }
    std::stable_sort(local.begin(), local.end(), [&](const M& a, const M& b) {
      const int32_t al = vocab.at(a.left), bl = vocab.at(b.left);
      return al != bl ? al < bl : vocab.at(a.right) < vocab.at(b.right);
    });
    for (auto& m : local) {
      m.left_len = code_points(m.left);
      m.right_len = code_points(m.right);
      merges.push_back(std::move(m));
    }
  }
  // sorted(..., reverse=True) is stable: equal keys keep their order.
  std::stable_sort(merges.begin(), merges.end(), [](const M& a, const M& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_len != b.left_len) return a.left_len > b.left_len;
    return a.right_len > b.right_len;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (auto& m : merges) out.emplace_back(std::move(m.left), std::move(m.right));
  return out;
}

inline Json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

}  // namespace detail_ggt

// The tokenizer the metadata of `h` describes; `source` (the file) names every error.
inline GgufTokenizerSpec gguf_tokenizer_spec(const io::GgufHeader& h, const std::string& source) {
  using namespace detail_ggt;
  const Meta m{h, source};
  GgufTokenizerSpec spec;
  const auto model = m.string("tokenizer.ggml.model");
  if (!model)
    m.fail("tokenizer.ggml.model", "missing: this GGUF file carries no tokenizer (give a tokenizer folder)");
  spec.model = *model;
  if (spec.model != "gpt2" && spec.model != "llama")
    m.fail("tokenizer.ggml.model", "tokenizer model '" + spec.model +
                                       "' is not supported (lvt reads 'gpt2', byte-level BPE, and 'llama', "
                                       "SentencePiece)");
  const bool byte_level = spec.model == "gpt2";
  const std::string arch = m.string("general.architecture").value_or("");
  if (!byte_level && (arch == "gemma" || arch == "gemma2" || arch == "gemma3"))
    m.fail("general.architecture", "the " + arch + " SentencePiece variant (respelled spaces, merges from token "
                                   "order) is not supported");
  spec.pre = m.string("tokenizer.ggml.pre").value_or("");
  const GgufPreType* pre = nullptr;
  if (byte_level) {  // SentencePiece files carry "default", which nothing reads
    if (spec.pre.empty())
      m.fail("tokenizer.ggml.pre", "missing: a byte-level GGUF file must name its pre-tokenizer (files written "
                                   "before llama.cpp's pre-tokenizer types: reconvert the model)");
    pre = find_gguf_pre_type(spec.pre);
    if (!pre) {
      std::string names;
      for (const auto& p : gguf_pre_types()) names += (names.empty() ? "" : ", ") + std::string(p.name);
      m.fail("tokenizer.ggml.pre", "pre-tokenizer '" + spec.pre + "' is not supported (lvt reads " + names + ")");
    }
  }

  const std::vector<std::string> tokens = m.strings("tokenizer.ggml.tokens");
  if (!m.find("tokenizer.ggml.tokens")) m.fail("tokenizer.ggml.tokens", "missing (required)");
  if (tokens.empty()) m.fail("tokenizer.ggml.tokens", "empty vocabulary");
  if (tokens.size() > max_tokens)
    m.fail("tokenizer.ggml.tokens", std::to_string(tokens.size()) + " tokens, more than lvt's limit of " +
                                        std::to_string(max_tokens));
  spec.n_tokens = tokens.size();
  const std::vector<std::int64_t> types = m.integers("tokenizer.ggml.token_type");
  if (m.find("tokenizer.ggml.token_type") && types.size() != tokens.size())
    m.fail("tokenizer.ggml.token_type", std::to_string(types.size()) + " entries for " +
                                            std::to_string(tokens.size()) + " tokens");

  // The vocabulary, respelled into GPT-2's byte alphabet for byte-level files.
  const ByteLevelMap& bl = ByteLevelMap::get();
  auto in_alphabet = [&](std::string_view t) {
    for (std::size_t i = 0; i < t.size();) {
      const char32_t c = utf8_next(t, i);
      if (c >= 512 || bl.cp_to_byte[c] < 0) return false;
    }
    return true;
  };
  std::vector<std::string> spelled(tokens.size());
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(tokens.size());
  Json vocab_json = Json::object();
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t.empty()) m.fail("tokenizer.ggml.tokens", "token " + std::to_string(i) + " is empty");
    if (t.size() > max_token_bytes)
      m.fail("tokenizer.ggml.tokens", "token " + std::to_string(i) + " is " + std::to_string(t.size()) +
                                          " bytes, longer than lvt's limit of " + std::to_string(max_token_bytes));
    if (byte_level && !in_alphabet(t)) bl.append(spelled[i], t);
    else spelled[i] = t;
    auto [it, fresh] = vocab.emplace(spelled[i], int32_t(i));
    if (!fresh)
      m.fail("tokenizer.ggml.tokens", "duplicate token '" + spelled[i] + "' at ids " + std::to_string(it->second) +
                                          " and " + std::to_string(i));
    vocab_json[spelled[i]] = i;
  }

  // Merges: the file's, or (SentencePiece) derived from the scores.
  Json merges_json = Json::array();
  if (m.find("tokenizer.ggml.merges")) {
    const std::vector<std::string> merges = m.strings("tokenizer.ggml.merges");
    for (std::size_t i = 0; i < merges.size(); ++i) {
      const std::string& s = merges[i];  // transformers: tuple(merge.split(" "))
      const std::size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        m.fail("tokenizer.ggml.merges", "merge " + std::to_string(i) + " '" + s + "' is not two tokens split by one space");
      std::string a = s.substr(0, sp), b = s.substr(sp + 1);
      if (!vocab.count(a) || !vocab.count(b) || !vocab.count(a + b))
        m.fail("tokenizer.ggml.merges", "merge " + std::to_string(i) + " '" + s + "': " +
                                            (!vocab.count(a) || !vocab.count(b) ? "a token that is not in the vocabulary"
                                                                                : "the merged token is not in the vocabulary"));
      merges_json.push_back({std::move(a), std::move(b)});
    }
  } else if (byte_level) {
    m.fail("tokenizer.ggml.merges", "missing (required for a 'gpt2' tokenizer)");
  } else {
    if (!m.find("tokenizer.ggml.scores"))
      m.fail("tokenizer.ggml.scores", "missing: a 'llama' tokenizer without tokenizer.ggml.merges needs the scores");
    const std::vector<double> scores = m.reals("tokenizer.ggml.scores");
    if (scores.size() != tokens.size())
      m.fail("tokenizer.ggml.scores", std::to_string(scores.size()) + " scores for " + std::to_string(tokens.size()) + " tokens");
    for (auto& [a, b] : generate_merges(tokens, scores, vocab)) merges_json.push_back({std::move(a), std::move(b)});
  }

  // Added tokens: control -> special; user-defined -> plain; then the special-token attributes
  // and the class defaults. Each keeps its own id and its text as the file spells it (for a
  // byte-level text outside the byte alphabet transformers skips the control token, or adds it
  // again past the vocabulary; llama.cpp, as here, matches the text to the file's id).
  Json added = Json::array();
  std::unordered_map<std::string, bool> added_contents;
  auto add = [&](const std::string& content, int32_t id, bool special) {
    if (!added_contents.emplace(content, special).second) return;
    added.push_back(added_token(id, content, special));
  };
  if (!types.empty()) {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (types[i] == 3) add(tokens[i], int32_t(i), true);
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (types[i] == 4) add(tokens[i], int32_t(i), false);
  }
  auto token_of = [&](const char* key, std::optional<std::string>& out) {
    auto id = m.id(key, tokens.size());
    if (!id) return id;
    out = tokens[std::size_t(*id)];
    add(*out, *id, true);
    return id;
  };
  spec.bos_id = token_of("tokenizer.ggml.bos_token_id", spec.bos_token);
  spec.eos_id = token_of("tokenizer.ggml.eos_token_id", spec.eos_token);
  token_of("tokenizer.ggml.unknown_token_id", spec.unk_token);
  token_of("tokenizer.ggml.padding_token_id", spec.pad_token);
  // The defaults transformers constructs the tokenizer class with (GPT2Tokenizer, LlamaTokenizer),
  // when the vocabulary has them.
  for (const char* t : byte_level ? std::vector<const char*>{"<|endoftext|>"} : std::vector<const char*>{"<unk>", "<s>", "</s>"})
    if (auto it = vocab.find(t); it != vocab.end()) add(t, it->second, true);
  std::stable_sort(added.begin(), added.end(), [](const Json& a, const Json& b) { return a["id"] < b["id"]; });

  // The pipeline.
  Json j = Json::object();
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(added);
  j["normalizer"] = nullptr;
  const std::string meta = "\xE2\x96\x81";  // U+2581
  const bool space_prefix = m.boolean("tokenizer.ggml.add_space_prefix").value_or(true);
  if (byte_level) {
    Json byte_level_step = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                            {"use_regex", pre->split_regex.empty()}};
    Json steps = Json::array();
    if (!pre->split_regex.empty())
      steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", std::string(pre->split_regex)}}},
                       {"behavior", "Isolated"}, {"invert", false}});
    if (pre->digits_first) steps.push_back({{"type", "Digits"}, {"individual_digits", true}});
    if (steps.empty()) {
      j["pre_tokenizer"] = std::move(byte_level_step);
    } else {
      steps.push_back(std::move(byte_level_step));
      j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", std::move(steps)}};
    }
    j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  } else {
    if (arch == "phi3") {  // transformers' phi3_tokenizer
      j["normalizer"] = {{"type", "Sequence"}, {"normalizers", Json::array({
          {{"type", "Prepend"}, {"prepend", meta}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", meta}}})}};
      j["pre_tokenizer"] = nullptr;
    } else {
      j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", meta},
                            {"prepend_scheme", space_prefix ? "first" : "never"}, {"split", false}};
    }
    Json dec = Json::array({{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
                            {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
    if (space_prefix || arch == "phi3") dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    j["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(dec)}};
  }
  // transformers' update_post_processor: single "[bos:0] $A:0 [eos:0]", pair adds
  // "[bos:1] $B:1 [eos:1]".
  const bool add_bos = m.boolean("tokenizer.ggml.add_bos_token").value_or(!byte_level) && spec.bos_token;
  const bool add_eos = m.boolean("tokenizer.ggml.add_eos_token").value_or(false) && spec.eos_token;
  Json single = Json::array(), pair = Json::array(), special = Json::object();
  auto piece = [](Json& seq, const char* kind, const std::string& id, int type_id) {
    seq.push_back({{kind, {{"id", id}, {"type_id", type_id}}}});
  };
  for (int part = 0; part < 2; ++part) {
    Json& seq = part == 0 ? single : pair;
    for (int k = 0; k <= part; ++k) {
      if (add_bos) piece(seq, "SpecialToken", *spec.bos_token, k);
      piece(seq, "Sequence", k == 0 ? "A" : "B", k);
      if (add_eos) piece(seq, "SpecialToken", *spec.eos_token, k);
    }
  }
  if (add_bos) special[*spec.bos_token] = {{"id", *spec.bos_token}, {"ids", {*spec.bos_id}}, {"tokens", {*spec.bos_token}}};
  if (add_eos) special[*spec.eos_token] = {{"id", *spec.eos_token}, {"ids", {*spec.eos_id}}, {"tokens", {*spec.eos_token}}};
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", std::move(single)}, {"pair", std::move(pair)},
                         {"special_tokens", std::move(special)}};
  // GPT2Tokenizer spells the subword affixes "", LlamaTokenizer leaves them null: the same.
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                {"continuing_subword_prefix", byte_level ? Json("") : Json(nullptr)},
                {"end_of_word_suffix", byte_level ? Json("") : Json(nullptr)},
                {"fuse_unk", !byte_level}, {"byte_fallback", !byte_level},
                {"ignore_merges", byte_level && pre->ignore_merges},
                {"vocab", std::move(vocab_json)}, {"merges", std::move(merges_json)}};
  spec.chat_template = m.string("tokenizer.chat_template");
  spec.tokenizer_json = std::move(j);
  return spec;
}

// The chat template of a GGUF file (tokenizer.chat_template) and the special tokens it sees, as
// transformers' special_tokens_map has them: bos_token, eos_token, unk_token, pad_token, those
// the file names. Reads only those keys (no vocabulary is built).
struct GgufChatInfo {
  std::optional<std::string> chat_template;
  std::vector<std::pair<std::string, std::string>> special_tokens;
};

inline GgufChatInfo gguf_chat_info(const io::GgufHeader& h, const std::string& source) {
  const detail_ggt::Meta m{h, source};
  GgufChatInfo out;
  out.chat_template = m.string("tokenizer.chat_template");
  const io::GgufKv* kv = m.find("tokenizer.ggml.tokens");
  if (!kv) return out;
  if (kv->value.type != io::GgufValueType::array || (!kv->value.array.empty() && kv->value.elem_type != io::GgufValueType::string))
    m.fail("tokenizer.ggml.tokens", "expected an array of strings");
  const auto& tokens = kv->value.array;
  for (auto [name, key] : {std::pair{"bos_token", "tokenizer.ggml.bos_token_id"}, {"eos_token", "tokenizer.ggml.eos_token_id"},
                           {"unk_token", "tokenizer.ggml.unknown_token_id"}, {"pad_token", "tokenizer.ggml.padding_token_id"}})
    if (auto id = m.id(key, tokens.size())) out.special_tokens.emplace_back(name, tokens[std::size_t(*id)].s);
  return out;
}

// The tokenizer of a GGUF file as a Hugging Face folder: tokenizer.json (the built pipeline) and
// tokenizer_config.json (the special tokens, the chat template); Tokenizer::from_dir and
// transformers read it back as the same tokenizer. `lvt merge` of a .gguf base writes it.
inline void write_gguf_tokenizer_folder(const GgufTokenizerSpec& s, const std::filesystem::path& dir) {
  io::write_text_atomic(dir / "tokenizer.json", s.tokenizer_json.dump(2, ' ', false, Json::error_handler_t::strict) + "\n");
  Json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false}};
  if (s.bos_token) cfg["bos_token"] = *s.bos_token;
  if (s.eos_token) cfg["eos_token"] = *s.eos_token;
  if (s.unk_token) cfg["unk_token"] = *s.unk_token;
  if (s.pad_token) cfg["pad_token"] = *s.pad_token;
  if (s.chat_template) cfg["chat_template"] = *s.chat_template;
  io::write_text_atomic(dir / "tokenizer_config.json", cfg.dump(2) + "\n");
}

// True for a path that names a .gguf file (the tokenizer and model loaders dispatch on it).
inline bool is_gguf_file(const std::filesystem::path& p) {
  return p.extension() == ".gguf" && std::filesystem::is_regular_file(p);
}

// The tokenizer of a GGUF file's metadata, as transformers 5.23's
// AutoTokenizer.from_pretrained(dir, gguf_file=...) builds it (with the keys above honored).
inline Tokenizer tokenizer_from_gguf(const io::GgufHeader& h, const std::string& source) {
  const GgufTokenizerSpec spec = gguf_tokenizer_spec(h, source);
  return Tokenizer::from_json_object(spec.tokenizer_json, source + " (tokenizer metadata)", spec.bos_token,
                                     spec.eos_token);
}
inline Tokenizer tokenizer_from_gguf(const std::filesystem::path& file) {
  const io::GgufFile f(file);
  return tokenizer_from_gguf(f.header(), file.string());
}

// Tokenizer::from_dir for a folder, tokenizer_from_gguf for a .gguf file.
inline Tokenizer load_tokenizer(const std::filesystem::path& path) {
  return is_gguf_file(path) ? tokenizer_from_gguf(path) : Tokenizer::from_dir(path);
}

// A GGUF file's tokenizer.chat_template with the special tokens of its metadata (gguf_chat_info).
// Named templates (tokenizer.chat_template.NAME) are not read, as transformers does not read them.
inline ChatTemplate chat_template_from_gguf(const io::GgufHeader& h, const std::string& source) {
  GgufChatInfo info = gguf_chat_info(h, source);
  if (!info.chat_template) throw Error(source + ": no tokenizer.chat_template in the GGUF metadata");
  try {
    return ChatTemplate(std::move(*info.chat_template), std::move(info.special_tokens));
  } catch (const Error& e) {
    throw Error(source + ": tokenizer.chat_template: " + e.what());
  }
}
inline ChatTemplate chat_template_from_gguf(const std::filesystem::path& file) {
  const io::GgufFile f(file);
  return chat_template_from_gguf(f.header(), file.string());
}

}  // namespace lvt::text
