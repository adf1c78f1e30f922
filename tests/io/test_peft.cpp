// PEFT LoRA adapters (exact key names, shapes, config fields, dtypes; load = save) and the merge
// into a bf16 Hugging Face folder, checked against a double-precision reference.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "io_test_util.hpp"
#include "lvt/io/hf_merge.hpp"
#include "lvt/io/peft.hpp"
#include "tiny_model.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {

// An adapter with random (non-zero) A and B, as after some training.
LoraAdapter trained_adapter(const ModelConfig& c, LoraConfig cfg, std::uint64_t seed) {
  LoraAdapter a = make_lora_adapter(c, cfg, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (auto& p : a.pairs)
    for (auto& x : p.B) x = nd(rng);
  return a;
}

nlohmann::json read_json(const std::filesystem::path& p) {
  return nlohmann::json::parse(std::ifstream(p));
}

std::string load_error(const std::filesystem::path& dir, const ModelConfig* c) {
  try {
    load_lora_adapter(dir, c);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("PEFT adapter: key names, shapes, config fields, round trip") {
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  LoraConfig cfg;
  cfg.r = 4;
  cfg.alpha = 8;
  cfg.dropout = 0.05;
  cfg.targets = targets::q_proj | targets::v_proj | targets::down_proj;
  cfg.base_model = "TinyLlama/TinyLlama-1.1B-Chat-v1.0";
  const LoraAdapter a = trained_adapter(c, cfg, 42);
  CHECK(a.pairs.size() == 6);
  CHECK(a.config.scale() == 2.0);
  TempDir d;
  save_lora_adapter(d.path, a);

  SafetensorsFile st(d.path / "adapter_model.safetensors");
  CHECK(st.metadata().at("format") == "pt");
  CHECK(st.tensors().size() == 12);
  const auto& qa = st.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(qa.dtype == StDtype::F32);
  CHECK(qa.shape == std::vector<std::int64_t>{4, 32});
  CHECK(st.at("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight").shape ==
        std::vector<std::int64_t>{16, 4});
  CHECK(st.at("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight").shape ==
        std::vector<std::int64_t>{4, 48});
  CHECK(st.at("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").shape ==
        std::vector<std::int64_t>{32, 4});

  const nlohmann::json j = read_json(d.path / "adapter_config.json");
  CHECK(j["peft_type"] == "LORA");
  CHECK(j["task_type"] == "CAUSAL_LM");
  CHECK(j["r"] == 4);
  CHECK(j["lora_alpha"] == 8.0);
  CHECK(j["lora_dropout"] == 0.05);
  CHECK(j["target_modules"] == nlohmann::json({"q_proj", "v_proj", "down_proj"}));
  CHECK(j["base_model_name_or_path"] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0");
  CHECK(j["bias"] == "none");
  CHECK(j["use_rslora"] == false);
  CHECK(j["use_dora"] == false);
  CHECK(j["fan_in_fan_out"] == false);
  CHECK(j["inference_mode"] == true);
  CHECK(j["modules_to_save"].is_null());
  CHECK(j["layers_to_transform"].is_null());
  CHECK(j["rank_pattern"] == nlohmann::json::object());

  const LoraAdapter b = load_lora_adapter(d.path, &c);
  CHECK(b.config.r == 4);
  CHECK(b.config.alpha == 8);
  CHECK(b.config.targets == cfg.targets);
  CHECK(b.config.base_model == cfg.base_model);
  REQUIRE(b.pairs.size() == a.pairs.size());
  for (std::size_t i = 0; i < a.pairs.size(); ++i) {
    CHECK(b.pairs[i].layer == a.pairs[i].layer);
    CHECK(b.pairs[i].target == a.pairs[i].target);
    CHECK(b.pairs[i].A == a.pairs[i].A);  // F32: bit-identical, training continues exactly
    CHECK(b.pairs[i].B == a.pairs[i].B);
  }

  // bf16 adapters read back rounded; rsLoRA and sparse layers survive the round trip.
  cfg.rslora = true;
  cfg.layers = {1};
  const LoraAdapter r = trained_adapter(c, cfg, 7);
  CHECK(r.config.scale() == doctest::Approx(8.0 / 2.0));
  TempDir d2;
  save_lora_adapter(d2.path, r, StDtype::BF16);
  CHECK(read_json(d2.path / "adapter_config.json")["layers_to_transform"] == nlohmann::json({1}));
  CHECK(read_json(d2.path / "adapter_config.json")["use_rslora"] == true);
  const LoraAdapter rb = load_lora_adapter(d2.path, &c);
  CHECK(rb.config.rslora);
  CHECK(rb.config.layers == std::vector<int>{1});
  REQUIRE(rb.pairs.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(rb.pairs[i].layer == 1);
    for (std::size_t k = 0; k < r.pairs[i].A.size(); ++k)
      CHECK(rb.pairs[i].A[k] == bf16_to_float(float_to_bf16(r.pairs[i].A[k])));
  }
  // Fresh adapters start at B = 0 with A bounded by 1/sqrt(in), as PEFT initializes them.
  const LoraAdapter fresh = make_lora_adapter(c, LoraConfig{}, 3);
  CHECK(fresh.pairs.size() == 14);
  for (const auto& p : fresh.pairs) {
    CHECK(std::all_of(p.B.begin(), p.B.end(), [](float x) { return x == 0; }));
    const float bound = 1.0f / std::sqrt(float(p.in));
    CHECK(std::all_of(p.A.begin(), p.A.end(), [&](float x) { return std::fabs(x) <= bound; }));
    CHECK(std::any_of(p.A.begin(), p.A.end(), [](float x) { return x != 0; }));
  }
}

TEST_CASE("PEFT adapter errors name the file, the field or the tensor") {
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  LoraConfig cfg;
  cfg.r = 2;
  cfg.targets = targets::q_proj | targets::k_proj;
  TempDir d;
  save_lora_adapter(d.path, trained_adapter(c, cfg, 5));
  const auto cfg_path = d.path / "adapter_config.json";
  const nlohmann::json good = read_json(cfg_path);
  auto with = [&](const char* patch) {
    nlohmann::json j = good;
    j.merge_patch(nlohmann::json::parse(patch));
    write_text_atomic(cfg_path, j.dump());
    return load_error(d.path, &c);
  };
  CHECK(with("{}") == "(no error)");
  std::string e = with(R"({"peft_type": "IA3"})");
  CHECK(contains(e, cfg_path.string()));
  CHECK(contains(e, "'peft_type'"));
  CHECK(contains(with(R"({"r": null})"), "'r'"));
  CHECK(contains(with(R"({"lora_alpha": "x"})"), "'lora_alpha'"));
  CHECK(contains(with(R"({"target_modules": ".*proj"})"), "regular expression"));
  CHECK(contains(with(R"({"target_modules": ["q_proj", "lm_head"]})"), "'lm_head'"));
  CHECK(contains(with(R"({"use_dora": true})"), "'use_dora'"));
  CHECK(contains(with(R"({"bias": "all"})"), "'bias'"));
  CHECK(contains(with(R"({"rank_pattern": {"q_proj": 8}})"), "'rank_pattern'"));
  e = with(R"({"target_modules": ["q_proj"]})");
  CHECK(contains(e, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"));
  CHECK(contains(e, "not in target_modules"));
  e = with(R"({"r": 3})");
  CHECK(contains(e, "adapter_model.safetensors"));
  CHECK(contains(e, "r = 3"));
  CHECK(contains(with(R"({"layers_to_transform": -1})"), "'layers_to_transform'"));
  CHECK(contains(with(R"({"layers_to_transform": [0, -2]})"), "'layers_to_transform'"));
  CHECK(contains(with(R"({"layers_to_transform": "0"})"), "'layers_to_transform'"));
  e = with(R"({"layers_to_transform": [0]})");
  CHECK(contains(e, "layers.1."));
  CHECK(contains(e, "layers_to_transform"));
  with("{}");

  // Shapes that do not fit the model; layers beyond it.
  ModelConfig other = c;
  other.hidden = 40;
  other.head_dim = 10;
  e = load_error(d.path, &other);
  CHECK(contains(e, "self_attn.q_proj.lora_A.weight"));
  CHECK(contains(e, "[40 x 40]"));
  other = c;
  other.layers = 1;
  CHECK(contains(load_error(d.path, &other), "but the model has 1 layers"));

  // A missing B, a foreign tensor.
  SafetensorsFile st(d.path / "adapter_model.safetensors");
  std::vector<TensorData> ts;
  for (const auto& t : st.tensors()) {
    auto b = st.bytes(t);
    ts.push_back({{t.name, t.dtype, t.shape}, {b.begin(), b.end()}});
  }
  auto rewrite = [&](std::vector<TensorData> v) {
    write_safetensors(d.path / "adapter_model.safetensors", v);
    return load_error(d.path, &c);
  };
  auto missing = ts;
  std::erase_if(missing, [](const TensorData& t) {
    return t.spec.name == "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight";
  });
  e = rewrite(missing);
  CHECK(contains(e, "'base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight' missing"));
  auto foreign = ts;
  foreign.push_back({{"base_model.model.lm_head.lora_A.weight", StDtype::F32, {2, 32}},
                     std::vector<std::byte>(2 * 32 * 4, std::byte{1})});
  e = rewrite(foreign);
  CHECK(contains(e, "'base_model.model.lm_head.lora_A.weight'"));
  CHECK(contains(e, "not a LoRA matrix"));
}

TEST_CASE("merge: base + scale * B A as bf16, fused phi3 rows, files copied") {
  for (Arch arch : {Arch::llama, Arch::qwen2, Arch::phi3}) {
    CAPTURE(arch_name(arch));
    const ModelConfig c = lvt_test::tiny_config(arch, arch == Arch::phi3);
    TempDir base, ad, out;
    const auto w = lvt_test::write_tiny_model(base.path, c, 11, StDtype::BF16, 20'000);
    std::ofstream(base.path / "tokenizer.json") << "{\"model\": \"test\"}";
    LoraConfig cfg;
    cfg.r = 3;
    cfg.alpha = 5;
    cfg.rslora = arch == Arch::qwen2;
    cfg.targets = targets::all & ~targets::o_proj;
    const LoraAdapter a = trained_adapter(c, cfg, 21);
    save_lora_adapter(ad.path, a);
    const MergeStats s = merge_lora(base.path, ad.path, out.path, 20'000);
    CHECK(s.merged_pairs == int(a.pairs.size()));

    CHECK(read_json(out.path / "config.json")["torch_dtype"] == "bfloat16");
    CHECK(std::filesystem::exists(out.path / "tokenizer.json"));
    const HfModel m(out.path, &c);
    const double scale = cfg.scale();
    int checked = 0;
    for (std::size_t i = 0; i < m.slots().size(); ++i) {
      const WeightSlot& slot = m.slots()[i];
      CHECK(m.source(i).info->dtype == StDtype::BF16);
      const auto got = m.read(i);
      std::vector<double> ref(w.at(slot.name).begin(), w.at(slot.name).end());
      const int t = target_index(slot.kind);
      if (const LoraPair* p = t >= 0 ? a.find(slot.layer, t) : nullptr) {
        for (std::int64_t o = 0; o < p->out; ++o)
          for (std::int64_t k = 0; k < p->in; ++k) {
            double acc = 0;
            for (int q = 0; q < cfg.r; ++q)
              acc += double(p->B[std::size_t(o * cfg.r + q)]) * p->A[std::size_t(q * p->in + k)];
            ref[std::size_t(o * p->in + k)] += scale * acc;
          }
        ++checked;
      }
      for (std::size_t k = 0; k < got.size(); ++k) {
        // bf16 output: within half an ulp of the exact sum (float accumulation adds ~1e-6).
        CHECK(std::fabs(got[k] - ref[k]) <= std::fabs(ref[k]) * (1.0 / 256) + 1e-6);
      }
    }
    CHECK(checked == int(a.pairs.size()));
    CHECK_THROWS_WITH_AS(merge_lora(base.path, ad.path, base.path),
                         doctest::Contains("must differ"), Error);
  }
}
