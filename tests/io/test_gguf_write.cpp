// The GGUF writer (io/gguf.hpp GgufWriter, io/gguf_export.hpp): lvt writes, lvt reads back.
// Every tensor as ggml_quantize gives it (f32/f16/bf16 exactly, q8_0/q4_0 = quantize then
// dequantize), the config identical, tied and untied output, the q/k permutation inverted by the
// reader, llama3 rope_freqs recovered, merged GGUF = merged folder within bf16 rounding, and the
// errors. gguf-py reading these files is tests/cli/test_gguf_peer.sh.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "lvt/io/gguf.hpp"
#include "lvt/io/gguf_export.hpp"
#include "lvt/io/gguf_model.hpp"
#include "lvt/io/hf_merge.hpp"
#include "lvt/io/peft.hpp"
#include "tiny_model.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {

std::string gw_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// What a reader must return for `values` stored as `t`.
std::vector<float> stored(GgmlType t, const std::vector<float>& values) {
  std::vector<std::byte> b(std::size_t(ggml_row_bytes(t, values.size())));
  ggml_quantize(t, values.data(), values.size(), b.data());
  std::vector<float> out(values.size());
  ggml_dequantize(t, b.data(), out.size(), out.data(), "stored");
  return out;
}

LoraAdapter random_adapter(const ModelConfig& c, std::uint64_t seed) {
  LoraConfig cfg;
  cfg.r = 3;
  cfg.alpha = 5;
  cfg.targets = targets::all & ~targets::o_proj;
  LoraAdapter a = make_lora_adapter(c, cfg, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (auto& p : a.pairs)
    for (auto& x : p.B) x = nd(rng);
  return a;
}

ModelConfig llama31_like() {
  ModelConfig c{};
  c.arch = Arch::llama;
  c.layers = 1;
  c.hidden = 512;
  c.heads = 4;
  c.kv_heads = 1;
  c.head_dim = 128;
  c.ffn = 64;
  c.vocab = 40;
  c.rope_theta = 500000.0;
  c.rope_scaling = RopeScaling::llama3;
  c.rope_factor = 8.0;
  c.rope_low_freq_factor = 1.0;
  c.rope_high_freq_factor = 4.0;
  c.rope_original_max_position = 8192;
  c.norm_eps = 1e-5;
  c.max_position = 131072;
  return c;
}

}  // namespace

