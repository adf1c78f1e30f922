// Training checkpoints: save -> load is bit-identical (LoRA weights, optimizer state, step, data
// position, RNG state); replacing a checkpoint is atomic; bad folders are named.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "io_test_util.hpp"
#include "lvt/io/checkpoint.hpp"
#include "tiny_model.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {
TrainingCheckpoint random_state(const ModelConfig& c, std::uint64_t seed) {
  LoraConfig cfg;
  cfg.r = 4;
  cfg.alpha = 7.5;
  cfg.rslora = true;
  cfg.layers = {0};
  TrainingCheckpoint s;
  s.adapter = make_lora_adapter(c, cfg, seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& p : s.adapter.pairs) {
    for (auto& x : p.B) x = nd(rng) * 1e-3f;
    const std::string k = peft_key(p.layer, p.target, 'A');
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      std::vector<float> v(p.A.size());
      for (auto& x : v) x = nd(rng) * 1e-4f;
      s.optimizer[k + suffix] = v;
    }
  }
  s.step = 1000 + seed;
  s.data = {3, 17 + seed};
  s.seed = 0xabcdef0123456789ull ^ seed;
  s.rng.seed(seed * 31);
  s.rng.discard(12345 + seed);  // mid-stream state
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}
}  // namespace

TEST_CASE("checkpoint round trip is bit-identical and resumes the RNG stream") {
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  TempDir d;
  const auto dir = d.path / "ckpt";
  TrainingCheckpoint s = random_state(c, 1);
  save_checkpoint(dir, s);
  TrainingCheckpoint r = load_checkpoint(dir, &c);
  CHECK(r.step == s.step);
  CHECK(r.data == s.data);
  CHECK(r.seed == s.seed);
  CHECK(r.rng == s.rng);
  for (int i = 0; i < 100; ++i) CHECK(r.rng() == s.rng());
  CHECK(r.adapter.config.alpha == s.adapter.config.alpha);
  CHECK(r.adapter.config.rslora);
  CHECK(r.adapter.config.layers == s.adapter.config.layers);
  REQUIRE(r.adapter.pairs.size() == s.adapter.pairs.size());
  for (std::size_t i = 0; i < s.adapter.pairs.size(); ++i) {
    CHECK(same_bits(r.adapter.pairs[i].A, s.adapter.pairs[i].A));
    CHECK(same_bits(r.adapter.pairs[i].B, s.adapter.pairs[i].B));
  }
  REQUIRE(r.optimizer.size() == s.optimizer.size());
  for (const auto& [k, v] : s.optimizer) CHECK(same_bits(r.optimizer.at(k), v));

  // Replacing: the new state wins, no temporary or old folder remains.
  TrainingCheckpoint s2 = random_state(c, 2);
  save_checkpoint(dir, s2);
  CHECK(load_checkpoint(dir).step == s2.step);
  int entries = 0;
  for (auto it = std::filesystem::directory_iterator(d.path); it != std::filesystem::directory_iterator(); ++it) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("checkpoint errors name the file and the field") {
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  TempDir d;
  const auto dir = d.path / "ckpt";
  CHECK_THROWS_WITH_AS(load_checkpoint(dir), doctest::Contains("trainer_state.json: cannot open"),
                       Error);
  save_checkpoint(dir, random_state(c, 3));
  const auto st = dir / "trainer_state.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(st));
  auto with = [&](const nlohmann::json& patch) {
    nlohmann::json k = j;
    k.merge_patch(patch);
    std::ofstream(st) << k.dump();
    try {
      load_checkpoint(dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(with(nlohmann::json::object()) == "(no error)");
  CHECK(contains(with({{"step", nullptr}}), "field 'step': missing"));
  CHECK(contains(with({{"data_index", -1}}), "field 'data_index'"));
  CHECK(contains(with({{"rng_mt19937_64", "12 x"}}), "field 'rng_mt19937_64'"));
  CHECK(contains(with({{"format_version", 9}}), "field 'format_version'"));
  with(nlohmann::json::object());
  // A truncated optimizer file is caught by the safetensors reader, naming it.
  std::filesystem::resize_file(dir / "optimizer.safetensors",
                               std::filesystem::file_size(dir / "optimizer.safetensors") - 4);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir), doctest::Contains("optimizer.safetensors"), Error);
}
