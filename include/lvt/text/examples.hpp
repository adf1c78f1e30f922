#pragma once
// One line of an instruction-tuning JSONL file → token ids + loss mask, as TRL's SFTTrainer
// (trl/trainer/sft_trainer.py: add_eos, tokenize) and transformers' apply_chat_template make them.
//
// Formats (one JSON object per line; other keys are ignored):
//   {"text": s}                                  loss on every token
//   {"prompt": s, "completion": s}               loss on the completion
//   {"instruction": s, "input": s, "output": s}  Stanford Alpaca: the prompt is Alpaca's text
//                                                (PROMPT_DICT of tatsu-lab/stanford_alpaca
//                                                train.py), the completion is the output
//   {"messages": [{"role", "content"}, ...]}      loss on the assistant messages, rendered with the
//                                                chat template
//   {"prompt": [messages], "completion": [messages]}  conversational prompt-completion
//   (+ "tools": [...] for the chat template)
//
// Special tokens: text and prompt-completion are encoded with add_special_tokens (the
// tokenizer's post-processor adds bos where it does), and the eos token's text is appended to
// the text / completion unless it already ends with it (TRL's add_eos), so the model learns to
// stop. Chat renders are encoded without special tokens, as apply_chat_template(tokenize=True)
// does: only the template's own tokens (its bos_token, if it prints one).
//
// The mask is exact or the example is an error (no offsets are needed): the prompt is encoded
// alone and must be a prefix of the whole example's ids; for messages, the conversation up to
// each assistant message rendered with add_generation_prompt, and up to and including it, must
// both be prefixes of the whole conversation's ids, and the tokens between them are the
// assistant's (its end-of-turn tokens included). `train_on_prompt` puts every token in the loss.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/text/chat_template.hpp"
#include "lvt/text/tokenizer.hpp"
#include "lvt/text/unicode.hpp"

namespace lvt::text {

enum class ExampleFormat : std::uint8_t { text, prompt_completion, alpaca, messages, chat_prompt_completion };

inline const char* format_name(ExampleFormat f) {
  switch (f) {
    case ExampleFormat::text: return "text";
    case ExampleFormat::prompt_completion: return "prompt-completion";
    case ExampleFormat::alpaca: return "alpaca";
    case ExampleFormat::messages: return "messages";
    case ExampleFormat::chat_prompt_completion: return "chat prompt-completion";
  }
  return "?";
}

// Stanford Alpaca's prompts (tatsu-lab/stanford_alpaca train.py, PROMPT_DICT); the one with
// input is used when "input" is a non-empty string.
inline constexpr std::string_view alpaca_prompt_input =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
inline constexpr std::string_view alpaca_prompt_no_input =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n";

struct Example {
  ExampleFormat format = ExampleFormat::text;
  std::string text;                 // text
  std::string prompt, completion;   // prompt-completion and alpaca
  OrderedJson messages;             // messages; chat prompt-completion: prompt then completion
  std::size_t prompt_messages = 0;  // chat prompt-completion: the prompt's share of `messages`
  OrderedJson tools;                // null unless given
};

namespace detail {

inline std::string keys_of(const OrderedJson& j) {
  std::string s;
  std::size_t n = 0;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (n++ == 6) return s + ", ...";
    s += (s.empty() ? "" : ", ") + ("\"" + it.key() + "\"");
  }
  return s.empty() ? "none" : s;
}

inline const std::string& string_field(const OrderedJson& j, const char* key, const std::string& where) {
  const OrderedJson& v = j.at(key);
  if (!v.is_string())
    throw Error(where + ": field '" + key + "' must be a string, not " + std::string(v.type_name()));
  return v.get_ref<const std::string&>();
}

inline void check_messages(const OrderedJson& m, const std::string& where, const std::string& field) {
  if (!m.is_array() || m.empty())
    throw Error(where + ": field '" + field + "' must be a non-empty array of {\"role\", \"content\"}");
  for (std::size_t i = 0; i < m.size(); ++i) {
    const std::string at = where + ": " + field + "[" + std::to_string(i) + "]";
    const OrderedJson& x = m[i];
    if (!x.is_object()) throw Error(at + ": a message must be an object {\"role\", \"content\"}");
    auto role = x.find("role");
    if (role == x.end()) throw Error(at + ": message without \"role\"");
    if (!role->is_string()) throw Error(at + ": \"role\" must be a string");
    auto content = x.find("content");
    const bool tool_call = x.contains("tool_calls");
    if (content == x.end() && !tool_call) throw Error(at + ": message without \"content\"");
    if (content != x.end() && !content->is_string() && !content->is_array() &&
        !(content->is_null() && tool_call))
      throw Error(at + ": \"content\" must be a string or a list of parts, not " +
                  std::string(content->type_name()));
  }
}

}  // namespace detail

