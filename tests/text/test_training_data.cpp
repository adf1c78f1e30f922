// Training examples → ids + loss mask (text/examples.hpp, text/training_data.hpp) against
// goldens from transformers with TRL's rules (tools/peers/make_data_goldens.py): every format,
// three real tokenizer + chat template pairs; every error with its file and line; the cache
// (reuse, invalidation, nothing left behind on error).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "lvt/text/training_data.hpp"

namespace fs = std::filesystem;
using namespace lvt;
using namespace lvt::text;

namespace {

int g_skipped = 0;
const fs::path kRoot = LVT_SOURCE_ROOT;
const fs::path kText = kRoot / "tests" / "text";

struct Pair {
  const char* name;
  fs::path tokenizer;
  const char* tmpl;
};

std::vector<Pair> pairs() {
  const std::string shared = LVT_SHARED_DATA;
  const fs::path s = shared.empty() ? fs::path() : fs::path(shared) / "tokenizers";
  return {{"smollm2", kText / "tokenizers" / "smollm2_style", "smollm2.jinja"},
          {"qwen2.5", s / "qwen3", "qwen2.5.jinja"},
          {"tinyllama", s / "mistral", "tinyllama.jinja"}};
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream f(p);
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

struct Temp {
  fs::path path;
  Temp() {
    static int n = 0;
    path = fs::temp_directory_path() / ("lvt_text_data_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~Temp() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

const fs::path kSmol = kText / "tokenizers" / "smollm2_style";

DataOptions smol_options(bool train_on_prompt = false) {
  DataOptions o;
  o.train_on_prompt = train_on_prompt;
  o.chat_template = kText / "templates" / "smollm2.jinja";
  return o;
}

}  // namespace

TEST_CASE("text data: ids and masks equal transformers + TRL's on every format and template") {
  const auto examples = lines_of(kText / "data" / "examples.jsonl");
  std::size_t total = 0, agree = 0, tokens = 0;
  for (const Pair& p : pairs()) {
    CAPTURE(p.name);
    if (p.tokenizer.empty() || !fs::exists(p.tokenizer / "tokenizer.json")) {
      std::printf("skip %s: no tokenizer folder %s (the shared data folder)\n", p.name, p.tokenizer.string().c_str());
      ++g_skipped;
      continue;
    }
    const Tokenizer tok = Tokenizer::from_dir(p.tokenizer);
    DataOptions o;
    o.chat_template = kText / "templates" / p.tmpl;
    const auto chat = load_chat_template(p.tokenizer, o);
    REQUIRE(chat);
    const ExampleEncoder enc(tok, chat.get(), false), all(tok, chat.get(), true);
    for (const std::string& gline : lines_of(kText / "goldens" / (std::string("data_") + p.name + ".jsonl"))) {
      const Json g = Json::parse(gline);
      const std::size_t n = g["line"].get<std::size_t>();
      const std::string where = "examples.jsonl:" + std::to_string(n);
      CAPTURE(where);
      const Example e = parse_example(examples.at(n - 1), where);
      ++total;
      if (g.contains("mismatch")) {
        const std::string err = error_of([&] { enc.encode(e, where); });
        CHECK(err.find(where + ": the prompt's") == 0);
        CHECK(err.find("not a prefix") != std::string::npos);
        agree += err.find("not a prefix") != std::string::npos;
        continue;
      }
      const EncodedExample got = enc.encode(e, where);
      const auto want_ids = g["ids"].get<std::vector<std::int32_t>>();
      const auto want_mask = g["mask"].get<std::vector<std::uint8_t>>();
      CHECK(got.ids == want_ids);
      CHECK(got.mask == want_mask);
      agree += got.ids == want_ids && got.mask == want_mask;
      tokens += got.ids.size();
      // --train-on-prompt: the same ids, every token in the loss.
      const EncodedExample every = all.encode(e, where);
      CHECK(every.ids == want_ids);
      CHECK(std::count(every.mask.begin(), every.mask.end(), 1) == std::ptrdiff_t(every.mask.size()));
    }
  }
  std::printf("text data: %zu / %zu examples agree with the goldens (%zu tokens, ids and masks)\n", agree, total, tokens);
  CHECK(agree == total);
}

TEST_CASE("text data: formats are recognized, and alpaca uses Stanford Alpaca's prompt text") {
  const std::string w = "f.jsonl:1";
  CHECK(parse_example(R"({"text": "a"})", w).format == ExampleFormat::text);
  CHECK(parse_example(R"({"prompt": "a", "completion": "b"})", w).format == ExampleFormat::prompt_completion);
  CHECK(parse_example(R"({"messages": [{"role": "user", "content": "a"}]})", w).format == ExampleFormat::messages);
  const Example c = parse_example(R"({"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "assistant", "content": "b"}]})", w);
  CHECK(c.format == ExampleFormat::chat_prompt_completion);
  CHECK(c.prompt_messages == 1);
  CHECK(c.messages.size() == 2);
  const Example a = parse_example(R"({"instruction": "Add.", "input": "1 2", "output": "3", "id": 5})", w);
  CHECK(a.format == ExampleFormat::alpaca);
  CHECK(a.prompt ==
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n1 2\n\n"
        "### Response:");
  CHECK(a.completion == "3");
  const Example b = parse_example(R"({"instruction": "Add.", "input": "", "output": "3"})", w);
  CHECK(b.prompt ==
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nAdd.\n\n### Response:");
}

TEST_CASE("text data: every bad line is an error naming the file and line") {
  const std::string w = "data.jsonl:7";
  auto parse_err = [&](const std::string& line) { return error_of([&] { parse_example(line, w); }); };
  CHECK(parse_err("{\"text\": ").find("data.jsonl:7: not JSON") == 0);
  CHECK(parse_err("[1, 2]").find("data.jsonl:7: expected a JSON object") == 0);
  CHECK(parse_err(R"({"foo": 1, "bar": 2})") ==
        "data.jsonl:7: no known format: expected \"text\", \"prompt\" + \"completion\", \"messages\" or "
        "\"instruction\" + \"output\" (the object has \"foo\", \"bar\")");
  CHECK(parse_err(R"({"text": 3})") == "data.jsonl:7: field 'text' must be a string, not number");
  CHECK(parse_err(R"({"prompt": "a"})") == "data.jsonl:7: field 'prompt' without 'completion'");
  CHECK(parse_err(R"({"completion": "a"})") == "data.jsonl:7: field 'completion' without 'prompt'");
  CHECK(parse_err(R"({"instruction": "a"})") == "data.jsonl:7: field 'instruction' without 'output'");
  CHECK(parse_err(R"({"messages": []})").find("data.jsonl:7: field 'messages' must be a non-empty array") == 0);
  CHECK(parse_err(R"({"messages": [{"content": "hi"}]})") == "data.jsonl:7: messages[0]: message without \"role\"");
  CHECK(parse_err(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]})") ==
        "data.jsonl:7: messages[1]: message without \"content\"");
  CHECK(parse_err(R"({"messages": [{"role": "user", "content": 5}]})").find("messages[0]: \"content\" must be a string") != std::string::npos);
  CHECK(parse_err("{\"text\": \"caf\xC3\"}") == "data.jsonl:7: invalid UTF-8 (byte 14 of the line)");
  CHECK(parse_err("{\"text\": \"\xFF\"}") == "data.jsonl:7: invalid UTF-8 (byte 11 of the line)");

