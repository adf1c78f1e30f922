// Model I/O: Hugging Face config.json parsing against the published presets, and every
// bad-input path of the config reader (the message names the file and the field).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "io_test_util.hpp"
#include "lvt/io/hf_config.hpp"
#include "lvt/model/presets.hpp"

using namespace lvt;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {

// config.json of TinyLlama/TinyLlama-1.1B-Chat-v1.0.
const char* tinyllama_json = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 5632,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 22,
  "num_key_value_heads": 4,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.35.0",
  "use_cache": true,
  "vocab_size": 32000
})";

// config.json of meta-llama/Llama-3.2-1B.
const char* llama32_1b_json = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// config.json of meta-llama/Llama-3.1-8B.
const char* llama31_8b_json = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// config.json of Qwen/Qwen2.5-7B.
const char* qwen25_7b_json = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 152064
})";

// config.json of microsoft/Phi-4-mini-instruct. The two 48-number longrope factor lists are
// spliced in by phi4_mini_json() (their values do not enter ModelConfig; the count does).
const char* phi4_mini_template = R"({
  "architectures": ["Phi3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 199999,
  "embd_pdrop": 0.0,
  "eos_token_id": 199999,
  "full_attn_mod": 1,
  "hidden_act": "silu",
  "hidden_size": 3072,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "interpolate_factor": 1,
  "lm_head_bias": false,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "phi3",
  "num_attention_heads": 24,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "original_max_position_embeddings": 4096,
  "pad_token_id": 199999,
  "partial_rotary_factor": 0.75,
  "resid_pdrop": 0.0,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "long_factor": LONG,
    "short_factor": SHORT,
    "type": "longrope"
  },
  "rope_theta": 10000.0,
  "sliding_window": 262144,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0",
  "use_cache": true,
  "vocab_size": 200064
})";

std::string phi4_mini_json() {
  std::string longf = "[", shortf = "[";
  for (int i = 0; i < 48; ++i) {
    if (i) longf += ", ", shortf += ", ";
    longf += std::to_string(1.0 + 0.9 * i);
    shortf += "1.0";
  }
  longf += "]";
  shortf += "]";
  std::string s = phi4_mini_template;
  s.replace(s.find("LONG"), 4, longf);
  s.replace(s.find("SHORT"), 5, shortf);
  return s;
}

ModelConfig parse(const std::string& text, const char* src = "cfg/config.json") {
  return io::parse_hf_config(nlohmann::json::parse(text), src);
}

// Parses `text` with one field changed (JSON merge patch) and returns the error message.
std::string error_of(const std::string& base, const std::string& patch) {
  nlohmann::json j = nlohmann::json::parse(base);
  j.merge_patch(nlohmann::json::parse(patch));
  try {
    io::parse_hf_config(j, "models/x/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("transformers 5's rope_parameters (rope_theta and scaling in one object)") {
  nlohmann::json j = nlohmann::json::parse(llama32_1b_json);
  nlohmann::json rp = j["rope_scaling"];
  rp["rope_theta"] = j["rope_theta"];
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = rp;
  CHECK(parse(j.dump()) == presets::llama_3_2_1b);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1234.0}};
  const ModelConfig d = parse(j.dump());
  CHECK(d.rope_theta == 1234.0);
  CHECK(d.rope_scaling == RopeScaling::none);
  j["rope_parameters"]["rope_type"] = "yarn";
  CHECK_THROWS_WITH(parse(j.dump()), doctest::Contains("rope_parameters.rope_type"));
}

TEST_CASE("config.json of published checkpoints equals the presets") {
  CHECK(parse(tinyllama_json) == presets::tinyllama_1_1b);
  CHECK(parse(llama32_1b_json) == presets::llama_3_2_1b);
  CHECK(parse(llama31_8b_json) == presets::llama_3_1_8b);
  CHECK(parse(qwen25_7b_json) == presets::qwen2_5_7b);
  CHECK(parse(phi4_mini_json()) == presets::phi_4_mini);
  const ModelConfig q = parse(qwen25_7b_json);
  CHECK(q.qkv_bias);
  CHECK(q.arch == Arch::qwen2);
  const ModelConfig p = parse(phi4_mini_json());
  CHECK(p.rotary_dim() == 96);
  CHECK(p.tied_embeddings);
}

TEST_CASE("read_hf_config reads a file; architectures is the fallback for model_type") {
  TempDir d;
  const auto path = d.path / "config.json";
  std::ofstream(path) << llama31_8b_json;
  CHECK(io::read_hf_config(path) == presets::llama_3_1_8b);

  nlohmann::json j = nlohmann::json::parse(tinyllama_json);
  j.erase("model_type");
  CHECK(io::parse_hf_config(j, "x") == presets::tinyllama_1_1b);
  j["architectures"] = {"MistralForCausalLM"};
  CHECK(io::parse_hf_config(j, "x").arch == Arch::mistral);

  // Defaults as transformers has them: kv heads = heads, no rope scaling, eps 1e-6 (llama).
  nlohmann::json m = {{"model_type", "mistral"}, {"hidden_size", 256}, {"num_hidden_layers", 2},
                      {"num_attention_heads", 8}, {"intermediate_size", 512},
                      {"vocab_size", 1000}};
  const ModelConfig c = io::parse_hf_config(m, "x");
  CHECK(c.kv_heads == 8);
  CHECK(c.head_dim == 32);
  CHECK(c.norm_eps == 1e-6);
  CHECK(c.rope_scaling == RopeScaling::none);
  CHECK(c.max_position == 131072);
  m["rope_scaling"] = {{"type", "linear"}, {"factor", 4}};
  CHECK(io::parse_hf_config(m, "x").rope_scaling == RopeScaling::linear);
  CHECK(io::parse_hf_config(m, "x").rope_factor == 4.0);
}

