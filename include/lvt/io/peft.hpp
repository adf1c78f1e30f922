#pragma once
// PEFT LoRA adapters: adapter_model.safetensors + adapter_config.json exactly as PEFT's
// save_pretrained writes them for a Llama-family model, so PEFT, vLLM and llama.cpp's
// convert_lora_to_gguf.py take them unchanged:
//   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight   [r, in]
//   base_model.model.model.layers.N.self_attn.q_proj.lora_B.weight   [out, r]
//   ... k_proj v_proj o_proj, mlp.gate_proj up_proj down_proj
// metadata {"format": "pt"}, F32 by default (PEFT keeps LoRA weights in fp32 under QLoRA).
// The update is W + scale * B A with scale = lora_alpha / r, or lora_alpha / sqrt(r) (rsLoRA).
//
// phi3: lvt trains LoRA on the split q/k/v and gate/up projections (hf_model.hpp), so a phi3
// adapter carries q_proj ... up_proj names, which PEFT's Phi3 module tree (qkv_proj,
// gate_up_proj) does not have; lvt's own loader and merge handle it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/hf_model.hpp"
#include "lvt/io/safetensors.hpp"
#include "lvt/model/config.hpp"
#include "lvt/policies.hpp"

namespace lvt::io {

struct LoraConfig {
  int r = 16;
  double alpha = 32;
  double dropout = 0.0;
  bool rslora = false;
  unsigned targets = targets::all;  // lvt::targets bits
  std::vector<int> layers;          // layers with LoRA; empty: every layer
  std::string base_model;           // base_model_name_or_path

  double scale() const { return rslora ? alpha / std::sqrt(double(r)) : alpha / r; }
  bool has_layer(int l) const {
    return layers.empty() || std::find(layers.begin(), layers.end(), l) != layers.end();
  }
};

// One adapted projection: A is r x in, B is out x r, row-major floats.
struct LoraPair {
  int layer = 0;
  int target = 0;  // lvt::targets bit index: 0 q_proj ... 6 down_proj
  std::int64_t in = 0, out = 0;
  std::vector<float> A, B;
};

struct LoraAdapter {
  LoraConfig config;
  std::vector<LoraPair> pairs;  // sorted by (layer, target)

  const LoraPair* find(int layer, int target) const {
    for (const auto& p : pairs)
      if (p.layer == layer && p.target == target) return &p;
    return nullptr;
  }
  LoraPair* find(int layer, int target) {
    return const_cast<LoraPair*>(std::as_const(*this).find(layer, target));
  }
};

// PEFT's key for one LoRA matrix (the adapter name "default" is dropped on save).
inline std::string peft_key(int layer, int target, char ab) {
  return "base_model.model.model.layers." + std::to_string(layer) +
         (target < 4 ? ".self_attn." : ".mlp.") + targets::names[target] + ".lora_" + ab +
         ".weight";
}

// A fresh adapter as PEFT initializes one: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in),
// 1/sqrt(in)), B = 0, so the first step starts from the base model exactly.
inline LoraAdapter make_lora_adapter(const ModelConfig& model, const LoraConfig& cfg,
                                     std::uint64_t seed) {
  if (cfg.r <= 0) throw Error("LoRA config: field 'r' must be positive (got " + std::to_string(cfg.r) + ")");
  LoraAdapter a;
  a.config = cfg;
  std::mt19937_64 rng(seed);
  for (int l = 0; l < model.layers; ++l) {
    if (!cfg.has_layer(l)) continue;
    for (int t = 0; t < 7; ++t) {
      if (!(cfg.targets & (1u << t))) continue;
      auto [out, in] = projection_shape(model, t);
      LoraPair p{l, t, in, out, std::vector<float>(std::size_t(cfg.r * in)),
                 std::vector<float>(std::size_t(out * cfg.r), 0.0f)};
      std::uniform_real_distribution<float> u(-1.0f / std::sqrt(float(in)), 1.0f / std::sqrt(float(in)));
      for (auto& x : p.A) x = u(rng);
      a.pairs.push_back(std::move(p));
    }
  }
  return a;
}

// The adapter_config.json PEFT writes (the fields every PEFT release since 0.10 reads).
inline nlohmann::json peft_adapter_config_json(const LoraConfig& c) {
  nlohmann::json targets_list = nlohmann::json::array();
  for (int t = 0; t < 7; ++t)
    if (c.targets & (1u << t)) targets_list.push_back(targets::names[t]);
  nlohmann::json layers = nullptr;
  if (!c.layers.empty()) layers = c.layers;
  return {{"alpha_pattern", nlohmann::json::object()},
          {"auto_mapping", nullptr},
          {"base_model_name_or_path", c.base_model.empty() ? nlohmann::json(nullptr)
                                                           : nlohmann::json(c.base_model)},
          {"bias", "none"},
          {"fan_in_fan_out", false},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"layer_replication", nullptr},
          {"layers_pattern", nullptr},
          {"layers_to_transform", layers},
          {"loftq_config", nlohmann::json::object()},
          {"lora_alpha", c.alpha},
          {"lora_dropout", c.dropout},
          {"megatron_config", nullptr},
          {"megatron_core", "megatron.core"},
          {"modules_to_save", nullptr},
          {"peft_type", "LORA"},
          {"r", c.r},
          {"rank_pattern", nlohmann::json::object()},
          {"revision", nullptr},
          {"target_modules", targets_list},
          {"task_type", "CAUSAL_LM"},
          {"use_dora", false},
          {"use_rslora", c.rslora}};
}