  // A template that raises on non-alternating roles (Mistral's and Mixtral's do): its message.
  const Tokenizer tok = Tokenizer::from_dir(kSmol);
  const ChatTemplate strict(
      "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{% endif %}{{ m['role'] + ':\\n' + m['content'] + '\\n' }}{% endfor %}"
      "{% if add_generation_prompt %}{{ 'assistant:\\n' }}{% endif %}");
  const ExampleEncoder enc(tok, &strict, false);
  const Example bad = parse_example(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})", w);
  CHECK(error_of([&] { enc.encode(bad, w); }) ==
        "data.jsonl:7: chat template: Conversation roles must alternate user/assistant/user/assistant/...");
  const Example good = parse_example(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})", w);
  const EncodedExample ok = enc.encode(good, w);
  // "user:\na\nassistant:\n" is the prompt; "b\n" is the assistant's.
  const auto prompt_ids = tok.encode("user:\na\nassistant:\n", false);
  CHECK(ok.ids == tok.encode("user:\na\nassistant:\nb\n", false));
  CHECK(std::count(ok.mask.begin(), ok.mask.end(), 0) == std::ptrdiff_t(prompt_ids.size()));
  // No template at all.
  const ExampleEncoder none(tok, nullptr, false);
  CHECK(error_of([&] { none.encode(good, w); }).find("data.jsonl:7: a messages example needs a chat template") == 0);
  // A generation prompt the full conversation does not continue: no exact mask.
  const ChatTemplate differs("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                             "{% if add_generation_prompt %}{{ ' PROMPT:' }}{% endif %}");
  const ExampleEncoder d(tok, &differs, false);
  const Example two = parse_example(R"({"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}]})", w);
  CHECK(error_of([&] { d.encode(two, w); }).find("data.jsonl:7: message 1: the conversation rendered up to it "
                                                 "(with add_generation_prompt) is not a prefix") == 0);
}

