#include <doctest/doctest.h>

#include <string>

#include "lvt/model/presets.hpp"

using namespace lvt;

TEST_CASE("presets imply the published parameter counts") {
  // Counts as the model cards / safetensors index report them (rounded to 10M).
  struct Row {
    const ModelConfig* c;
    double billions;
  } rows[] = {
      {&presets::tinyllama_1_1b, 1.10}, {&presets::llama_3_2_1b, 1.24},
      {&presets::llama_3_2_3b, 3.21},   {&presets::llama_3_1_8b, 8.03},
      {&presets::mistral_7b, 7.25},     {&presets::qwen2_5_7b, 7.62},
      {&presets::llama_2_13b, 13.02},   {&presets::phi_4_mini, 3.84},
      {&presets::phi_4, 14.66},         {&presets::llama_3_1_70b, 70.55},
  };
  for (const auto& r : rows) {
    CAPTURE(r.billions);
    CHECK(double(r.c->params()) / 1e9 == doctest::Approx(r.billions).epsilon(0.005));
    CHECK(validate(*r.c) == nullptr);
  }
}

TEST_CASE("validate names the inconsistent config.json field") {
  ModelConfig c = presets::llama_3_1_8b;
  c.kv_heads = 7;
  REQUIRE(validate(c) != nullptr);
  CHECK(std::string(validate(c)).find("num_key_value_heads") != std::string::npos);
  c = presets::llama_3_1_8b;
  c.head_dim = 0;
  CHECK(std::string(validate(c)).find("head_dim") != std::string::npos);
  c = presets::phi_4_mini;
  c.partial_rotary_factor = 1.5;
  CHECK(std::string(validate(c)).find("partial_rotary_factor") != std::string::npos);
}

TEST_CASE("presets are found by name") {
  CHECK(presets::find("llama-3.1-8b") == &presets::llama_3_1_8b);
  CHECK(presets::find("llama-3.1-8") == nullptr);
  static_assert(presets::find("phi-4")->layers == 40);
  static_assert(presets::phi_4_mini.rotary_dim() == 96);
}