// Writes DIR/adapter_model.safetensors and DIR/adapter_config.json, each atomically.
// dtype: F32 (default), BF16 or F16.
inline void save_lora_adapter(const std::filesystem::path& dir, const LoraAdapter& a,
                              StDtype dtype = StDtype::F32) {
  std::filesystem::create_directories(dir);
  std::vector<TensorSpec> specs;
  for (const auto& p : a.pairs) {
    specs.push_back({peft_key(p.layer, p.target, 'A'), dtype, {a.config.r, p.in}});
    specs.push_back({peft_key(p.layer, p.target, 'B'), dtype, {p.out, a.config.r}});
  }
  SafetensorsWriter w(dir / "adapter_model.safetensors", specs, {{"format", "pt"}});
  for (const auto& p : a.pairs) {
    w.write_float(peft_key(p.layer, p.target, 'A'), p.A);
    w.write_float(peft_key(p.layer, p.target, 'B'), p.B);
  }
  w.finish();
  write_text_atomic(dir / "adapter_config.json", peft_adapter_config_json(a.config).dump(2) + "\n");
}

namespace detail_peft {

// Parses "base_model.model.model.layers.N.(self_attn|mlp).NAME.lora_(A|B).weight".
inline bool parse_key(const std::string& key, int& layer, int& target, char& ab) {
  const std::string pre = "base_model.model.model.layers.";
  if (key.rfind(pre, 0) != 0) return false;
  std::size_t i = pre.size(), j = i;
  while (j < key.size() && key[j] >= '0' && key[j] <= '9') ++j;
  if (j == i || j - i > 6 || j >= key.size() || key[j] != '.') return false;
  layer = std::stoi(key.substr(i, j - i));
  const std::string rest = key.substr(j + 1);
  for (int t = 0; t < 7; ++t) {
    const std::string mod = std::string(t < 4 ? "self_attn." : "mlp.") + targets::names[t];
    for (char c : {'A', 'B'}) {
      if (rest == mod + ".lora_" + c + ".weight") {
        target = t;
        ab = c;
        return true;
      }
    }
  }
  return false;
}

}  // namespace detail_peft

// Parses adapter_config.json; `source` names the file in errors.
inline LoraConfig parse_peft_adapter_config(const nlohmann::json& j, const std::string& source) {
  using detail_cfg::field_error;
  using detail_cfg::member;
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  LoraConfig c;
  const std::string peft_type = detail_cfg::get_string(j, "peft_type", source);
  if (peft_type != "LORA") field_error(source, "peft_type", "'" + peft_type + "' is not LORA");
  c.r = detail_cfg::get_int(j, "r", source);
  if (c.r <= 0) field_error(source, "r", "must be positive");
  c.alpha = detail_cfg::get_num(j, "lora_alpha", source);
  if (c.alpha <= 0) field_error(source, "lora_alpha", "must be positive");
  c.dropout = detail_cfg::get_num_or(j, "lora_dropout", 0.0, source);
  if (c.dropout < 0 || c.dropout >= 1) field_error(source, "lora_dropout", "must be in [0, 1)");
  c.rslora = detail_cfg::get_bool_or(j, "use_rslora", false, source);
  if (detail_cfg::get_bool_or(j, "use_dora", false, source))
    field_error(source, "use_dora", "DoRA adapters are not supported");
  if (detail_cfg::get_bool_or(j, "fan_in_fan_out", false, source))
    field_error(source, "fan_in_fan_out", "true is not supported (Llama's Linear is out x in)");
  if (member(j, "bias") && detail_cfg::get_string(j, "bias", source) != "none")
    field_error(source, "bias", "only \"none\" is supported");
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (const auto* v = member(j, k); v && !(v->is_object() && v->empty()))
      field_error(source, k, "per-module ranks/alphas are not supported (must be {})");
  if (const auto* v = member(j, "modules_to_save"); v && !(v->is_array() && v->empty()))
    field_error(source, "modules_to_save", "fully trained modules are not supported (must be null)");
  if (member(j, "base_model_name_or_path"))
    c.base_model = detail_cfg::get_string(j, "base_model_name_or_path", source);
  const auto* tm = member(j, "target_modules");
  if (!tm) field_error(source, "target_modules", "missing (required)");
  if (tm->is_string())
    field_error(source, "target_modules",
                "a regular expression is not supported; give a list of module names");
  if (!tm->is_array()) field_error(source, "target_modules", "expected a list of module names");
  c.targets = 0;
  for (const auto& m : *tm) {
    if (!m.is_string()) field_error(source, "target_modules", "expected strings");
    const std::string name = m.get<std::string>();
    int t = 0;
    while (t < 7 && name != targets::names[t]) ++t;
    if (t == 7)
      field_error(source, "target_modules",
                  "'" + name + "' is not a Llama projection (q_proj k_proj v_proj o_proj "
                  "gate_proj up_proj down_proj)");
    c.targets |= 1u << t;
  }
  if (c.targets == 0) field_error(source, "target_modules", "empty");
  if (const auto* lt = member(j, "layers_to_transform")) {
    if (lt->is_number_integer()) {
      if (!lt->is_number_unsigned() || lt->get<std::uint64_t>() > 1000000)
        field_error(source, "layers_to_transform", "expected a non-negative layer index");
      c.layers = {lt->get<int>()};
    } else if (lt->is_array()) {
      for (const auto& x : *lt) {
        if (!x.is_number_unsigned() || x.get<std::uint64_t>() > 1000000)
          field_error(source, "layers_to_transform", "expected non-negative layer indices");
        c.layers.push_back(x.get<int>());
      }
      std::sort(c.layers.begin(), c.layers.end());
    } else {
      field_error(source, "layers_to_transform", "expected an integer, a list or null");
    }
  }
  return c;
}