// Recognizes one line; errors start with `where` (FILE:LINE).
inline Example parse_example(std::string_view line, const std::string& where) {
  if (auto bad = utf8_first_invalid(line); bad != std::string_view::npos)
    throw Error(where + ": invalid UTF-8 (byte " + std::to_string(bad + 1) + " of the line)");
  OrderedJson j;
  try {
    j = OrderedJson::parse(line.begin(), line.end());
  } catch (const OrderedJson::exception& e) {
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    throw Error(where + ": not JSON (" + what + ")");
  }
  if (!j.is_object())
    throw Error(where + ": expected a JSON object (\"text\", \"prompt\" + \"completion\", "
                "\"messages\" or \"instruction\" + \"output\"), got " + std::string(j.type_name()));
  Example e;
  if (auto t = j.find("tools"); t != j.end() && !t->is_null()) {
    if (!t->is_array()) throw Error(where + ": field 'tools' must be an array");
    e.tools = *t;
  }
  if (j.contains("messages")) {
    e.format = ExampleFormat::messages;
    detail::check_messages(j["messages"], where, "messages");
    e.messages = j["messages"];
  } else if (j.contains("prompt") || j.contains("completion")) {
    if (!j.contains("prompt")) throw Error(where + ": field 'completion' without 'prompt'");
    if (!j.contains("completion")) throw Error(where + ": field 'prompt' without 'completion'");
    if (j["prompt"].is_array() || j["completion"].is_array()) {
      e.format = ExampleFormat::chat_prompt_completion;
      detail::check_messages(j["prompt"], where, "prompt");
      detail::check_messages(j["completion"], where, "completion");
      e.messages = j["prompt"];
      e.prompt_messages = e.messages.size();
      for (const auto& m : j["completion"]) e.messages.push_back(m);
    } else {
      e.format = ExampleFormat::prompt_completion;
      e.prompt = detail::string_field(j, "prompt", where);
      e.completion = detail::string_field(j, "completion", where);
    }
  } else if (j.contains("instruction") || j.contains("output")) {
    if (!j.contains("instruction")) throw Error(where + ": field 'output' without 'instruction'");
    if (!j.contains("output")) throw Error(where + ": field 'instruction' without 'output'");
    e.format = ExampleFormat::alpaca;
    const std::string& instruction = detail::string_field(j, "instruction", where);
    std::string input;
    if (auto in = j.find("input"); in != j.end() && !in->is_null()) input = detail::string_field(j, "input", where);
    e.prompt = std::string(input.empty() ? alpaca_prompt_no_input : alpaca_prompt_input) + instruction;
    if (!input.empty()) e.prompt += "\n\n### Input:\n" + input;
    e.prompt += "\n\n### Response:";
    e.completion = detail::string_field(j, "output", where);
  } else if (j.contains("text")) {
    e.format = ExampleFormat::text;
    e.text = detail::string_field(j, "text", where);
  } else {
    throw Error(where + ": no known format: expected \"text\", \"prompt\" + \"completion\", "
                "\"messages\" or \"instruction\" + \"output\" (the object has " + detail::keys_of(j) + ")");
  }
  return e;
}

// The prompt's (or a conversation prefix's) tokens are not a prefix of the whole example's: no
// exact loss mask exists. An Error, so callers may skip such examples and count them instead.
struct MaskMismatch : Error {
  using Error::Error;
};

struct EncodedExample {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> mask;  // 1: the token is a training target
};

class ExampleEncoder {
 public:
  // `chat` may be null: then a messages example is an error.
  ExampleEncoder(const Tokenizer& tok, const ChatTemplate* chat, bool train_on_prompt)
      : tok_(&tok), chat_(chat), train_on_prompt_(train_on_prompt) {
    if (auto id = tok.eos_id())
      if (auto s = tok.id_to_token(*id)) eos_text_ = *s;
  }

  // The text appended to texts and completions ("" when the tokenizer has no eos token).
  const std::string& eos_text() const { return eos_text_; }

  EncodedExample encode(const Example& e, const std::string& where) const {
    try {
      switch (e.format) {
        case ExampleFormat::text: {
          EncodedExample out;
          out.ids = tok_->encode(with_eos(e.text), true);
          out.mask.assign(out.ids.size(), 1);
          return out;
        }
        case ExampleFormat::prompt_completion:
        case ExampleFormat::alpaca: return encode_completion(e, where);
        case ExampleFormat::messages:
        case ExampleFormat::chat_prompt_completion: return encode_chat(e, where);
      }
    } catch (const jinja::TemplateRaised& x) {
      throw Error(where + ": chat template: " + x.what());
    } catch (const MaskMismatch&) {
      throw;
    } catch (const std::exception& x) {
      const std::string what = x.what();
      if (what.rfind(where, 0) == 0) throw;
      throw Error(where + ": " + what);
    }
    return {};
  }

