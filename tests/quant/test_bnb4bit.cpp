// bitsandbytes 4-bit checkpoints: packed quant-state JSON, tensor names / shapes / dtypes, folder
// round trip through files, and errors naming missing or inconsistent quant-state tensors.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "lvt/io/bnb4bit.hpp"
#include "../errors.hpp"

using namespace lvt;
using namespace lvt::io;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("lvt_quant_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }


TensorData bf16_tensor(const std::string& name, std::vector<std::int64_t> shape, std::mt19937& rng,
                       float sigma = 0.02f) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<std::byte> b(std::size_t(n) * 2);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t h = to_bf16(d(rng)).bits;
    std::memcpy(b.data() + 2 * i, &h, 2);
  }
  return {{name, StDtype::BF16, shape}, b};
}

// A tiny Llama/phi3-like folder: projections of several shapes (an odd element count, a partial
// last block), embeddings, a norm and lm_head that must be copied, and a tokenizer file.
std::vector<TensorData> tiny_model(unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<TensorData> t;
  t.push_back(bf16_tensor("model.embed_tokens.weight", {64, 32}, rng));
  t.push_back(bf16_tensor("model.layers.0.self_attn.q_proj.weight", {32, 32}, rng));
  t.push_back(bf16_tensor("model.layers.0.self_attn.k_proj.weight", {7, 9}, rng));  // n = 63
  t.push_back(bf16_tensor("model.layers.0.self_attn.qkv_proj.weight", {96, 32}, rng));
  t.push_back(bf16_tensor("model.layers.0.mlp.down_proj.weight", {32, 520}, rng));  // 260 blocks
  t.push_back(bf16_tensor("model.layers.0.mlp.gate_up_proj.weight", {80, 32}, rng));
  t.push_back(bf16_tensor("model.norm.weight", {32}, rng, 1.0f));
  t.push_back(bf16_tensor("lm_head.weight", {64, 32}, rng));
  return t;
}

void write_model(const fs::path& dir, const std::vector<TensorData>& t) {
  fs::create_directories(dir);
  write_safetensors(dir / "model.safetensors", t, {{"format", "pt"}});
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "torch_dtype": "bfloat16"})";
  std::ofstream(dir / "tokenizer.json") << R"({"version": "1.0"})";
}

std::vector<TensorData> read_all(const fs::path& dir) {
  const SafetensorsSet set = SafetensorsSet::open_dir(dir);
  std::vector<TensorData> out;
  for (const auto& [name, ref] : set.tensors()) {
    const auto b = ref.file->bytes(*ref.info);
    out.push_back({{name, ref.info->dtype, ref.info->shape}, {b.begin(), b.end()}});
  }
  return out;
}

std::vector<float> bf16_values(const TensorData& t) {
  std::vector<float> v(t.bytes.size() / 2);
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint16_t h;
    std::memcpy(&h, t.bytes.data() + 2 * i, 2);
    v[i] = to_float(bf16{h});
  }
  return v;
}

}  // namespace

TEST_CASE("packed quant state is json.dumps' bytes") {
  bnb::QuantStateInfo s;
  s.code = quant::Code4::nf4;
  s.blocksize = 64;
  s.dtype = "bfloat16";
  s.shape = {32, 64};
  s.nested = true;
  s.nested_offset = 0.1f;  // torch's .item() of fp32 0.1 is the double 0.10000000149011612
  CHECK(bnb::pack_quant_state(s) ==
        "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [32, 64], "
        "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.10000000149011612}");
  // Python's repr() switches to an exponent below 1e-4 and from 1e16 (strings from CPython's
  // json.dumps of these float32 values):
  s.nested_offset = 1e-5f;
  CHECK(has(bnb::pack_quant_state(s), "\"nested_offset\": 9.999999747378752e-06}"));
  s.nested_offset = 0.00012f;
  CHECK(has(bnb::pack_quant_state(s), "\"nested_offset\": 0.00011999999696854502}"));
  s.nested_offset = 1e16f;
  CHECK(has(bnb::pack_quant_state(s), "\"nested_offset\": 1.0000000272564224e+16}"));
  s.nested_offset = 0.015625f;
  CHECK(has(bnb::pack_quant_state(s), "\"nested_offset\": 0.015625}"));
  bnb::QuantStateInfo f;
  f.code = quant::Code4::fp4;
  f.blocksize = 128;
  f.dtype = "float16";
  f.shape = {7, 3};
  CHECK(bnb::pack_quant_state(f) ==
        "{\"quant_type\": \"fp4\", \"blocksize\": 128, \"dtype\": \"float16\", \"shape\": [7, 3]}");
  // and it parses back
  const std::string js = bnb::pack_quant_state(s);
  const auto back = bnb::unpack_quant_state(std::as_bytes(std::span<const char>(js.data(), js.size())),
                                            "qs", quant::Code4::nf4);
  CHECK(back.nested);
  CHECK(back.nested_offset == 0.015625f);
  CHECK(back.shape == std::vector<std::int64_t>{32, 64});
}