TEST_CASE("config.json errors name the file and the field") {
  const std::string base = llama32_1b_json;
  std::string e;

  e = error_of(base, R"({"hidden_size": null})");
  CHECK(contains(e, "models/x/config.json"));
  CHECK(contains(e, "'hidden_size'"));
  CHECK(contains(e, "missing"));

  e = error_of(base, R"({"num_hidden_layers": "16"})");
  CHECK(contains(e, "'num_hidden_layers'"));
  CHECK(contains(e, "expected an integer"));

  e = error_of(base, R"({"num_attention_heads": 2.5})");
  CHECK(contains(e, "'num_attention_heads'"));

  e = error_of(base, R"({"rope_theta": "big"})");
  CHECK(contains(e, "'rope_theta'"));
  CHECK(contains(e, "expected a number"));

  e = error_of(base, R"({"tie_word_embeddings": 1})");
  CHECK(contains(e, "'tie_word_embeddings'"));

  e = error_of(base, R"({"model_type": "gpt2"})");
  CHECK(contains(e, "'model_type'"));
  CHECK(contains(e, "gpt2"));

  e = error_of(base, R"({"model_type": null, "architectures": ["GPT2LMHeadModel"]})");
  CHECK(contains(e, "'architectures'"));
  CHECK(contains(e, "GPT2LMHeadModel"));

  e = error_of(base, R"({"model_type": null, "architectures": null})");
  CHECK(contains(e, "'model_type'"));

  e = error_of(base, R"({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})");
  CHECK(contains(e, "'rope_scaling.rope_type'"));
  CHECK(contains(e, "yarn"));

  e = error_of(base, R"({"rope_scaling": {"low_freq_factor": null}})");
  CHECK(contains(e, "'rope_scaling.low_freq_factor'"));

  e = error_of(base, R"({"rope_scaling": [1, 2]})");
  CHECK(contains(e, "'rope_scaling'"));

  e = error_of(base, R"({"rope_scaling": {"rope_type": null}})");
  CHECK(contains(e, "'rope_scaling.rope_type'"));

  e = error_of(phi4_mini_json(), R"({"rope_scaling": {"long_factor": [1.0, 2.0]}})");
  CHECK(contains(e, "'rope_scaling.long_factor'"));

  e = error_of(base, R"({"attention_bias": true})");
  CHECK(contains(e, "'attention_bias'"));

  e = error_of(base, R"({"mlp_bias": true})");
  CHECK(contains(e, "'mlp_bias'"));

  e = error_of(base, R"({"hidden_act": "gelu"})");
  CHECK(contains(e, "'hidden_act'"));

  e = error_of(base, R"({"head_dim": null, "hidden_size": 2050})");
  CHECK(contains(e, "'hidden_size'"));

  // Inconsistent values: validate() names the field, prefixed with the file.
  e = error_of(base, R"({"num_key_value_heads": 7})");
  CHECK(contains(e, "models/x/config.json"));
  CHECK(contains(e, "num_key_value_heads"));

  e = error_of(base, R"({"rms_norm_eps": -1})");
  CHECK(contains(e, "rms_norm_eps"));

  e = error_of(base, R"({"rope_scaling": {"high_freq_factor": 0.5}})");
  CHECK(contains(e, "rope_scaling"));

  e = error_of(base, R"({"vocab_size": 0})");
  CHECK(contains(e, "vocab_size"));

  try {
    io::parse_hf_config(nlohmann::json::array({1, 2}), "a/config.json");
    FAIL("no error");
  } catch (const Error& err) {
    CHECK(contains(err.what(), "a/config.json"));
    CHECK(contains(err.what(), "object"));
  }
}

TEST_CASE("read_hf_config: not JSON, missing file") {
  TempDir d;
  const auto path = d.path / "config.json";
  std::ofstream(path) << "{\"hidden_size\": 12,,}";
  try {
    io::read_hf_config(path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), path.string()));
    CHECK(contains(e.what(), "not JSON"));
  }
  try {
    io::read_hf_config(d.path / "nope.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "nope.json"));
    CHECK(contains(e.what(), "cannot open"));
  }
}

TEST_CASE("config.json sizes beyond lvt's bounds are named, not overflowed") {
  const std::string e = error_of(llama32_1b_json, R"({"intermediate_size": 2000000000})");
  CHECK(contains(e, "'intermediate_size'"));
  CHECK(contains(e, "exceeds"));
  CHECK(contains(error_of(llama32_1b_json, R"({"num_hidden_layers": 100000})"),
                 "'num_hidden_layers'"));
}

TEST_CASE("hf_config_json: what parse_hf_config reads back as the same description") {
  int n = 0;
  for (const auto& p : lvt::presets::all) {
    if (p.config->rope_scaling == lvt::RopeScaling::longrope) {
      CHECK_THROWS_WITH(lvt::io::hf_config_json(*p.config), doctest::Contains("longrope"));
      continue;
    }
    CAPTURE(p.name);
    CHECK(lvt::io::parse_hf_config(lvt::io::hf_config_json(*p.config), "x") == *p.config);
    ++n;
  }
  CHECK(n >= 8);
  lvt::ModelConfig c = *lvt::presets::all[0].config;  // linear scaling, a partial rotary, an original length
  c.rope_scaling = lvt::RopeScaling::linear;
  c.rope_factor = 4.0;
  c.rope_original_max_position = 2048;
  c.partial_rotary_factor = 0.5;
  CHECK(lvt::io::parse_hf_config(lvt::io::hf_config_json(c), "x") == c);
}