 private:
  std::string with_eos(const std::string& s) const {
    if (eos_text_.empty() || (s.size() >= eos_text_.size() &&
                              s.compare(s.size() - eos_text_.size(), eos_text_.size(), eos_text_) == 0))
      return s;
    return s + eos_text_;
  }

  // Index of the first difference when `prefix` is not a prefix of `full`, else npos.
  static std::size_t mismatch(const std::vector<std::int32_t>& prefix, const std::vector<std::int32_t>& full) {
    for (std::size_t i = 0; i < prefix.size(); ++i)
      if (i >= full.size() || prefix[i] != full[i]) return i;
    return std::string::npos;
  }

  EncodedExample encode_completion(const Example& e, const std::string& where) const {
    EncodedExample out;
    out.ids = tok_->encode(e.prompt + with_eos(e.completion), true);
    if (train_on_prompt_) {
      out.mask.assign(out.ids.size(), 1);
      return out;
    }
    const std::vector<std::int32_t> p = tok_->encode(e.prompt, true);
    if (auto d = mismatch(p, out.ids); d != std::string::npos)
      throw MaskMismatch(where + ": the prompt's " + std::to_string(p.size()) +
                  " tokens are not a prefix of prompt + completion's tokens (they differ at token " +
                  std::to_string(d) + ": the tokenizer merges text across the boundary, e.g. a "
                  "prompt ending in a space); the loss mask could not be exact");
    out.mask.assign(out.ids.size(), 1);
    std::fill(out.mask.begin(), out.mask.begin() + std::ptrdiff_t(p.size()), std::uint8_t(0));
    return out;
  }

  std::vector<std::int32_t> render_ids(const OrderedJson& messages, std::size_t n, bool generation_prompt,
                                       const OrderedJson& extra) const {
    if (n == 0) return {};
    OrderedJson head = OrderedJson::array();
    for (std::size_t i = 0; i < n; ++i) head.push_back(messages[i]);
    return tok_->encode(chat_->render(head, generation_prompt, extra), false);
  }

  EncodedExample encode_chat(const Example& e, const std::string& where) const {
    if (!chat_)
      throw Error(where + ": a " + std::string(format_name(e.format)) + " example needs a chat template "
                  "(the tokenizer's tokenizer_config.json has no \"chat_template\"; give one)");
    OrderedJson extra = OrderedJson::object();
    if (!e.tools.is_null()) extra["tools"] = e.tools;
    EncodedExample out;
    out.ids = render_ids(e.messages, e.messages.size(), false, extra);
    out.mask.assign(out.ids.size(), train_on_prompt_ ? 1 : 0);
    if (train_on_prompt_) return out;
    auto check = [&](const std::vector<std::int32_t>& p, std::size_t i, const char* what) {
      if (auto d = mismatch(p, out.ids); d != std::string::npos)
        throw MaskMismatch(where + ": message " + std::to_string(i) + ": the conversation rendered " + what +
                    " is not a prefix of the whole conversation's tokens (they differ at token " +
                    std::to_string(d) + "); the loss mask could not be exact");
    };
    if (e.format == ExampleFormat::chat_prompt_completion) {
      const std::vector<std::int32_t> p = render_ids(e.messages, e.prompt_messages, true, extra);
      check(p, e.prompt_messages, "up to the completion (with add_generation_prompt)");
      std::fill(out.mask.begin() + std::ptrdiff_t(p.size()), out.mask.end(), std::uint8_t(1));
      return out;
    }
    for (std::size_t i = 0; i < e.messages.size(); ++i) {
      if (e.messages[i]["role"] != "assistant") continue;
      const std::vector<std::int32_t> p = render_ids(e.messages, i, true, extra);
      check(p, i, "up to it (with add_generation_prompt)");
      const std::vector<std::int32_t> q = i + 1 == e.messages.size() ? out.ids : render_ids(e.messages, i + 1, false, extra);
      check(q, i, "up to and including it");
      if (q.size() < p.size())
        throw MaskMismatch(where + ": message " + std::to_string(i) + ": the generation prompt renders longer "
                    "than the assistant message itself; the loss mask could not be exact");
      std::fill(out.mask.begin() + std::ptrdiff_t(p.size()), out.mask.begin() + std::ptrdiff_t(q.size()),
                std::uint8_t(1));
    }
    return out;
  }

  const Tokenizer* tok_;
  const ChatTemplate* chat_;
  bool train_on_prompt_;
  std::string eos_text_;
};

}  // namespace lvt::text