TEST_CASE("quantize a folder: bnb tensor layout, exact values, copies, config") {
  for (const bool dq : {true, false}) {
    for (const quant::Code4 code : {quant::Code4::nf4, quant::Code4::fp4}) {
      CAPTURE(dq);
      TempDir tmp;
      const auto model = tiny_model(std::random_device{}());
      write_model(tmp.path / "in", model);
      bnb::QuantizeOptions opt;
      opt.code = code;
      opt.double_quant = dq;
      opt.block = dq ? 64 : 128;
      opt.max_shard_bytes = 4000;  // several shards + index, as large models have
      const auto rep = bnb::quantize_folder(tmp.path / "in", tmp.path / "out", opt);
      CHECK(rep.quantized == 5);
      CHECK(rep.copied == 3);
      CHECK(fs::exists(tmp.path / "out" / "model.safetensors.index.json"));
      CHECK(fs::exists(tmp.path / "out" / "tokenizer.json"));
      const SafetensorsSet set = SafetensorsSet::open_dir(tmp.path / "out");
      const std::string qt = bnb::quant_type_name(code);
      for (const auto& t : model) {
        const auto* ref = set.find(t.spec.name);
        REQUIRE(ref);
        if (!bnb::is_quantized_projection(t.spec.name, TensorInfo{t.spec.name, t.spec.dtype, t.spec.shape})) {
          const auto b = ref->file->bytes(*ref->info);
          CHECK(std::equal(b.begin(), b.end(), t.bytes.begin(), t.bytes.end()));
          continue;
        }
        const std::string& w = t.spec.name;
        const std::int64_t n = t.spec.shape[0] * t.spec.shape[1];
        const std::int64_t blocks = quant::blocks_of(n, opt.block);
        CHECK(ref->info->dtype == StDtype::U8);
        CHECK(ref->info->shape == std::vector<std::int64_t>{(n + 1) / 2, 1});
        REQUIRE(set.find(w + ".absmax"));
        CHECK(set.find(w + ".absmax")->info->dtype == (dq ? StDtype::U8 : StDtype::F32));
        CHECK(set.find(w + ".absmax")->info->shape == std::vector<std::int64_t>{blocks});
        CHECK(set.find(w + ".quant_map")->info->shape == std::vector<std::int64_t>{16});
        CHECK(bool(set.find(w + ".nested_absmax")) == dq);
        CHECK(bool(set.find(w + ".nested_quant_map")) == dq);
        if (dq)
          CHECK(set.find(w + ".nested_absmax")->info->shape ==
                std::vector<std::int64_t>{(blocks + 255) / 256});
        const auto* qs = set.find(w + ".quant_state.bitsandbytes__" + qt);
        REQUIRE(qs);
        const auto qsb = qs->file->bytes(*qs->info);
        const std::string js(reinterpret_cast<const char*>(qsb.data()), qsb.size());
        CHECK(has(js, "\"shape\": [" + std::to_string(t.spec.shape[0]) + ", " +
                          std::to_string(t.spec.shape[1]) + "]"));
        CHECK(has(js, "\"dtype\": \"bfloat16\""));
        // Loading gives exactly what quantizing the same values in memory gives.
        const bnb::LoadedWeight lw = bnb::read_quant4(set, w);
        const std::vector<float> x = bf16_values(t);
        const quant::Quant4 want = quant::quantize4(code, x.data(), n, opt.block, dq, w);
        CHECK(lw.q.packed == want.packed);
        CHECK(lw.q.absmax == want.absmax);
        CHECK(lw.q.absmax_codes == want.absmax_codes);
        CHECK(lw.q.nested_absmax == want.nested_absmax);
        CHECK(lw.q.offset == want.offset);
        CHECK(js == bnb::pack_quant_state(lw.state));
        std::vector<float> y(static_cast<std::size_t>(n)), z(static_cast<std::size_t>(n));
        quant::dequantize4(lw.q, y.data());
        quant::dequantize4(want, z.data());
        CHECK(y == z);
        double err = 0, ref2 = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
          err += (x[i] - y[i]) * (x[i] - y[i]);
          ref2 += x[i] * x[i];
        }
        CHECK(std::sqrt(err / ref2) < (code == quant::Code4::nf4 ? 0.12 : 0.16));
      }
      const std::vector<std::string> qw = bnb::quantized_weights(set);
      CHECK(qw.size() == 5);
      std::ifstream cf(tmp.path / "out" / "config.json");
      const nlohmann::json cfg = nlohmann::json::parse(cf);
      bnb::check_quantization_config(cfg, "config.json");
      CHECK(cfg["quantization_config"]["bnb_4bit_quant_type"] == qt);
      CHECK(cfg["quantization_config"]["bnb_4bit_use_double_quant"] == dq);
      CHECK(cfg["quantization_config"]["quant_method"] == "bitsandbytes");
      CHECK(cfg["quantization_config"]["bnb_4bit_compute_dtype"] == "bfloat16");
      CHECK(cfg["model_type"] == "llama");
    }
  }
}

