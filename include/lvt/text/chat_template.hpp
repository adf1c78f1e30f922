#pragma once
// A tokenizer_config.json chat template rendered as transformers 5.23's apply_chat_template
// (tokenize=False) renders it: the template sees messages (keys whose value is null dropped,
// reasoning aliased to reasoning_content and thinking), tools and documents (none unless given),
// add_generation_prompt, the named special tokens, then any extra variables, which win; globals
// raise_exception, strftime_now, namespace, dict and a tojson that keeps non-ASCII as is.
#include <lvt/text/jinja.hpp>

#include <nlohmann/json.hpp>

#include <ctime>
#include <fstream>
#include <sstream>

namespace lvt::text {

using OrderedJson = nlohmann::ordered_json;

struct Message {
  std::string role;
  std::string content;
};

inline jinja::Value to_value(const OrderedJson& j) {
  using jinja::Value;
  switch (j.type()) {
    case OrderedJson::value_t::null: return Value::none();
    case OrderedJson::value_t::boolean: return Value::from(j.get<bool>());
    case OrderedJson::value_t::number_integer: return Value::from(j.get<std::int64_t>());
    case OrderedJson::value_t::number_unsigned: {
      auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) throw Error("chat template input: integer " + std::to_string(u) + " beyond 64 bits");
      return Value::from(static_cast<std::int64_t>(u));
    }
    case OrderedJson::value_t::number_float: return Value::from(j.get<double>());
    case OrderedJson::value_t::string: return Value::from(j.get<std::string>());
    case OrderedJson::value_t::array: {
      std::vector<Value> items;
      for (auto& x : j) items.push_back(to_value(x));
      return Value::from(std::move(items));
    }
    case OrderedJson::value_t::object: {
      Value d = Value::new_dict();
      for (auto& [k, x] : j.items()) d.dict->set(Value::from(k), to_value(x));
      return d;
    }
    default: throw Error("chat template input: unsupported JSON value (binary or discarded)");
  }
}

class ChatTemplate {
 public:
  // The wall clock for strftime_now (transformers: datetime.now(), local time); tests fix it.
  using Clock = std::function<std::tm()>;

  ChatTemplate(std::string source, std::vector<std::pair<std::string, std::string>> special_tokens = {},
               std::string tool_use_source = {})
      : source_(std::move(source)), tmpl_(source_), special_tokens_(std::move(special_tokens)) {
    if (!tool_use_source.empty()) tool_use_ = std::make_shared<jinja::Template>(tool_use_source);
  }

  // Reads `chat_template` (a string, or a list of {name, template}: "default", or "tool_use"
  // when tools are given, as get_chat_template picks) and the named special tokens.
  static ChatTemplate from_tokenizer_config(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open tokenizer config");
    OrderedJson cfg;
    try { cfg = OrderedJson::parse(in); } catch (const std::exception& e) { throw Error(path + ": invalid JSON: " + e.what()); }
    if (!cfg.is_object() || !cfg.contains("chat_template")) throw Error(path + ": no \"chat_template\" in the tokenizer config");
    const auto& ct = cfg["chat_template"];
    std::string source, tool_use;
    if (ct.is_string()) source = ct.get<std::string>();
    else if (ct.is_array()) {
      for (std::size_t i = 0; i < ct.size(); ++i) {
        const auto& e = ct[i];
        if (!e.is_object() || !e.contains("name") || !e.contains("template") || !e["name"].is_string() || !e["template"].is_string())
          throw Error(path + ": chat_template[" + std::to_string(i) + "] must be {\"name\": string, \"template\": string}");
        if (e["name"] == "default") source = e["template"].get<std::string>();
        if (e["name"] == "tool_use") tool_use = e["template"].get<std::string>();
      }
      if (source.empty()) throw Error(path + ": chat_template has several templates and none named \"default\"");
    } else throw Error(path + ": chat_template must be a string or a list of {name, template}");
    std::vector<std::pair<std::string, std::string>> special;
    auto token_of = [&](const std::string& key, const OrderedJson& v) -> std::optional<std::string> {
      if (v.is_string()) return v.get<std::string>();
      if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
      if (v.is_null()) return std::nullopt;
      throw Error(path + ": " + key + " must be a string or an added token {\"content\": ...}");
    };
    for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
      if (cfg.contains(key))
        if (auto t = token_of(key, cfg[key])) special.emplace_back(key, *t);
    if (cfg.contains("extra_special_tokens") && cfg["extra_special_tokens"].is_object())
      for (auto& [k, v] : cfg["extra_special_tokens"].items())
        if (auto t = token_of("extra_special_tokens." + k, v)) special.emplace_back(k, *t);
    try {
      return ChatTemplate(std::move(source), std::move(special), std::move(tool_use));
    } catch (const Error& e) { throw Error(path + ": " + e.what()); }
  }