TEST_CASE("gguf writer: streamed bytes equal gguf_serialize's, atomic, errors name the file") {
  TempDir d;
  std::vector<std::pair<std::string, GgufValue>> md = {{"general.architecture", GgufValue::str("llama")},
                                                      {"general.alignment", GgufValue::u32(64)}};
  std::vector<GgufTensorData> ts;
  std::vector<float> x(96);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 3;
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q4_0}) {
    GgufTensorData td{std::string("t") + ggml_type_name(t), t, {32, 3}, {}};
    td.bytes.resize(std::size_t(ggml_row_bytes(t, 96)));
    ggml_quantize(t, x.data(), 96, td.bytes.data());
    ts.push_back(td);
  }
  const auto image = gguf_serialize(md, ts);
  {
    std::vector<GgufTensorDecl> decls;
    for (const auto& t : ts) decls.push_back({t.name, t.type, t.ne});
    GgufWriter w(d.path / "a.gguf", md, decls);
    for (std::size_t i = 0; i < ts.size(); ++i) {
      if (i % 2) w.write(ts[i].name, ts[i].bytes);
      else w.write_float(ts[i].name, x);  // quantized by the writer: the same bytes
    }
    CHECK(w.file_bytes() == image.size());
    w.finish();
  }
  std::ifstream f(d.path / "a.gguf", std::ios::binary);
  const std::string got((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(got.size() == image.size());
  CHECK(std::memcmp(got.data(), image.data(), got.size()) == 0);
  const GgufFile back(d.path / "a.gguf");
  CHECK(back.header().alignment == 64);
  CHECK(back.tensors().size() == 4);

  // No finish (a failure on the way): neither OUT nor the temporary file stays.
  {
    GgufWriter w(d.path / "b.gguf", md, {{"x", GgmlType::F32, {4}}, {"y", GgmlType::F32, {4}}});
    const float v[4] = {1, 2, 3, 4};
    w.write_float("x", v);
    CHECK(contains(gw_error([&] { w.write_float("x", v); }), "'x' written out of order (next declared is 'y')"));
    CHECK(contains(gw_error([&] { w.finish(); }), "b.gguf: tensor 'y' declared but never written"));
  }
  CHECK(!std::filesystem::exists(d.path / "b.gguf"));
  for (const auto& e : std::filesystem::directory_iterator(d.path)) CHECK(e.path().filename() == "a.gguf");
  CHECK(contains(gw_error([&] { GgufWriter w(d.path / "no" / "c.gguf", md, {}); }),
                 "no/c.gguf: cannot create the file"));
  CHECK(contains(gw_error([&] { GgufWriter w(d.path / "c.gguf", md, {{"q", GgmlType::Q8_0, {48, 2}}}); }),
                 "tensor 'q': row length 48 is not a multiple of the Q8_0 block size 32"));
  CHECK(contains(gw_error([&] { (void)parse_gguf_out_type("q5_k"); }),
                 "--type: unknown GGUF type 'q5_k' (lvt writes f32, f16, bf16, q8_0, q4_0)"));
}

TEST_CASE("gguf export: HF folder -> .gguf -> the same config and weights, every type, tied and untied") {
  for (bool tied : {false, true})
    for (const auto& ti : gguf_out_types) {
      CAPTURE(tied);
      CAPTURE(ti.name);
      TempDir d;
      const ModelConfig c = lvt_test::tiny_config(Arch::llama, tied);
      const auto w = lvt_test::write_tiny_model(d.path / "hf", c, 7, StDtype::F32);
      const HfModel hf(d.path / "hf");
      GgufExportOptions o;
      o.type = ti.type;
      o.name = "tiny";
      std::size_t progress = 0;
      o.progress = [&](std::size_t i, std::size_t n, const GgufTensorDecl&) {
        CHECK(i == progress++);
        CHECK(n == hf.slots().size());
      };
      const auto stats = export_gguf(hf, d.path / "m.gguf", o);
      CHECK(stats.tensors == hf.slots().size());
      CHECK(progress == hf.slots().size());
      const GgufModel g(d.path / "m.gguf");
      CHECK(g.config() == c);
      CHECK((g.file().find("output.weight") == nullptr) == tied);
      CHECK(g.file().find_value("general.file_type")->u == ti.ftype);
      CHECK(g.file().find_value("general.name")->s == "tiny");
      CHECK(std::filesystem::file_size(d.path / "m.gguf") == stats.file_bytes);
      for (std::size_t i = 0; i < g.slots().size(); ++i) {
        const WeightSlot& s = g.slots()[i];
        CAPTURE(s.name);
        const GgufTensorInfo& t = g.tensor(i);
        const bool norm = s.shape.size() == 1;
        GgmlType want = norm ? GgmlType::F32 : ti.ggml;
        if (ti.type == GgufOutType::q4_0 && (s.kind == WeightKind::lm_head || (tied && s.kind == WeightKind::embed)))
          want = GgmlType::Q8_0;
        if (!norm && s.shape.back() % 32 != 0 && ggml_type_info(want).block_elems == 32) want = GgmlType::F16;  // ffn_down: 48
        CHECK(ggml_type_name(t.type) == std::string(ggml_type_name(want)));
        CHECK(g.read(i) == stored(t.type, w.at(s.name)));  // q/k rows permuted back by the reader
      }
      // On disk the q rows are the converter's order: GGUF row 2 holds HF row 1 of head 0.
      const auto& q = *g.file().find("blk.0.attn_q.weight");
      std::vector<float> raw = g.file().to_float(q);
      const auto& hq = w.at("model.layers.0.self_attn.q_proj.weight");
      const std::vector<float> want = stored(q.type, hq);
      for (std::int64_t r = 0; r < c.q_dim(); ++r)
        for (std::int64_t k = 0; k < c.hidden; ++k)
          REQUIRE(raw[std::size_t(gguf_permuted_row(r, c.head_dim) * c.hidden + k)] == want[std::size_t(r * c.hidden + k)]);
      CHECK(raw != want);

      // And once more from the .gguf: the same file.
      GgufExportOptions o2;
      o2.type = ti.type;
      o2.name = "tiny";
      if (ti.type == GgufOutType::f32 || ti.type == GgufOutType::f16 || ti.type == GgufOutType::bf16) {
        export_gguf(g, d.path / "m2.gguf", o2);
        CHECK(std::filesystem::file_size(d.path / "m2.gguf") == std::filesystem::file_size(d.path / "m.gguf"));
        const GgufModel g2(d.path / "m2.gguf");
        CHECK(g2.config() == c);
        for (std::size_t i = 0; i < g.slots().size(); ++i) CHECK(g2.read(i) == g.read(i));
      }
    }
}

TEST_CASE("gguf export: llama3 RoPE as rope_freqs.weight, recovered by the reader") {
  TempDir d;
  ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  c.hidden = 64;
  c.head_dim = 16;
  c.rope_scaling = RopeScaling::llama3;
  c.rope_factor = 8.0;
  c.rope_low_freq_factor = 1.0;
  c.rope_high_freq_factor = 8.0;
  c.rope_original_max_position = 4096;  // two medium dimensions with theta 1e4, head dim 16
  c.max_position = 32768;
  const auto w = lvt_test::write_tiny_model(d.path / "hf", c, 3, StDtype::F32);
  CHECK(read_hf_config(d.path / "hf" / "config.json").rope_scaling == RopeScaling::none);  // tiny_model's json
  {
    auto j = nlohmann::json::parse(std::ifstream(d.path / "hf" / "config.json"));
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 8.0},
                         {"original_max_position_embeddings", 4096}};
    j["max_position_embeddings"] = 32768;
    write_text_atomic(d.path / "hf" / "config.json", j.dump());
  }
  const HfModel hf(d.path / "hf");
  REQUIRE(hf.config() == c);
  GgufExportOptions o;
  export_gguf(hf, d.path / "m.gguf", o);
  const GgufModel g(d.path / "m.gguf");
  CHECK(g.config() == c);
  const GgufTensorInfo* rf = g.file().find("rope_freqs.weight");
  REQUIRE(rf != nullptr);
  CHECK(rf->type == GgmlType::F32);
  CHECK(rf->ne == std::vector<std::uint64_t>{8});
  CHECK(g.file().tensors().front().name == "rope_freqs.weight");
  CHECK(g.file().to_float(*rf) == gguf_llama3_rope_freqs(c));
  CHECK(g.file().find_value("llama.rope.scaling.type") == nullptr);
  CHECK(g.file().find_value("llama.rope.scaling.original_context_length") == nullptr);

  // lvt's own table gives the converter's float32 factors to 1e-6.
  std::vector<double> base(8), scaled(8);
  rope_inv_freq(base.data(), c, true);
  rope_inv_freq(scaled.data(), c);
  const auto f = gguf_llama3_rope_freqs(c);
  for (int i = 0; i < 8; ++i) CHECK(std::fabs(base[std::size_t(i)] / scaled[std::size_t(i)] - f[std::size_t(i)]) <= 1e-6 * f[std::size_t(i)]);

  // low_freq_factor != 1: original_context_length written, the numbers come back as given.
  ModelConfig c2 = c;
  c2.rope_low_freq_factor = 2.0;
  c2.rope_high_freq_factor = 16.0;
  c2.rope_original_max_position = 8192;
  GgufExportOptions o2;
  struct Fake : SlotReader<Fake> {
    ModelConfig c;
    std::vector<WeightSlot> s;
    const ModelConfig& config() const { return c; }
    const std::vector<WeightSlot>& slots() const { return s; }
    void read(std::size_t i, std::span<float> out) const {
      for (std::size_t k = 0; k < out.size(); ++k) out[k] = float((k * 7 + i) % 13) / 13.0f;
    }
    using SlotReader<Fake>::read;
  } fake;
  fake.c = c2;
  fake.s = weight_slots(c2);
  export_gguf(fake, d.path / "m3.gguf", o2);
  const GgufModel g3(d.path / "m3.gguf");
  CHECK(g3.file().find_value("llama.rope.scaling.original_context_length")->u == 8192);
  CHECK(g3.config() == c2);
}

