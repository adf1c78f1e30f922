// Runs of the training loop on the host backend: the loss falls on real text, an adapter saved,
// loaded and trained on equals uninterrupted training, resume is bit-identical, bad input stops
// with a clear error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "lvt/io/examples.hpp"
#include "lvt/run.hpp"

using namespace lvt;
namespace fs = std::filesystem;

namespace {

// Byte-level tokens (vocab 256) of a real English text: this project's planner documentation.
constexpr ModelConfig bytes_model{.arch = Arch::llama, .layers = 2, .hidden = 64, .heads = 4,
                                  .kv_heads = 2, .head_dim = 16, .ffn = 128, .vocab = 256,
                                  .tied_embeddings = false, .rope_theta = 10000.0,
                                  .norm_eps = 1e-5, .max_position = 256};

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("lvt_run_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

fs::path text_tokens(const fs::path& dir) {
  std::ifstream f(fs::path(LVT_SOURCE_ROOT) / "docs" / "planner.md", std::ios::binary);
  REQUIRE(f);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(text.size() > 4000);
  std::vector<std::uint32_t> tokens(text.begin(), text.end());
  for (auto& t : tokens) t &= 0xff;
  const fs::path p = dir / "text.bin";
  io::write_llmc_tokens(p, tokens, false);
  return p;
}

PlanOptions run_options() {
  PlanOptions o;
  o.batch = 2;
  o.seq = 32;
  o.lora_rank = 8;
  o.lora_alpha = 16;
  o.checkpoint_every = 1;
  return o;
}

FitOptions quiet(std::int64_t steps) {
  FitOptions f;
  f.steps = steps;
  f.lr = 3e-3;
  f.seed = 42;
  f.shuffle = true;
  f.progress = [](const Progress&) {};
  return f;
}

}  // namespace

TEST_CASE("the loss falls when LoRA trains on real text") {
  TempDir tmp;
  const io::TokenDataset data = io::TokenDataset::open(text_tokens(tmp.path), 256);
  Run run(bytes_model, run_options());
  run.init_random_weights(1, 0.08f);
  run.init_lora(2);
  const double before = run.evaluate(data, 8);
  const FitResult r = run.fit(data, quiet(150));
  const double after = run.evaluate(data, 8);
  MESSAGE("eval loss before " << before << ", after 150 steps " << after);
  CHECK(before == doctest::Approx(std::log(256.0)).epsilon(0.05));
  CHECK(after < before - 0.75);  // measured: 5.68 -> 4.70
  CHECK(r.losses.back() < r.losses.front());
}

TEST_CASE("an adapter saved, loaded and trained on equals uninterrupted training; resume is exact") {
  TempDir tmp;
  const io::TokenDataset data = io::TokenDataset::open(text_tokens(tmp.path), 256);
  auto fresh = [] {
    Run r(bytes_model, run_options());
    r.init_random_weights(1, 0.08f);
    r.init_lora(2);
    return r;
  };
  Run straight = fresh();
  FitOptions f = quiet(6);
  f.shuffle = false;
  straight.fit(data, f);
  const std::vector<float> want(straight.backend().lora_params().begin(),
                                straight.backend().lora_params().end());

  // Resume: 3 steps, checkpoint, a new run resumes and does the other 3.
  {
    Run first = fresh();
    FitOptions g = f;
    g.stop_after = 3;  // interrupted half-way through a 6-step schedule
    g.checkpoint_dir = tmp.path / "ckpt";
    first.fit(data, g);
    Run second = fresh();
    second.resume(tmp.path / "ckpt");
    CHECK(second.step() == 3);
    second.fit(data, f);
    const auto got = second.backend().lora_params();
    REQUIRE(got.size() == want.size());
    CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
  }
  // Adapter only (no optimizer state): a run that loads the adapter and trains equals the run
  // that saved it going on with fresh optimizer state (all an adapter carries), bit for bit.
  {
    Run a = fresh();
    FitOptions g = f;
    g.steps = 3;
    a.fit(data, g);
    a.save_adapter(tmp.path / "adapter");
    const io::LoraAdapter saved = a.adapter();
    Run b = fresh();
    b.load_adapter(tmp.path / "adapter");
    a.reset_optimizer();
    a.fit(data, g);
    b.fit(data, g);
    CHECK(std::memcmp(a.backend().lora_params().data(), b.backend().lora_params().data(),
                      a.backend().lora_params().size() * 4) == 0);
    Run c = fresh();  // and training did move the adapter
    CHECK(std::memcmp(c.backend().lora_params().data(), b.backend().lora_params().data(),
                      c.backend().lora_params().size() * 4) != 0);
    // The loaded adapter is the saved one, bit for bit.
    Run d = fresh();
    d.load_adapter(tmp.path / "adapter");
    const io::LoraAdapter loaded = d.adapter();
    REQUIRE(saved.pairs.size() == loaded.pairs.size());
    for (std::size_t i = 0; i < saved.pairs.size(); ++i) {
      CHECK(saved.pairs[i].A == loaded.pairs[i].A);
      CHECK(saved.pairs[i].B == loaded.pairs[i].B);
    }
  }
}

// Byte-level examples: each line of planner.md of 8+ bytes, its first 4 bytes a masked prompt.
io::ExampleSet byte_examples() {
  std::ifstream f(fs::path(LVT_SOURCE_ROOT) / "docs" / "planner.md", std::ios::binary);
  REQUIRE(f);
  io::ExampleSet s;
  s.source = "planner.md";
  std::uint64_t n = 0;
  for (std::string line; std::getline(f, line);) {
    ++n;
    if (line.size() < 8) continue;
    std::vector<std::int32_t> ids;
    std::vector<std::uint8_t> mask;
    for (std::size_t i = 0; i < line.size(); ++i) {
      ids.push_back(std::int32_t(static_cast<unsigned char>(line[i])));
      mask.push_back(i >= 4);
    }
    s.add(ids, mask, n);
  }
  REQUIRE(s.examples() > 40);
  return s;
}

TEST_CASE("packed examples: the loss falls, tokens count no padding, resume is exact") {
  TempDir tmp;
  const io::PackedExamples data(byte_examples(), 32, true);
  REQUIRE(data.rows() >= 8);
  auto fresh = [] {
    Run r(bytes_model, run_options());
    r.init_random_weights(1, 0.08f);
    r.init_lora(2);
    return r;
  };
  Run run = fresh();
  const double before = run.evaluate(data, 4);
  const FitResult r = run.fit(data, quiet(60));
  const double after = run.evaluate(data, 4);
  MESSAGE("packed eval loss before " << before << ", after 60 steps " << after);
  CHECK(after < before - 0.5);
  CHECK(r.tokens < 60 * 2 * 32);  // padding is not counted
  CHECK(r.tokens > 60 * 2 * 16);

  // Stop after 3 of 6 steps with a checkpoint; a new run resumes (shuffled rows, seed 42) and
  // ends bit-identical to the uninterrupted run.
  FitOptions f = quiet(6);
  Run straight = fresh();
  straight.fit(data, f);
  FitOptions g = f;
  g.stop_after = 3;
  g.checkpoint_dir = tmp.path / "ckpt";
  Run first = fresh();
  first.fit(data, g);
  Run second = fresh();
  second.resume(tmp.path / "ckpt");
  second.fit(data, f);
  const auto want = straight.backend().lora_params(), got = second.backend().lora_params();
  REQUIRE(got.size() == want.size());
  CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
  // A packing of another seq is an error, not a silent reshape.
  const io::PackedExamples other(byte_examples(), 16, true);
  CHECK_THROWS_WITH_AS(run.evaluate(other), doctest::Contains("packed into rows of 16 tokens but the run's seq is 32"), Error);
}

TEST_CASE("bad input: adapter that disagrees, token ids beyond the vocabulary, NaN loss") {
  TempDir tmp;
  const io::TokenDataset data = io::TokenDataset::open(text_tokens(tmp.path), 256);
  Run a(bytes_model, run_options());
  a.init_random_weights(1);
  a.save_adapter(tmp.path / "r8");
  PlanOptions o = run_options();
  o.lora_rank = 4;
  Run b(bytes_model, o);
  try {
    b.load_adapter(tmp.path / "r8");
    FAIL("loaded an adapter of another rank");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("field 'r' is 8 but the run uses --lora-r 4") != std::string::npos);
  }
  // A token file made for a bigger vocabulary.
  std::vector<std::uint32_t> big(200, 7);
  big[150] = 300;
  io::write_llmc_tokens(tmp.path / "big.bin", big, false);
  try {
    (void)io::TokenDataset::open(tmp.path / "big.bin", 256);
    FAIL("opened tokens beyond the vocabulary");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("300") != std::string::npos);
  }
  // NaN in a frozen weight: the run stops with the step number and the last good checkpoint.
  Run c(bytes_model, run_options());
  c.init_random_weights(1);
  FitOptions f = quiet(4);
  f.checkpoint_dir = tmp.path / "good";
  f.checkpoint_every = 1;
  c.fit(data, f);
  c.backend().lm_head()[5] = std::nanf("");
  f.steps = 8;
  try {
    c.fit(data, f);
    FAIL("trained through a NaN loss");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("non-finite loss") != std::string::npos);
    CHECK(m.find("optimizer step 5") != std::string::npos);
    CHECK(m.find((tmp.path / "good").string()) != std::string::npos);
  }
  // A sequence longer than the model's positions cannot be planned.
  PlanOptions longer = run_options();
  longer.seq = 512;
  CHECK_THROWS_WITH_AS(Run(bytes_model, longer), doctest::Contains("max_position_embeddings"),
                       Error);
}

