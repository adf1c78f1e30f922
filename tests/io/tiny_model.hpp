#pragma once
// Writes small random Hugging Face folders (config.json + safetensors, optionally sharded) for
// the io tests: llama, qwen2 (q/k/v biases), phi3 (fused qkv_proj / gate_up_proj), tied or not.
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/io/hf_model.hpp"
#include "lvt/io/safetensors.hpp"

namespace lvt_test {

inline lvt::ModelConfig tiny_config(lvt::Arch arch, bool tied) {
  lvt::ModelConfig c{};
  c.arch = arch;
  c.layers = 2;
  c.hidden = 32;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.ffn = 48;
  c.vocab = 50;
  c.tied_embeddings = tied;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;
  c.qkv_bias = arch == lvt::Arch::qwen2;
  c.max_position = 256;
  return c;
}

inline nlohmann::json config_json(const lvt::ModelConfig& c) {
  const char* cls[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                       "Phi3ForCausalLM"};
  nlohmann::json j = {{"architectures", {cls[int(c.arch)]}},
                      {"model_type", lvt::arch_name(c.arch)},
                      {"hidden_size", c.hidden},
                      {"num_hidden_layers", c.layers},
                      {"num_attention_heads", c.heads},
                      {"num_key_value_heads", c.kv_heads},
                      {"head_dim", c.head_dim},
                      {"intermediate_size", c.ffn},
                      {"vocab_size", c.vocab},
                      {"tie_word_embeddings", c.tied_embeddings},
                      {"rope_theta", c.rope_theta},
                      {"rms_norm_eps", c.norm_eps},
                      {"max_position_embeddings", c.max_position},
                      {"rope_scaling", nullptr},
                      {"torch_dtype", "bfloat16"}};
  return j;
}

// The values of every canonical slot, keyed by canonical name (as float, after the dtype's
// rounding, so a reader must return exactly these).
using Weights = std::map<std::string, std::vector<float>>;

// Writes the folder; returns the canonical weights. phi3 tensors are fused as the Hub stores
// them. `dtype` is the stored dtype of every tensor.
inline Weights write_tiny_model(const std::filesystem::path& dir, const lvt::ModelConfig& c,
                                std::uint64_t seed, lvt::io::StDtype dtype = lvt::io::StDtype::BF16,
                                std::uint64_t max_shard_bytes = 5'000'000'000ull) {
  using namespace lvt::io;
  std::filesystem::create_directories(dir);
  write_text_atomic(dir / "config.json", config_json(c).dump(2));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  Weights w;
  std::vector<TensorSpec> specs;
  std::vector<std::vector<float>> data;
  std::map<std::string, std::size_t> fused;  // stored name -> index in specs
  auto round = [&](float x) {
    std::byte b[8];
    convert_from_float(&x, 1, dtype, b, "round");
    float y;
    convert_to_float(dtype, b, 1, &y, "round");
    return y;
  };
  for (const auto& s : weight_slots(c)) {
    std::vector<float> v(std::size_t(s.numel()));
    for (auto& x : v) x = round(nd(rng));
    w[s.name] = v;
    std::string name;
    std::int64_t row = 0;
    std::vector<std::int64_t> fshape;
    if (fused_source(c, s, name, row, fshape)) {
      auto it = fused.find(name);
      if (it == fused.end()) {
        it = fused.emplace(name, specs.size()).first;
        specs.push_back({name, dtype, fshape});
        data.emplace_back(std::size_t(fshape[0] * fshape[1]));
      }
      std::copy(v.begin(), v.end(), data[it->second].begin() + row * fshape[1]);
    } else {
      specs.push_back({s.name, dtype, s.shape});
      data.push_back(v);
    }
  }
  ShardedWriter sw(dir, specs, max_shard_bytes);
  for (std::size_t i = 0; i < specs.size(); ++i) sw.write_float(specs[i].name, data[i]);
  sw.finish();
  return w;
}

}  // namespace lvt_test