TEST_CASE("gguf llama3 recovery: Llama 3.1's factors give its rope_scaling; others a clear error") {
  const ModelConfig want = llama31_like();
  const std::vector<float> f = gguf_llama3_rope_freqs(want);
  ModelConfig c = want;
  c.rope_scaling = RopeScaling::none;
  c.rope_factor = 1.0;
  c.rope_original_max_position = 0;
  ModelConfig got = c;
  gguf_llama3_from_rope_freqs(got, f, "t.gguf: tensor 'rope_freqs.weight'");
  CHECK(got == want);
  // old_len = 16384 with low 2, high 8 gives the same factors: read back as low 1 (old 8192)...
  ModelConfig scaled2 = want;
  scaled2.rope_low_freq_factor = 2.0;
  scaled2.rope_high_freq_factor = 8.0;
  scaled2.rope_original_max_position = 16384;
  got = c;
  gguf_llama3_from_rope_freqs(got, gguf_llama3_rope_freqs(scaled2), "t");
  CHECK(got == want);
  // ...or exactly, given original_context_length.
  got = c;
  got.rope_original_max_position = 16384;
  gguf_llama3_from_rope_freqs(got, gguf_llama3_rope_freqs(scaled2), "t");
  CHECK(got == scaled2);
  // All ones: no scaling.
  got = c;
  gguf_llama3_from_rope_freqs(got, std::vector<float>(64, 1.0f), "t");
  CHECK(got == c);
  // Not llama3: named.
  std::vector<float> bad = f;
  bad[30] *= 1.01f;
  got = c;
  CHECK(contains(gw_error([&] { gguf_llama3_from_rope_freqs(got, bad, "t.gguf: tensor 'rope_freqs.weight'"); }),
                 "t.gguf: tensor 'rope_freqs.weight': no llama3 RoPE scaling"));
  CHECK(contains(gw_error([&] { gguf_llama3_from_rope_freqs(got, std::vector<float>(10, 2.0f), "T"); }),
                 "T: 10 factors, the rotary dimension 128 needs 64"));
}

