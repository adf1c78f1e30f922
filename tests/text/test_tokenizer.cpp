// lvt::text::Tokenizer against goldens from the Rust tokenizers library and transformers
// (tools/peers/make_tokenizer_goldens.py): every corpus string, token for token.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "lvt/text/tokenizer.hpp"

namespace fs = std::filesystem;
using lvt::text::Json;
using lvt::text::Tokenizer;

namespace {

#define FAIL_MSG(x) do { std::ostringstream o_; o_ << x; FAIL_CHECK(o_.str()); } while (0)

int g_skipped = 0;
const fs::path kRoot = LVT_SOURCE_ROOT;
const fs::path kText = kRoot / "tests" / "text";

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  std::ifstream f(kText / "corpus.jsonl");
  for (std::string line; std::getline(f, line);) out.push_back(Json::parse(line).get<std::string>());
  return out;
}

std::vector<Json> golden(const std::string& name) {
  std::vector<Json> out;
  std::ifstream f(kText / "goldens" / (name + ".jsonl"));
  for (std::string line; std::getline(f, line);) out.push_back(Json::parse(line));
  return out;
}

// The folder a golden was made from: the shared real ones, or the small committed ones.
fs::path folder(const std::string& name) {
  if (name == "qwen3" || name == "mistral") {
    std::string shared = LVT_SHARED_DATA;
    return shared.empty() ? fs::path() : fs::path(shared) / "tokenizers" / name;
  }
  return kText / "tokenizers" / name;
}

std::string diff(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t k = 0;
  while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
  auto at = [](const std::vector<int32_t>& v, size_t i) { return i < v.size() ? std::to_string(v[i]) : std::string("end"); };
  return "first difference at token " + std::to_string(k) + ": got " + at(got, k) + ", want " + at(want, k) +
         " (lengths " + std::to_string(got.size()) + " vs " + std::to_string(want.size()) + ")";
}

struct Tally { size_t strings = 0, mismatches = 0; };

Tally check_golden(const std::string& name) {
  Tally t;
  fs::path dir = folder(name);
  if (dir.empty() || !fs::exists(dir / "tokenizer.json")) {
    MESSAGE("SKIP " << name << ": tokenizer folder not found (" << dir.string() << "); the shared data folder is absent");
    ++g_skipped;
    return t;
  }
  auto strings = corpus();
  auto gold = golden(name);
  REQUIRE(gold.size() == strings.size());
  Tokenizer raw = Tokenizer::from_files(dir / "tokenizer.json");
  Tokenizer hf = Tokenizer::from_dir(dir);
  for (size_t i = 0; i < strings.size(); ++i) {
    const std::string& s = strings[i];
    const Json& g = gold[i];
    auto want_s = g["s"].get<std::vector<int32_t>>(), want_n = g["n"].get<std::vector<int32_t>>();
    auto want_hf = g["hf"].get<std::vector<int32_t>>();
    ++t.strings;
    bool bad = false;
    auto got_s = raw.encode(s, true), got_n = raw.encode(s, false), got_hf = hf.encode(s);
    if (got_s != want_s) { bad = true; FAIL_MSG(name << " string " << i << " add_special_tokens=true: " << diff(got_s, want_s)); }
    if (got_n != want_n) { bad = true; FAIL_MSG(name << " string " << i << " add_special_tokens=false: " << diff(got_n, want_n)); }
    if (got_hf != want_hf) { bad = true; FAIL_MSG(name << " string " << i << " transformers encode: " << diff(got_hf, want_hf)); }
    auto d = raw.decode(want_n, false), ds = raw.decode(want_s, true), hd = hf.decode(want_hf, false);
    if (d != g["d"].get<std::string>()) { bad = true; FAIL_MSG(name << " string " << i << " decode differs: \"" << d << "\""); }
    if (ds != g["ds"].get<std::string>()) { bad = true; FAIL_MSG(name << " string " << i << " decode(skip_special) differs: \"" << ds << "\""); }
    if (hd != g["hd"].get<std::string>()) { bad = true; FAIL_MSG(name << " string " << i << " transformers decode differs: \"" << hd << "\""); }
    if (g["rt"].get<bool>() && raw.decode(got_n) != s) { bad = true; FAIL_MSG(name << " string " << i << " does not round-trip"); }
    t.mismatches += bad;
  }
  MESSAGE(name << ": " << t.strings - t.mismatches << " / " << t.strings << " strings agree");
  return t;
}

}  // namespace

TEST_CASE("text: qwen3 (byte-level BPE, NFC) matches tokenizers") { check_golden("qwen3"); }
TEST_CASE("text: mistral (SentencePiece BPE, byte_fallback) matches tokenizers") { check_golden("mistral"); }

TEST_CASE("text: committed small tokenizers match tokenizers") {
  fs::path dir = kText / "tokenizers";
  if (!fs::exists(dir)) return;
  for (auto& e : fs::directory_iterator(dir)) {
    CAPTURE(e.path().string());
    check_golden(e.path().filename().string());
  }
}

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  if (rc == 0 && g_skipped) {
    std::printf("SKIP: %d tokenizer folder(s) absent, see the messages above\n", g_skipped);
    return 77;
  }
  return rc;
}