TEST_CASE("from_pretrained: a Hugging Face folder and the bnb-4bit folder lvt quantize makes") {
  TempDir tmp;
  // A bf16 Hugging Face folder with random weights: config.json + model.safetensors.
  const fs::path hf = tmp.path / "hf";
  fs::create_directories(hf);
  {
    std::ofstream c(hf / "config.json");
    c << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
             "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
             "num_key_value_heads": 2, "vocab_size": 256, "rms_norm_eps": 1e-05,
             "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": false})";
  }
  std::vector<io::TensorSpec> specs;
  std::vector<std::vector<std::uint16_t>> values;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (const io::WeightSlot& s : io::weight_slots(bytes_model)) {
    const bool norm = s.kind == io::WeightKind::attn_norm || s.kind == io::WeightKind::mlp_norm ||
                      s.kind == io::WeightKind::final_norm;
    std::vector<std::uint16_t> v(std::size_t(s.numel()));
    for (auto& x : v) x = io::float_to_bf16(norm ? 1.0f : nd(rng));
    specs.push_back({s.name, io::StDtype::BF16, s.shape});
    values.push_back(std::move(v));
  }
  {
    io::SafetensorsWriter w(hf / "model.safetensors", specs);
    for (std::size_t i = 0; i < values.size(); ++i)
      w.write(specs[i].name, std::as_bytes(std::span(values[i])));
    w.finish();
  }
  PlanOptions o = run_options();
  Run a = Run::from_pretrained(hf, o, &bytes_model);
  const fs::path tokens = text_tokens(tmp.path);
  const io::TokenDataset data = io::TokenDataset::open(tokens, 256);
  const double loss_hf = a.evaluate(data, 4);
  CHECK(loss_hf == doctest::Approx(std::log(256.0)).epsilon(0.05));

  // The same folder through `lvt quantize`'s code: NF4 + DQ at block 64, the plan's format, so
  // every projection is kept bit for bit and the losses agree exactly.
  const fs::path q = tmp.path / "bnb";
  io::bnb::QuantizeOptions qo;
  io::bnb::quantize_folder(hf, q, qo);
  Run b = Run::from_pretrained(q, o, &bytes_model);
  CHECK(b.bit_exact_weights() == 2 * 7);
  CHECK(b.evaluate(data, 4) == loss_hf);
  // The one door (io::ModelSource): each format detected; a bnb folder's projections offered
  // as stored, and as floats (dequantized) when the visitor declines them; other tensors as floats.
  {
    CHECK(io::ModelSource(hf).format() == io::ModelSource::Format::hf);
    const io::ModelSource src(q, &bytes_model);
    CHECK(src.format() == io::ModelSource::Format::bnb4bit);
    int offered = 0, floats = 0, projections_as_floats = 0;
    std::vector<float> stored;  // the offered 4-bit weight, dequantized
    src.for_each_weight(
        [&](const io::WeightSlot& s, std::span<const float> v) {
          ++floats;
          if (io::target_index(s.kind) < 0) return;
          ++projections_as_floats;
          CHECK(std::equal(v.begin(), v.end(), stored.begin(), stored.end()));
        },
        [&](const io::WeightSlot& s, const quant::Quant4& q4) {
          ++offered;
          CHECK(q4.n == s.numel());
          stored.resize(std::size_t(q4.n));
          quant::dequantize4(q4, stored.data());
          return false;
        });
    CHECK(offered == 2 * 7);
    CHECK(projections_as_floats == 2 * 7);
    CHECK(floats == int(io::weight_slots(bytes_model).size()));
  }

  // A description that disagrees with config.json names the field.
  ModelConfig other = bytes_model;
  other.layers = 3;
  CHECK_THROWS_WITH_AS(Run::from_pretrained(q, o, &other), doctest::Contains("num_hidden_layers"), Error);

  // The same bf16 weights as llama.cpp's converter writes them to GGUF: ne reversed (the bytes of
  // a row-major [out, in] are unchanged), q/k rows permuted (LlamaModel.permute, kv heads for
  // k). Un-permuted on load, the loss is the folder's exactly.
  std::vector<io::GgufTensorData> gt;
  const auto slots = io::weight_slots(bytes_model);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const io::WeightSlot& s = slots[i];
    std::vector<std::uint16_t> v = values[i];
    if (s.kind == io::WeightKind::q || s.kind == io::WeightKind::k) {
      const std::int64_t heads = s.kind == io::WeightKind::q ? bytes_model.heads : bytes_model.kv_heads;
      const std::int64_t rows = s.shape[0], cols = s.shape[1], half = rows / heads / 2;
      for (std::int64_t h = 0; h < heads; ++h)  // reshape(heads, 2, half, cols).swapaxes(1, 2)
        for (std::int64_t a = 0; a < half; ++a)
          for (std::int64_t j = 0; j < 2; ++j)
            std::copy_n(values[i].begin() + ((h * 2 + j) * half + a) * cols, cols,
                        v.begin() + ((h * half + a) * 2 + j) * cols);
    }
    io::GgufTensorData t{io::gguf_tensor_name(s), io::GgmlType::BF16,
                         std::vector<std::uint64_t>(s.shape.rbegin(), s.shape.rend()),
                         std::vector<std::byte>(v.size() * 2)};
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    gt.push_back(std::move(t));
  }
  using GV = io::GgufValue;
  io::write_gguf(tmp.path / "model.gguf",
                 {{"general.architecture", GV::str("llama")}, {"llama.block_count", GV::u32(2)},
                  {"llama.context_length", GV::u32(256)}, {"llama.embedding_length", GV::u32(64)},
                  {"llama.feed_forward_length", GV::u32(128)},
                  {"llama.attention.head_count", GV::u32(4)},
                  {"llama.attention.head_count_kv", GV::u32(2)},
                  {"llama.attention.layer_norm_rms_epsilon", GV::f32(1e-5f)},
                  {"llama.rope.freq_base", GV::f32(10000.0f)}, {"llama.vocab_size", GV::u32(256)}},
                 gt);
  Run g = Run::from_pretrained(tmp.path / "model.gguf", o, &bytes_model);
  CHECK(g.evaluate(data, 4) == loss_hf);
}
