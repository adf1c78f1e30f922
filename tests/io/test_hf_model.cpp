// Hugging Face folders: config + (sharded) safetensors -> canonical weights for llama, qwen2
// (biases), phi3 (fused tensors split on load), tied embeddings; and the errors for a missing
// tensor, a shape that disagrees with config.json, and a config that disagrees with the
// compiled model description.
#include <doctest/doctest.h>

#include <filesystem>
#include <set>

#include "io_test_util.hpp"
#include "lvt/io/hf_model.hpp"
#include "lvt/model/presets.hpp"
#include "tiny_model.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

TEST_CASE("HF folders of every architecture load to the values written") {
  struct Case {
    Arch arch;
    bool tied;
    StDtype dtype;
    std::uint64_t shard;
  } cases[] = {
      {Arch::llama, false, StDtype::BF16, 5'000'000'000ull},
      {Arch::llama, true, StDtype::F16, 20'000},
      {Arch::mistral, false, StDtype::F32, 30'000},
      {Arch::qwen2, false, StDtype::BF16, 10'000},
      {Arch::phi3, true, StDtype::BF16, 15'000},
  };
  for (const auto& k : cases) {
    CAPTURE(arch_name(k.arch));
    CAPTURE(k.tied);
    TempDir d;
    const ModelConfig c = lvt_test::tiny_config(k.arch, k.tied);
    const auto w = lvt_test::write_tiny_model(d.path, c, 1000 + int(k.arch), k.dtype, k.shard);
    HfModel m(d.path, &c);
    CHECK(m.config() == c);
    CHECK(m.slots().size() == w.size());
    std::set<std::string> seen;
    std::int64_t elems = 0;
    m.for_each_weight([&](const WeightSlot& s, std::span<const float> v) {
      seen.insert(s.name);
      elems += std::int64_t(v.size());
      const auto& ref = w.at(s.name);
      REQUIRE(v.size() == ref.size());
      CHECK(std::equal(v.begin(), v.end(), ref.begin()));
    });
    CHECK(seen.size() == w.size());
    CHECK(elems == c.params());  // the slots cover exactly the parameter count
    CHECK((m.find_slot("lm_head.weight") == nullptr) == k.tied);
    if (k.arch == Arch::phi3) {
      CHECK(m.weights().find("model.layers.0.self_attn.qkv_proj.weight") != nullptr);
      CHECK(m.weights().find("model.layers.0.self_attn.q_proj.weight") == nullptr);
    }
    if (k.arch == Arch::qwen2) CHECK(w.count("model.layers.1.self_attn.v_proj.bias") == 1);
  }
}

TEST_CASE("HF folder errors: missing tensor, shape mismatch, config mismatch, bad dtype") {
  TempDir d;
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  lvt_test::write_tiny_model(d.path, c, 7);

  // Compiled description differs: the message names the config.json field and both values.
  ModelConfig other = c;
  other.layers = 3;
  other.tied_embeddings = true;
  try {
    HfModel m(d.path, &other);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), (d.path / "config.json").string()));
    CHECK(contains(e.what(), "field 'num_hidden_layers' is 2 but the model description says 3"));
    CHECK(contains(e.what(), "field 'tie_word_embeddings' is false"));
  }
  CHECK_THROWS_WITH_AS(HfModel(d.path, &presets::llama_3_1_8b),
                       doctest::Contains("field 'hidden_size' is 32"), Error);

  // A tensor the config implies is absent.
  TempDir d2;
  {
    lvt_test::write_tiny_model(d2.path, c, 8);
    SafetensorsFile f(d2.path / "model.safetensors");
    std::vector<TensorData> keep;
    for (const auto& t : f.tensors()) {
      if (t.name == "model.layers.1.mlp.down_proj.weight") continue;
      auto b = f.bytes(t);
      keep.push_back({{t.name, t.dtype, t.shape}, {b.begin(), b.end()}});
    }
    write_safetensors(d2.path / "model.safetensors", keep);
  }
  try {
    HfModel m(d2.path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "'model.layers.1.mlp.down_proj.weight' missing"));
    CHECK(contains(e.what(), "model.safetensors"));
  }

  // Shape disagrees with config.json: config says ffn 48, change it to 40.
  nlohmann::json j = lvt_test::config_json(c);
  j["intermediate_size"] = 40;
  write_text_atomic(d.path / "config.json", j.dump());
  try {
    HfModel m(d.path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "model.safetensors"));
    CHECK(contains(e.what(), "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [48, 32]"));
    CHECK(contains(e.what(), "implies [40, 32]"));
  }

  // Integer tensor where a weight should be.
  TempDir d3;
  lvt_test::write_tiny_model(d3.path, c, 9);
  {
    SafetensorsFile f(d3.path / "model.safetensors");
    std::vector<TensorData> keep;
    for (const auto& t : f.tensors()) {
      auto b = f.bytes(t);
      StDtype dt = t.name == "model.norm.weight" ? StDtype::I16 : t.dtype;
      keep.push_back({{t.name, dt, t.shape}, {b.begin(), b.end()}});
    }
    write_safetensors(d3.path / "model.safetensors", keep);
  }
  CHECK_THROWS_WITH_AS(HfModel{d3.path}, doctest::Contains("'model.norm.weight' has dtype I16"),
                       Error);
}