TEST_CASE("text data: a file tokenizes line by line, skipping blank lines, with line numbers") {
  const Tokenizer tok = Tokenizer::from_dir(kSmol);
  const auto chat = load_chat_template(kSmol, smol_options());
  const std::string data = "\xEF\xBB\xBF{\"text\": \"one\"}\n\n   \n{\"prompt\": \"Q\", \"completion\": \" A\"}\r\n{\"text\": \"three\"}";
  const io::ExampleSet s = tokenize_examples(data, "d.jsonl", tok, chat.get(), smol_options());
  REQUIRE(s.examples() == 3);
  CHECK(s.lines == std::vector<std::uint64_t>{1, 4, 5});
  CHECK(s.pad_id == *tok.eos_id());
  const std::string bad = "{\"text\": \"a\"}\n\n{\"text\": \"b\"\n";
  CHECK(error_of([&] { tokenize_examples(bad, "d.jsonl", tok, chat.get(), smol_options()); }).find("d.jsonl:3: not JSON") == 0);
  CHECK(error_of([&] { tokenize_examples("\n \n", "d.jsonl", tok, chat.get(), smol_options()); }).find("d.jsonl: no examples") == 0);
  // An example without an exact mask: an error, or left out and counted.
  const ChatTemplate differs("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                             "{% if add_generation_prompt %}{{ ' PROMPT:' }}{% endif %}");
  const std::string mixed = "{\"text\": \"one\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                            "{\"role\": \"assistant\", \"content\": \"b\"}]}\n{\"text\": \"three\"}\n";
  CHECK_THROWS_AS(tokenize_examples(mixed, "d.jsonl", tok, &differs, smol_options()), MaskMismatch);
  DataOptions skip = smol_options();
  skip.skip_mismatched = true;
  const io::ExampleSet kept = tokenize_examples(mixed, "d.jsonl", tok, &differs, skip);
  CHECK(kept.examples() == 2);
  CHECK(kept.lines == std::vector<std::uint64_t>{1, 3});
  CHECK(kept.skipped == 1);
  CHECK(kept.first_skipped.find("d.jsonl:2: message 1:") == 0);
}

TEST_CASE("text data: the cache is reused while nothing changes and rebuilt otherwise") {
  Temp t;
  const fs::path data = t.path / "train.jsonl", cache = t.path / "train.jsonl.lvt-cache.safetensors";
  const fs::path tokdir = t.path / "tok";
  fs::create_directories(tokdir);
  fs::copy_file(kSmol / "tokenizer.json", tokdir / "tokenizer.json");
  fs::copy_file(kSmol / "tokenizer_config.json", tokdir / "tokenizer_config.json");
  write(data, "{\"text\": \"hello world\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
              "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n");
  const DataOptions o = smol_options();
  const LoadedExamples first = load_examples(data, tokdir, o, cache, nullptr);
  CHECK_FALSE(first.from_cache);
  CHECK(first.note.find("no cache yet; wrote") != std::string::npos);
  REQUIRE(fs::exists(cache));
  const LoadedExamples again = load_examples(data, tokdir, o, cache, nullptr);
  CHECK(again.from_cache);
  CHECK(again.note.find("reused the cache") == 0);
  CHECK(again.set.ids == first.set.ids);
  CHECK(again.set.mask == first.set.mask);
  CHECK(again.set.starts == first.set.starts);
  CHECK(again.set.lines == first.set.lines);
  CHECK(again.set.source == data.string());
  // --train-on-prompt changes the masks: a rebuild.
  const LoadedExamples every = load_examples(data, tokdir, smol_options(true), cache, nullptr);
  CHECK_FALSE(every.from_cache);
  CHECK(every.note.find("changed") != std::string::npos);
  CHECK(every.set.mask != first.set.mask);
  // Data bytes, tokenizer files and the chat template are part of the key.
  CHECK(load_examples(data, tokdir, o, cache, nullptr).note.find("changed") != std::string::npos);
  CHECK(load_examples(data, tokdir, o, cache, nullptr).from_cache);
  write(data, "{\"text\": \"hello world!\"}\n");
  CHECK_FALSE(load_examples(data, tokdir, o, cache, nullptr).from_cache);
  CHECK(load_examples(data, tokdir, o, cache, nullptr).from_cache);
  std::string cfg = read_file_bytes(tokdir / "tokenizer_config.json");
  write(tokdir / "tokenizer_config.json", cfg.insert(1, "\"model_max_length\": 512, "));
  CHECK_FALSE(load_examples(data, tokdir, o, cache, nullptr).from_cache);
  DataOptions other = o;
  other.chat_template = kText / "templates" / "qwen2.5.jinja";
  CHECK_FALSE(load_examples(data, tokdir, other, cache, nullptr).from_cache);
  // Without a cache path nothing is written.
  const fs::path none = t.path / "none.safetensors";
  CHECK_FALSE(load_examples(data, tokdir, o, fs::path(), nullptr).from_cache);
  CHECK_FALSE(fs::exists(none));
}

TEST_CASE("text data: an error leaves the old cache and no partial file") {
  Temp t;
  const fs::path data = t.path / "train.jsonl", cache = t.path / "c.safetensors";
  write(data, "{\"text\": \"a\"}\n");
  load_examples(data, kSmol, smol_options(), cache, nullptr);
  const std::string before = read_file_bytes(cache);
  write(data, "{\"text\": \"a\"}\n{\"messages\": [{\"role\": \"user\"}]}\n");
  CHECK(error_of([&] { load_examples(data, kSmol, smol_options(), cache, nullptr); })
            .find(data.string() + ":2: messages[0]: message without \"content\"") == 0);
  CHECK(read_file_bytes(cache) == before);
  int files = 0;
  for (auto& e : fs::directory_iterator(t.path)) files += e.is_regular_file();
  CHECK(files == 2);  // the data and the old cache, no temporary
  CHECK(error_of([&] { load_examples(data, t.path, smol_options(), cache, nullptr); }).find("no tokenizer.json") != std::string::npos);
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