// Loads an adapter folder. With `model`, every A/B pair must fit the model's projection shapes
// and layer count; the loaded adapter continues training as it was saved.
inline LoraAdapter load_lora_adapter(const std::filesystem::path& dir,
                                     const ModelConfig* model = nullptr) {
  const auto cfg_path = dir / "adapter_config.json";
  std::ifstream f(cfg_path, std::ios::binary);
  if (!f) throw Error(cfg_path.string() + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) throw Error(cfg_path.string() + ": not JSON (parse error)");
  LoraAdapter a;
  a.config = parse_peft_adapter_config(j, cfg_path.string());
  const int r = a.config.r;

  const auto st_path = dir / "adapter_model.safetensors";
  SafetensorsFile st(st_path);
  const std::string src = st_path.string();
  auto slot = [&](int layer, int target) -> LoraPair& {
    if (LoraPair* p = a.find(layer, target)) return *p;
    a.pairs.push_back({layer, target, 0, 0, {}, {}});
    return a.pairs.back();
  };
  for (const auto& t : st.tensors()) {
    int layer = 0, target = 0;
    char ab = 0;
    if (!detail_peft::parse_key(t.name, layer, target, ab))
      throw Error(src + ": tensor '" + t.name +
                  "' is not a LoRA matrix of a Llama projection "
                  "(base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight, ...)");
    if (!(a.config.targets & (1u << target)))
      throw Error(src + ": tensor '" + t.name + "': " + targets::names[target] +
                  " is not in target_modules of " + cfg_path.string());
    if (!a.config.has_layer(layer))
      throw Error(src + ": tensor '" + t.name + "': layer " + std::to_string(layer) +
                  " is not in layers_to_transform of " + cfg_path.string());
    if (model && layer >= model->layers)
      throw Error(src + ": tensor '" + t.name + "': layer " + std::to_string(layer) +
                  " but the model has " + std::to_string(model->layers) + " layers");
    if (t.shape.size() != 2)
      throw Error(src + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) +
                  " (expected 2 dimensions)");
    LoraPair& p = slot(layer, target);
    if (ab == 'A') {
      if (t.shape[0] != r)
        throw Error(src + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) +
                    " but r = " + std::to_string(r) + " (expected [r, in])");
      p.in = t.shape[1];
      p.A = st.to_float(t);
    } else {
      if (t.shape[1] != r)
        throw Error(src + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) +
                    " but r = " + std::to_string(r) + " (expected [out, r])");
      p.out = t.shape[0];
      p.B = st.to_float(t);
    }
  }
  std::sort(a.pairs.begin(), a.pairs.end(), [](const LoraPair& x, const LoraPair& y) {
    return x.layer != y.layer ? x.layer < y.layer : x.target < y.target;
  });
  for (const auto& p : a.pairs) {
    const char missing = p.A.empty() ? 'A' : p.B.empty() ? 'B' : 0;
    if (missing)
      throw Error(src + ": tensor '" + peft_key(p.layer, p.target, missing) +
                  "' missing (its pair is present)");
    if (model) {
      auto [out, in] = projection_shape(*model, p.target);
      if (p.in != in || p.out != out)
        throw Error(src + ": tensors '" + peft_key(p.layer, p.target, 'A') + "'/'lora_B' give [" +
                    std::to_string(p.out) + " x " + std::to_string(p.in) + "] but the model's " +
                    targets::names[p.target] + " is [" + std::to_string(out) + " x " +
                    std::to_string(in) + "]");
    }
  }
  if (a.pairs.empty()) throw Error(src + ": no LoRA tensors");
  return a;
}

}  // namespace lvt::io