TEST_CASE("bnb folders with missing or inconsistent quant state: errors name the tensor") {
  TempDir tmp;
  write_model(tmp.path / "in", tiny_model(77));
  bnb::quantize_folder(tmp.path / "in", tmp.path / "good", {});
  const std::vector<TensorData> good = read_all(tmp.path / "good");
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  auto variant = [&](const std::string& name, auto&& edit) {
    std::vector<TensorData> t = good;
    edit(t);
    fs::create_directories(tmp.path / name);
    write_safetensors(tmp.path / name / "model.safetensors", t);
    return SafetensorsSet::open_dir(tmp.path / name);
  };
  auto drop = [&](const std::string& tensor) {
    return [tensor](std::vector<TensorData>& t) {
      std::erase_if(t, [&](const TensorData& d) { return d.spec.name == tensor; });
    };
  };
  for (const char* part : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"}) {
    const auto set = variant(std::string("miss") + part, drop(w + part));
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, w + part));
    CHECK(has(m, "missing"));
  }
  {
    const auto set = variant("miss_qs", drop(w + ".quant_state.bitsandbytes__nf4"));
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, w + ".quant_state.bitsandbytes__nf4"));
    // the whole-folder check finds the orphaned quant-state tensors on its own
    const std::string v = error_of([&] { bnb::validate_bnb4bit(set); });
    CHECK(has(v, w + ".quant_state.bitsandbytes__nf4"));
    CHECK(has(v, "quant-state tensor of '" + w + "'"));
  }
  {  // the good folder validates, all five weights
    const auto set = SafetensorsSet::open_dir(tmp.path / "good");
    CHECK(bnb::validate_bnb4bit(set).size() == 5);
    const auto bad = variant("miss_nested_validate", drop(w + ".nested_absmax"));
    CHECK(has(error_of([&] { bnb::validate_bnb4bit(bad); }), w + ".nested_absmax"));
  }
  {  // absmax with the wrong number of blocks
    const auto set = variant("bad_absmax", [&](std::vector<TensorData>& t) {
      for (auto& d : t)
        if (d.spec.name == w + ".absmax") {
          d.spec.shape[0] -= 1;
          d.bytes.pop_back();
        }
    });
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, w + ".absmax"));
    CHECK(has(m, "[260]"));
  }
  auto with_state = [&](const std::string& name, const std::string& js, const std::string& key) {
    return variant(name, [&](std::vector<TensorData>& t) {
      drop(w + ".quant_state.bitsandbytes__nf4")(t);
      std::vector<std::byte> b(js.size());
      std::memcpy(b.data(), js.data(), js.size());
      t.push_back({{w + ".quant_state.bitsandbytes__" + key, StDtype::U8, {std::int64_t(js.size())}}, b});
    });
  };
  {
    const auto set = with_state("bad_block", "{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": "
                                "\"bfloat16\", \"shape\": [32, 520], \"nested_blocksize\": 256, "
                                "\"nested_dtype\": \"float32\", \"nested_offset\": 0.01}", "nf4");
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, "quant_state.bitsandbytes__nf4"));
    CHECK(has(m, "'blocksize'"));
  }
  {
    const auto set = with_state("bad_type", "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": "
                                "\"bfloat16\", \"shape\": [32, 520]}", "nf4");
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, "'quant_type'"));
  }
  {  // shape in the state disagrees with the packed weight
    const auto set = with_state("bad_shape", "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
                                "\"bfloat16\", \"shape\": [32, 500], \"nested_blocksize\": 256, "
                                "\"nested_dtype\": \"float32\", \"nested_offset\": 0.01}", "nf4");
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, "'" + w + "'"));
    CHECK(has(m, "[8000, 1]"));
  }
  {  // nested tensors without nested fields
    const auto set = with_state("no_nested_fields", "{\"quant_type\": \"nf4\", \"blocksize\": 64, "
                                "\"dtype\": \"bfloat16\", \"shape\": [32, 520]}", "nf4");
    const std::string m = error_of([&] { bnb::read_quant4(set, w); });
    CHECK(has(m, w + ".nested_absmax"));
    CHECK(has(m, "not double-quantized"));
  }
  {  // a config.json without quantization_config
    const std::string m = error_of([] {
      bnb::check_quantization_config(nlohmann::json{{"model_type", "llama"}}, "in/config.json");
    });
    CHECK(has(m, "in/config.json"));
    CHECK(has(m, "quantization_config"));
  }
  {  // bad block size, non-finite weight, already-quantized input
    bnb::QuantizeOptions o;
    o.block = 100;
    CHECK(has(error_of([&] { bnb::quantize_folder(tmp.path / "in", tmp.path / "o1", o); }), "--block"));
    auto model = tiny_model(5);
    const std::uint16_t nan_bits = 0x7fc0;
    std::memcpy(model[4].bytes.data() + 2 * 1000, &nan_bits, 2);
    write_model(tmp.path / "nan", model);
    const std::string m = error_of([&] { bnb::quantize_folder(tmp.path / "nan", tmp.path / "o2", {}); });
    CHECK(has(m, "model.layers.0.mlp.down_proj.weight"));
    CHECK(has(m, "element 1000"));
    CHECK(has(error_of([&] { bnb::quantize_folder(tmp.path / "good", tmp.path / "o3", {}); }),
              "already quantized"));
  }
}