  void set_clock(Clock clock) { clock_ = std::move(clock); }
  void set_limits(const jinja::Limits& limits) { limits_ = limits; }
  const std::string& source() const { return source_; }
  const std::vector<std::pair<std::string, std::string>>& special_tokens() const { return special_tokens_; }

  std::string render(const std::vector<Message>& messages, bool add_generation_prompt, const OrderedJson& extra = OrderedJson::object()) const {
    OrderedJson list = OrderedJson::array();
    for (auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
    return render(list, add_generation_prompt, extra);
  }

  // `messages`: a JSON array of message objects (content may be a list of parts, tool_calls, ...);
  // `extra`: tools, documents, enable_thinking, date_string, ... (they override special tokens).
  std::string render(const OrderedJson& messages, bool add_generation_prompt, const OrderedJson& extra = OrderedJson::object()) const {
    using jinja::Value;
    if (!messages.is_array()) throw Error("chat template: messages must be a JSON array");
    if (messages.empty()) throw Error("Cannot apply chat template to an empty conversation. Provide at least one message.");
    if (!extra.is_object()) throw Error("chat template: extra variables must be a JSON object");
    std::vector<Value> msgs;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      if (!m.is_object()) throw Error("chat template: messages[" + std::to_string(i) + "] must be an object");
      OrderedJson clean = OrderedJson::object();
      for (auto& [k, v] : m.items()) if (!v.is_null()) clean[k] = v;
      // _alias_reasoning_fields: {"thinking": r, **message, "reasoning_content": r}
      const OrderedJson* reasoning = nullptr;
      for (const char* key : {"reasoning_content", "thinking", "reasoning"})
        if (clean.contains(key)) { reasoning = &clean[key]; break; }
      if (reasoning) {
        OrderedJson r = *reasoning;
        OrderedJson aliased = OrderedJson::object();
        aliased["thinking"] = r;
        for (auto& [k, v] : clean.items()) aliased[k] = v;
        aliased["thinking"] = clean.contains("thinking") ? clean["thinking"] : r;
        aliased["reasoning_content"] = r;
        clean = std::move(aliased);
      }
      msgs.push_back(to_value(clean));
    }
    const bool has_tools = extra.contains("tools") && !extra["tools"].is_null();
    const jinja::Template& t = has_tools && tool_use_ ? *tool_use_ : tmpl_;
    std::vector<std::pair<std::string, Value>> globals;
    globals.emplace_back("raise_exception", Value::from("raise_exception", [](jinja::CallArgs& a) -> Value {
      const Value* msg = a.get(0, "message");
      throw jinja::TemplateRaised(msg ? jinja::python_str(*msg) : std::string());
    }));
    Clock clock = clock_;
    globals.emplace_back("strftime_now", Value::from("strftime_now", [clock](jinja::CallArgs& a) -> Value {
      const Value* fmt = a.get(0, "format");
      if (!fmt || fmt->kind != jinja::Kind::string) jinja::fail(a.line, "strftime_now(format) needs a format string");
      std::tm tm = clock ? clock() : local_now();
      std::string buf(256 + fmt->string.size() * 8, '\0');
      std::size_t n = fmt->string.empty() ? 0 : std::strftime(buf.data(), buf.size(), fmt->string.c_str(), &tm);
      buf.resize(n);
      return Value::from(std::move(buf));
    }));
    globals.emplace_back("messages", Value::from(std::move(msgs)));
    globals.emplace_back("tools", has_tools ? to_value(extra["tools"]) : Value::none());
    globals.emplace_back("documents", extra.contains("documents") ? to_value(extra["documents"]) : Value::none());
    globals.emplace_back("add_generation_prompt", Value::from(add_generation_prompt));
    for (auto& [k, v] : special_tokens_) globals.emplace_back(k, Value::from(v));
    for (auto& [k, v] : extra.items())
      if (k != "tools" && k != "documents") globals.emplace_back(k, to_value(v));
    return t.render(globals, limits_);
  }

 private:
  static std::tm local_now() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    return tm;
  }

  std::string source_;
  jinja::Template tmpl_;
  std::shared_ptr<jinja::Template> tool_use_;
  std::vector<std::pair<std::string, std::string>> special_tokens_;
  Clock clock_;
  jinja::Limits limits_;
};

}  // namespace lvt::text
