#pragma once
// Hugging Face config.json -> lvt::ModelConfig, for model_type llama, mistral, qwen2 and phi3.
// Every error names the file and the config.json field. Defaults for absent optional fields are
// the ones transformers' own config classes use (LlamaConfig, MistralConfig, Qwen2Config,
// Phi3Config), so a file the Hub accepts reads the same here.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/model/config.hpp"

namespace lvt::io {

namespace detail_cfg {

inline const char* json_type(const nlohmann::json& v) { return v.type_name(); }

[[noreturn]] inline void field_error(const std::string& source, const std::string& field,
                                     const std::string& what) {
  throw Error(source + ": field '" + field + "': " + what);
}

// A present, non-null member or nullptr.
inline const nlohmann::json* member(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

inline int get_int(const nlohmann::json& j, const char* key, const std::string& source,
                   const std::string& prefix = "") {
  const nlohmann::json* v = member(j, key);
  if (!v) field_error(source, prefix + key, "missing (required)");
  // JSON writers sometimes print integral values as 32.0; accept those, reject 2.5.
  if (v->is_number_integer()) {
    const auto x = v->get<std::int64_t>();
    if (x < -2147483647 || x > 2147483647) field_error(source, prefix + key, "out of int range");
    return int(x);
  }
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (d == std::floor(d) && std::fabs(d) < 2147483647.0) return int(d);
    field_error(source, prefix + key, "expected an integer, got " + v->dump());
  }
  field_error(source, prefix + key, std::string("expected an integer, got ") + json_type(*v));
}

inline int get_int_or(const nlohmann::json& j, const char* key, int fallback,
                      const std::string& source, const std::string& prefix = "") {
  return member(j, key) ? get_int(j, key, source, prefix) : fallback;
}

inline double get_num(const nlohmann::json& j, const char* key, const std::string& source,
                      const std::string& prefix = "") {
  const nlohmann::json* v = member(j, key);
  if (!v) field_error(source, prefix + key, "missing (required)");
  if (!v->is_number()) field_error(source, prefix + key,
                                   std::string("expected a number, got ") + json_type(*v));
  const double d = v->get<double>();
  if (!std::isfinite(d)) field_error(source, prefix + key, "not finite");
  return d;
}

inline double get_num_or(const nlohmann::json& j, const char* key, double fallback,
                         const std::string& source, const std::string& prefix = "") {
  return member(j, key) ? get_num(j, key, source, prefix) : fallback;
}

inline bool get_bool_or(const nlohmann::json& j, const char* key, bool fallback,
                        const std::string& source) {
  const nlohmann::json* v = member(j, key);
  if (!v) return fallback;
  if (!v->is_boolean())
    field_error(source, key, std::string("expected true/false, got ") + json_type(*v));
  return v->get<bool>();
}

inline std::string get_string(const nlohmann::json& j, const char* key, const std::string& source,
                              const std::string& prefix = "") {
  const nlohmann::json* v = member(j, key);
  if (!v) field_error(source, prefix + key, "missing (required)");
  if (!v->is_string())
    field_error(source, prefix + key, std::string("expected a string, got ") + json_type(*v));
  return v->get<std::string>();
}

inline bool arch_from_model_type(const std::string& t, Arch& a) {
  if (t == "llama") a = Arch::llama;
  else if (t == "mistral") a = Arch::mistral;
  else if (t == "qwen2") a = Arch::qwen2;
  else if (t == "phi3") a = Arch::phi3;
  else return false;
  return true;
}

inline bool arch_from_class(const std::string& t, Arch& a) {
  if (t == "LlamaForCausalLM") a = Arch::llama;
  else if (t == "MistralForCausalLM") a = Arch::mistral;
  else if (t == "Qwen2ForCausalLM") a = Arch::qwen2;
  else if (t == "Phi3ForCausalLM") a = Arch::phi3;
  else return false;
  return true;
}

}  // namespace detail_cfg

// `source` names the file (or other origin) in every error message.
inline ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source) {
  using namespace detail_cfg;
  if (!j.is_object())
    throw Error(source + ": expected a JSON object at the top level, got " +
                std::string(j.type_name()));
  ModelConfig c{};

  // model_type decides; `architectures` is the fallback for files without it.
  if (member(j, "model_type")) {
    const std::string t = get_string(j, "model_type", source);
    if (!arch_from_model_type(t, c.arch))
      field_error(source, "model_type",
                  "unknown model_type '" + t + "' (lvt reads llama, mistral, qwen2, phi3)");
  } else if (const nlohmann::json* a = member(j, "architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
      field_error(source, "architectures", "expected a non-empty array of strings");
    const std::string t = (*a)[0].get<std::string>();
    if (!arch_from_class(t, c.arch))
      field_error(source, "architectures",
                  "unknown architecture '" + t +
                      "' (lvt reads LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                      "Phi3ForCausalLM)");
  } else {
    field_error(source, "model_type", "missing (required; or give 'architectures')");
  }

  c.hidden = get_int(j, "hidden_size", source);
  c.layers = get_int(j, "num_hidden_layers", source);
  c.heads = get_int(j, "num_attention_heads", source);
  c.ffn = get_int(j, "intermediate_size", source);
  c.vocab = get_int(j, "vocab_size", source);
  c.kv_heads = get_int_or(j, "num_key_value_heads", c.heads, source);
  if (c.heads <= 0) field_error(source, "num_attention_heads", "must be positive");
  if (member(j, "head_dim")) {
    c.head_dim = get_int(j, "head_dim", source);
  } else {
    if (c.hidden % c.heads != 0)
      field_error(source, "hidden_size",
                  "not a multiple of num_attention_heads and no head_dim given");
    c.head_dim = c.hidden / c.heads;
  }
  c.tied_embeddings = get_bool_or(j, "tie_word_embeddings", false, source);
  c.rope_theta = get_num_or(j, "rope_theta", 10000.0, source);
  c.norm_eps = get_num_or(j, "rms_norm_eps", c.arch == Arch::phi3 ? 1e-5 : 1e-6, source);
  int default_max = 2048;
  if (c.arch == Arch::mistral) default_max = 4096 * 32;
  if (c.arch == Arch::qwen2) default_max = 32768;
  if (c.arch == Arch::phi3) default_max = 4096;
  c.max_position = get_int_or(j, "max_position_embeddings", default_max, source);
  c.partial_rotary_factor = get_num_or(j, "partial_rotary_factor", 1.0, source);

  // Biases: qwen2 always has q/k/v biases; llama's attention_bias would add an o_proj bias too,
  // which the lvt block does not carry.
  c.qkv_bias = c.arch == Arch::qwen2;
  if (get_bool_or(j, "attention_bias", false, source))
    field_error(source, "attention_bias", "true is not supported (lvt has no o_proj bias)");
  if (get_bool_or(j, "mlp_bias", false, source))
    field_error(source, "mlp_bias", "true is not supported (lvt's MLP has no biases)");
  if (member(j, "hidden_act")) {
    const std::string act = get_string(j, "hidden_act", source);
    if (act != "silu")
      field_error(source, "hidden_act", "'" + act + "' is not supported (lvt's MLP is SwiGLU: silu)");
  }

  // phi3 keeps original_max_position_embeddings at the top level, llama3 inside rope_scaling.
  // transformers 5 writes `rope_parameters` instead (rope_type, rope_theta and the scaling
  // fields in one object); rope_scaling, when also present, wins.
  c.rope_original_max_position = get_int_or(j, "original_max_position_embeddings", 0, source);
  const char* rope_key = member(j, "rope_scaling") ? "rope_scaling" : "rope_parameters";
  const nlohmann::json* rope_params = member(j, "rope_parameters");
  if (rope_params && rope_params->is_object() && member(*rope_params, "rope_theta") &&
      !member(j, "rope_theta"))
    c.rope_theta = get_num(*rope_params, "rope_theta", source, "rope_parameters.");
  if (const nlohmann::json* rs = member(j, rope_key)) {
    if (!rs->is_object())
      field_error(source, rope_key,
                  std::string("expected an object or null, got ") + rs->type_name());
    const std::string p = std::string(rope_key) + ".";
    std::string type;
    if (member(*rs, "rope_type")) type = get_string(*rs, "rope_type", source, p);
    else if (member(*rs, "type")) type = get_string(*rs, "type", source, p);
    else field_error(source, p + "rope_type", "missing (required; or 'type')");
    if (type == "default") {
      c.rope_scaling = RopeScaling::none;
    } else if (type == "linear") {
      c.rope_scaling = RopeScaling::linear;
      c.rope_factor = get_num(*rs, "factor", source, p);
    } else if (type == "llama3") {
      c.rope_scaling = RopeScaling::llama3;
      c.rope_factor = get_num(*rs, "factor", source, p);
      c.rope_low_freq_factor = get_num(*rs, "low_freq_factor", source, p);
      c.rope_high_freq_factor = get_num(*rs, "high_freq_factor", source, p);
      c.rope_original_max_position = get_int(*rs, "original_max_position_embeddings", source, p);
    } else if (type == "longrope" || type == "su") {  // "su" is longrope's earlier name
      c.rope_scaling = RopeScaling::longrope;
      c.rope_factor = get_num_or(*rs, "factor", 1.0, source, p);
      c.rope_original_max_position = get_int_or(*rs, "original_max_position_embeddings",
                                                c.rope_original_max_position, source, p);
      for (const char* k : {"long_factor", "short_factor"}) {
        const nlohmann::json* f = member(*rs, k);
        if (!f) field_error(source, p + k, "missing (required for longrope)");
        if (!f->is_array() || int(f->size()) * 2 != int(c.head_dim * c.partial_rotary_factor))
          field_error(source, p + k,
                      "expected an array of head_dim * partial_rotary_factor / 2 numbers");
        for (const auto& x : *f)
          if (!x.is_number()) field_error(source, p + k, "expected numbers only");
      }
      if (c.rope_original_max_position <= 0)
        field_error(source, "original_max_position_embeddings", "missing (required for longrope)");
    } else {
      field_error(source, p + "rope_type",
                  "unknown rope type '" + type + "' (lvt reads default, linear, llama3, longrope)");
    }
  }

  // Bounds far above any real model keep every size product of ModelConfig (params(), the
  // planner's byte counts) inside int64.
  struct Bound {
    const char* field;
    std::int64_t value, max;
  } bounds[] = {{"hidden_size", c.hidden, 1 << 24},         {"intermediate_size", c.ffn, 1 << 24},
                {"vocab_size", c.vocab, 1 << 24},           {"num_hidden_layers", c.layers, 4096},
                {"num_attention_heads", c.heads, 4096},     {"num_key_value_heads", c.kv_heads, 4096},
                {"head_dim", c.head_dim, 4096},             {"max_position_embeddings", c.max_position, 1 << 28},
                {"original_max_position_embeddings", c.rope_original_max_position, 1 << 28}};
  for (const auto& b : bounds)
    if (b.value > b.max)
      field_error(source, b.field, std::to_string(b.value) + " exceeds lvt's limit of " +
                                       std::to_string(b.max));
  if (std::int64_t(c.heads) * c.head_dim > (1 << 24))
    field_error(source, "num_attention_heads", "num_attention_heads * head_dim exceeds 2^24");
  if (const char* why = validate(c)) throw Error(source + ": " + why);
  return c;
}

// The config.json of a description, as transformers writes one for its model_type: what
// parse_hf_config reads back into the same ModelConfig (tested). longrope's per-dimension
// factor lists are not part of ModelConfig, so such a description has no config.json here.
inline nlohmann::json hf_config_json(const ModelConfig& c) {
  static const char* classes[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM"};
  if (c.rope_scaling == RopeScaling::longrope)
    throw Error("hf_config_json: longrope RoPE scaling needs its factor lists, which the description does not hold");
  nlohmann::json j = nlohmann::json::object();
  j["architectures"] = {classes[int(c.arch)]};
  j["model_type"] = arch_name(c.arch);
  j["hidden_size"] = c.hidden;
  j["intermediate_size"] = c.ffn;
  j["num_hidden_layers"] = c.layers;
  j["num_attention_heads"] = c.heads;
  j["num_key_value_heads"] = c.kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position;
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  if (c.partial_rotary_factor != 1.0) j["partial_rotary_factor"] = c.partial_rotary_factor;
  if (c.rope_original_max_position > 0 && c.rope_scaling != RopeScaling::llama3)
    j["original_max_position_embeddings"] = c.rope_original_max_position;
  if (c.rope_scaling == RopeScaling::none) {
    j["rope_scaling"] = nullptr;
  } else if (c.rope_scaling == RopeScaling::linear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_factor}};
  } else {
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", c.rope_factor},
                         {"low_freq_factor", c.rope_low_freq_factor}, {"high_freq_factor", c.rope_high_freq_factor},
                         {"original_max_position_embeddings", c.rope_original_max_position}};
  }
  return j;
}

inline ModelConfig read_hf_config(const std::filesystem::path& config_json) {
  const std::string source = config_json.string();
  std::ifstream f(config_json, std::ios::binary);
  if (!f) throw Error(source + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(source + ": not JSON (parse error)");
  return parse_hf_config(j, source);
}

}  // namespace lvt::io
