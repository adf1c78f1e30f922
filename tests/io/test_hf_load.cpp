// Loading a Hugging Face folder with on-the-fly quantization: every projection equals the
// quantizer applied to the stored tensor, the rest is bf16, one float buffer of the largest
// tensor is all the load allocates beyond its output, and bad weights are named.
#include <doctest/doctest.h>

#include <cmath>

#include "io_test_util.hpp"
#include "lvt/io/hf_load.hpp"
#include "tiny_model.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::TempDir;

TEST_CASE("load_quantized: NF4+DQ / FP4 / int8 / none on random folders of each arch") {
  for (Arch arch : {Arch::llama, Arch::qwen2, Arch::phi3}) {
    CAPTURE(arch_name(arch));
    const ModelConfig c = lvt_test::tiny_config(arch, arch != Arch::qwen2);
    TempDir d;
    const auto w = lvt_test::write_tiny_model(d.path, c, 500 + int(arch), StDtype::BF16, 12'000);
    for (QuantKind k : {QuantKind::nf4, QuantKind::fp4, QuantKind::int8, QuantKind::none}) {
      CAPTURE(quant_name(k));
      PlanOptions o;
      o.quant = k;
      o.quant_block = 64;
      o.double_quant = k == QuantKind::nf4;
      const LoadedModel m = load_quantized(d.path, o, &c);
      CHECK(m.config == c);
      CHECK(m.buffer_floats == std::int64_t(c.vocab) * c.hidden);  // the largest tensor
      REQUIRE(m.weights.size() == w.size());
      for (const auto& lw : m.weights) {
        const auto& ref = w.at(lw.slot.name);
        const bool proj = target_index(lw.slot.kind) >= 0;
        CHECK(lw.quant == (proj ? k : QuantKind::none));
        const auto got = lw.dequantize();
        REQUIRE(got.size() == ref.size());
        if (!proj || k == QuantKind::none) {
          CHECK(got == ref);  // bf16 source: exact
          continue;
        }
        // Exactly the quantizer's output on the stored values ...
        std::vector<float> want(ref.size());
        if (k == QuantKind::int8) {
          std::vector<std::int8_t> q(ref.size());
          std::vector<float> am(std::size_t(quant::blocks_of(std::int64_t(ref.size()), 64)));
          quant::quantize_int8(ref.data(), std::int64_t(ref.size()), 64, q.data(), am.data(), "t");
          quant::dequantize_int8(q.data(), am.data(), std::int64_t(ref.size()), 64, want.data());
        } else {
          const auto q = quant::quantize4(k == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4,
                                          ref.data(), std::int64_t(ref.size()), 64, o.double_quant, "t");
          quant::dequantize4(q, want.data());
        }
        CHECK(got == want);
        // ... and close to it: within the code's coarsest step of each block's absmax.
        const double tol = k == QuantKind::int8 ? 0.5 / 127 + 1e-6 : 0.2;
        for (std::size_t b = 0; b < ref.size(); b += 64) {
          float am = 0;
          for (std::size_t i = b; i < std::min(ref.size(), b + 64); ++i) am = std::max(am, std::fabs(ref[i]));
          for (std::size_t i = b; i < std::min(ref.size(), b + 64); ++i)
            CHECK(std::fabs(got[i] - ref[i]) <= tol * am * 1.02 + 1e-6);
        }
      }
      if (k == QuantKind::nf4) CHECK(m.storage_bytes() < std::int64_t(c.params()) * 2);
    }
  }
}

TEST_CASE("load_quantized names a non-finite weight") {
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, true);
  TempDir d;
  lvt_test::write_tiny_model(d.path, c, 3, StDtype::F32);
  {
    SafetensorsFile f(d.path / "model.safetensors");
    std::vector<TensorData> ts;
    for (const auto& t : f.tensors()) {
      auto b = f.bytes(t);
      ts.push_back({{t.name, t.dtype, t.shape}, {b.begin(), b.end()}});
      if (t.name == "model.layers.1.self_attn.o_proj.weight") {
        const float nan = NAN;
        std::memcpy(ts.back().bytes.data() + 4 * 5, &nan, 4);
      }
    }
    write_safetensors(d.path / "model.safetensors", ts);
  }
  PlanOptions o;
  CHECK_THROWS_WITH_AS(load_quantized(d.path, o),
                       doctest::Contains("model.layers.1.self_attn.o_proj.weight"), Error);
}
