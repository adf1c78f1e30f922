// `lvt tokenize`: a tokenizer folder as a JSONL filter on stdin/stdout: text → ids, ids → text,
// a conversation → its chat-template rendering and ids.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/text/training_data.hpp"
#include "options.hpp"

namespace {

const char* tokenize_help =
    "usage: lvt tokenize --tokenizer DIR [--add-special] < lines of {\"text\": ...}\n"
    "       lvt tokenize --tokenizer DIR --decode [--skip-special] < lines of {\"ids\": [...]}\n"
    "       lvt tokenize --tokenizer DIR --chat [--add-generation-prompt] < lines of {\"messages\": [...]}\n\n"
    "Reads JSON lines on stdin and writes one JSON line per input line on stdout (a blank line\n"
    "stays blank). DIR holds tokenizer.json (and tokenizer_config.json), as a Hugging Face model\n"
    "folder does, or is a .gguf file (its tokenizer metadata and chat template); the ids are what\n"
    "transformers' AutoTokenizer gives (gguf_file= for a .gguf file).\n\n"
    "  --tokenizer DIR         the tokenizer folder or .gguf file (required)\n"
    "  --add-special           encode with the post-processor's special tokens (bos, ...)\n"
    "  --decode                ids → {\"text\": ...}\n"
    "  --skip-special          with --decode: leave special tokens out of the text\n"
    "  --chat                  {\"messages\": [...]} → {\"text\": rendering, \"ids\": [...]} with the\n"
    "                          chat template (ids without added special tokens, as\n"
    "                          apply_chat_template(tokenize=True) gives them)\n"
    "  --add-generation-prompt with --chat: end with the assistant's generation prompt\n"
    "  --chat-template FILE    with --chat: this template (.jinja, or a tokenizer_config.json)\n"
    "                          instead of DIR's\n";

}  // namespace

int lvt_cmd_tokenize(int argc, char** argv) {
  using namespace lvt;
  using nlohmann::json;
  const cli::Args a = cli::parse_args(argc, argv,
                                      {"--add-special", "--decode", "--skip-special", "--chat",
                                       "--add-generation-prompt", "--help"},
                                      {"--tokenizer", "--chat-template"});
  if (a.has("--help")) {
    std::printf("%s", tokenize_help);
    return 0;
  }
  if (!a.positional.empty()) throw Error("unexpected argument '" + a.positional[0] + "'");
  if (!a.has("--tokenizer")) throw Error("--tokenizer DIR is required (a folder with tokenizer.json, or a .gguf file)");
  const bool decode = a.has("--decode"), chat = a.has("--chat");
  if (decode && chat) throw Error("--decode and --chat exclude each other");
  if (a.has("--add-generation-prompt") && !chat) throw Error("--add-generation-prompt needs --chat");
  if (a.has("--chat-template") && !chat) throw Error("--chat-template needs --chat");
  if (a.has("--skip-special") && !decode) throw Error("--skip-special needs --decode");
  if (a.has("--add-special") && (decode || chat))
    throw Error("--add-special is for encoding text (a chat template writes its own special tokens)");
  const std::filesystem::path dir = a.get("--tokenizer");
  if (!text::is_gguf_file(dir) && !text::is_tokenizer_source(dir))  // a .gguf says what it lacks
    throw Error("--tokenizer '" + dir.string() + "': no tokenizer.json there (a folder or a .gguf file)");
  const text::Tokenizer tok = text::load_tokenizer(dir);
  std::unique_ptr<text::ChatTemplate> tmpl;
  if (chat) {
    text::DataOptions o;
    if (a.has("--chat-template")) o.chat_template = a.get("--chat-template");
    tmpl = text::load_chat_template(dir, o);
    if (!tmpl)
      throw Error("--chat: " + (text::is_gguf_file(dir) ? dir.string() + " has no tokenizer.chat_template"
                                                        : (dir / "tokenizer_config.json").string() + " has no \"chat_template\"") +
                  " (give --chat-template FILE)");
  }

  std::ios::sync_with_stdio(false);
  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    const std::string where = "stdin:" + std::to_string(n);
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      std::cout << '\n';
      continue;
    }
    if (auto bad = text::utf8_first_invalid(line); bad != std::string::npos)
      throw Error(where + ": invalid UTF-8 (byte " + std::to_string(bad + 1) + " of the line)");
    const text::OrderedJson j = text::OrderedJson::parse(line, nullptr, false);
    if (j.is_discarded()) throw Error(where + ": not JSON");
    auto field = [&](const char* key) -> const text::OrderedJson& {
      if (!j.is_object() || !j.contains(key))
        throw Error(where + ": expected an object with \"" + key + "\"");
      return j[key];
    };
    json out;
    try {
      if (decode) {
        const auto& v = field("ids");
        if (!v.is_array()) throw Error(where + ": \"ids\" must be an array of token ids");
        std::vector<std::int32_t> ids;
        for (std::size_t i = 0; i < v.size(); ++i) {
          if (!v[i].is_number_integer() || v[i].get<std::int64_t>() < 0 ||
              std::uint64_t(v[i].get<std::int64_t>()) >= tok.vocab_size() ||
              !tok.id_to_token(std::int32_t(v[i].get<std::int64_t>())))
            throw Error(where + ": ids[" + std::to_string(i) + "] is " + v[i].dump() +
                        ", not a token id of the tokenizer (vocab size " + std::to_string(tok.vocab_size()) + ")");
          ids.push_back(std::int32_t(v[i].get<std::int64_t>()));
        }
        out["text"] = tok.decode(ids, a.has("--skip-special"));
      } else if (chat) {
        const auto& m = field("messages");
        if (!m.is_array()) throw Error(where + ": \"messages\" must be an array");
        text::detail::check_messages(m, where, "messages");
        text::OrderedJson extra = text::OrderedJson::object();
        if (j.contains("tools") && !j["tools"].is_null()) extra["tools"] = j["tools"];
        std::string rendered;
        try {
          rendered = tmpl->render(m, a.has("--add-generation-prompt"), extra);
        } catch (const text::jinja::TemplateRaised& e) {
          throw Error(where + ": chat template: " + e.what());
        }
        out["text"] = rendered;
        out["ids"] = tok.encode(rendered, false);
      } else {
        const auto& t = field("text");
        if (!t.is_string()) throw Error(where + ": \"text\" must be a string");
        out["ids"] = tok.encode(t.get<std::string>(), a.has("--add-special"));
      }
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind(where, 0) == 0) throw;
      throw Error(where + ": " + what);
    }
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
  }
  std::cout.flush();
  return 0;
}