namespace {

Json small_json() {
  std::ifstream f(kText / "tokenizers" / "smollm2_style" / "tokenizer.json");
  return Json::parse(f);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const lvt::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("text: bad tokenizer.json names the file and the JSON path") {
  Json j = small_json();
  j["pre_tokenizer"]["pretokenizers"][1]["type"] = "Foo";
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }) ==
        "tokenizer.json: /pre_tokenizer/pretokenizers/1/type: unknown pre-tokenizer \"Foo\"");
  j = small_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }) == "tokenizer.json: /normalizer/type: unknown normalizer \"Lowercase\"");
  j = small_json();
  j["decoder"] = {{"type", "WordPiece"}};
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }) == "tokenizer.json: /decoder/type: unknown decoder \"WordPiece\"");
  j = small_json();
  j["model"].erase("merges");
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }) == "tokenizer.json: /model/merges: missing field");
  j = small_json();
  j["model"]["merges"][2] = 7;
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }) == "tokenizer.json: /model/merges/2: expected \"a b\" or [a, b]");
  j = small_json();
  j["model"]["type"] = "Unigram";
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }).find("/model/type: unknown model \"Unigram\"") != std::string::npos);
  j = small_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  CHECK(error_of([&] { Tokenizer::from_json(j.dump()); }).find("tokenizer.json: /pre_tokenizer/pattern/Regex: bad regex") == 0);
}

TEST_CASE("text: truncated or corrupt tokenizer.json is an error naming the file") {
  std::string text = small_json().dump();
  CHECK(error_of([&] { Tokenizer::from_json(text.substr(0, text.size() / 2)); }).find("tokenizer.json: not valid JSON") == 0);
  CHECK(error_of([&] { Tokenizer::from_json("[1, 2]"); }).find("tokenizer.json: /") == 0);
  CHECK(error_of([&] { Tokenizer::from_dir(kText / "no_such_folder"); }).find("cannot open") != std::string::npos);
}

TEST_CASE("text: invalid UTF-8 input and out-of-range ids are errors") {
  Tokenizer t = Tokenizer::from_dir(kText / "tokenizers" / "smollm2_style");
  CHECK(error_of([&] { t.encode("ok \xff bad"); }) == "Tokenizer::encode: input is not valid UTF-8 (byte 3)");
  CHECK(error_of([&] { t.encode("\xe2\x82"); }).find("not valid UTF-8") != std::string::npos);
  std::vector<int32_t> ids = {1, 2, static_cast<int32_t>(t.vocab_size())};
  CHECK(error_of([&] { t.decode(ids); }).find("token id " + std::to_string(t.vocab_size()) + " is out of range") != std::string::npos);
  std::vector<int32_t> neg = {-1};
  CHECK(error_of([&] { t.decode(neg); }).find("token id -1 is out of range") != std::string::npos);
}

// normalize_unicode cuts the text before ASCII characters and normalizes only the non-ASCII runs
// (a speed-up): the result must be what utf8proc gives for the whole string.
TEST_CASE("text: run-by-run NFC / NFKC equals whole-string normalization") {
  auto whole = [](const std::string& s, lvt::text::NormalForm f) {
    std::string out;
    lvt::text::normalize_unicode_append(out, s, f);
    return out;
  };
  std::vector<std::string> cases = corpus();
  // Marks after ASCII letters, marks at the start, Hangul jamo, marks that reorder, compatibility
  // characters that decompose to ASCII, singletons (Kelvin, Angstrom, Ohm), and random mixes.
  const std::vector<std::string> atoms = {"a", "e", "A", " ", "\n", "1", "\xcc\x81", "\xcc\x88", "\xcc\xa3", "\xcd\x84",
      "\xe1\x84\x80", "\xe1\x85\xa1", "\xe1\x86\xa8", "\xef\xac\x81", "\xc2\xbd", "\xe2\x84\xaa", "\xe2\x84\xab",
      "\xe2\x84\xa6", "\xef\xbc\xa1", "\xc3\xa9", "\xe4\xbd\xa0", "\xf0\x9f\x98\x80", "\xe0\xa4\x95", "\xe0\xa5\x8d"};
  cases.insert(cases.end(), {"\xcc\x81" "abc", "e\xcc\x81", "x\xcc\xa3\xcc\x81y", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8"});
  uint32_t rng = 12345;
  for (int n = 0; n < 3000; ++n) {
    std::string s;
    int len = 1 + static_cast<int>(rng % 12);
    for (int k = 0; k < len; ++k) {
      rng = rng * 1664525u + 1013904223u;
      s += atoms[(rng >> 8) % atoms.size()];
    }
    cases.push_back(s);
  }
  size_t bad = 0;
  for (auto& s : cases)
    for (auto f : {lvt::text::NormalForm::NFC, lvt::text::NormalForm::NFKC})
      if (lvt::text::normalize_unicode(s, f) != whole(s, f) && ++bad <= 5) FAIL_MSG("differs on \"" << s << "\"");
  CHECK(bad == 0);
}

TEST_CASE("text: vocabulary accessors") {
  Tokenizer t = Tokenizer::from_dir(kText / "tokenizers" / "metaspace_byte_fallback");
  CHECK(t.token_to_id("<s>") == 1);
  CHECK(t.id_to_token(2) == "</s>");
  CHECK(t.token_to_id("<0x41>") == 3 + 0x41);
  CHECK(t.bos_id() == 1);
  CHECK(t.eos_id() == 2);
  CHECK(t.special_tokens() == std::vector<std::string>{"<unk>", "<s>", "</s>"});
  CHECK(!t.token_to_id("no such token"));
}