TEST_CASE("gguf export: merge --gguf equals the merged folder within bf16; a .gguf base too") {
  TempDir d;
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, false);
  lvt_test::write_tiny_model(d.path / "hf", c, 5, StDtype::BF16);
  const LoraAdapter a = random_adapter(c, 9);
  save_lora_adapter(d.path / "ad", a);
  merge_lora(d.path / "hf", d.path / "ad", d.path / "merged");
  const HfModel merged(d.path / "merged");
  const HfModel base(d.path / "hf");
  const LoraAdapter loaded = load_lora_adapter(d.path / "ad", &c);
  GgufExportOptions o;
  o.type = GgufOutType::f32;
  o.adapter = &loaded;
  const auto stats = export_gguf(base, d.path / "m.gguf", o);
  CHECK(stats.merged_pairs == int(a.pairs.size()));
  const GgufModel g(d.path / "m.gguf");
  for (std::size_t i = 0; i < g.slots().size(); ++i) {
    const auto x = g.read(i), y = merged.read(i);
    for (std::size_t k = 0; k < x.size(); ++k) REQUIRE(std::fabs(x[k] - y[k]) <= std::fabs(x[k]) / 256 + 1e-6);
  }
  // A .gguf base: merge --gguf from it equals merge_lora_gguf's folder.
  merge_lora_gguf(d.path / "m.gguf", d.path / "ad", d.path / "merged2");
  const HfModel merged2(d.path / "merged2");
  export_gguf(g, d.path / "m2.gguf", o);
  const GgufModel g2(d.path / "m2.gguf");
  for (std::size_t i = 0; i < g2.slots().size(); ++i) {
    const auto x = g2.read(i), y = merged2.read(i);
    for (std::size_t k = 0; k < x.size(); ++k) REQUIRE(std::fabs(x[k] - y[k]) <= std::fabs(x[k]) / 256 + 1e-6);
  }
}

TEST_CASE("gguf export errors: models a llama GGUF cannot hold, bad tokenizer keys") {
  TempDir d;
  for (Arch arch : {Arch::qwen2, Arch::phi3}) {
    const ModelConfig c = lvt_test::tiny_config(arch, true);
    lvt_test::write_tiny_model(d.path / arch_name(arch), c, 1, StDtype::F32);
    const HfModel m(d.path / arch_name(arch));
    CHECK(contains(gw_error([&] { export_gguf(m, d.path / "x.gguf", {}); }),
                   std::string("GGUF export: ") + arch_name(arch)));
  }
  CHECK(!std::filesystem::exists(d.path / "x.gguf"));
  const ModelConfig c = lvt_test::tiny_config(Arch::llama, true);
  lvt_test::write_tiny_model(d.path / "hf", c, 1, StDtype::F32);
  const HfModel m(d.path / "hf");
  GgufExportOptions o;
  o.tokenizer = {{"general.name", GgufValue::str("x")}};
  CHECK(contains(gw_error([&] { export_gguf(m, d.path / "x.gguf", o); }),
                 "x.gguf: tokenizer metadata key 'general.name' does not start with 'tokenizer.'"));
  CHECK(contains(gw_error([&] { export_gguf(m, d.path / "missing" / "x.gguf", {}); }),
                 "missing/x.gguf: cannot create the file"));
}
