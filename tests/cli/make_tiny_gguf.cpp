// Test helper for tests/cli/test_cli_gguf.sh: writes a tiny random-weight llama GGUF file as
// llama.cpp's converter lays one out (q/k rows permuted, ne reversed; layer 0 F32, layer 1
// Q8_0, embeddings F16, norms 1), with the tokenizer metadata of a tokenizer folder as
// convert_hf_to_gguf.py writes it (tests/text/gguf_from_folder.hpp). No Python needed.
//   make_tiny_gguf OUT.gguf TOKENIZER_DIR [--pre NAME] [--template FILE] [--no-tokenizer] [--seed N]
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../text/gguf_from_folder.hpp"
#include "lvt/io/gguf_model.hpp"

int main(int argc, char** argv) try {
  using namespace lvt;
  using namespace lvt::io;
  if (argc < 3) {
    std::fprintf(stderr, "usage: make_tiny_gguf OUT.gguf TOKENIZER_DIR [--pre NAME] [--template FILE] [--no-tokenizer] [--seed N]\n");
    return 2;
  }
  const std::string out = argv[1], tok_dir = argv[2];
  testing::GgufFolderOptions o;
  o.pre = "smollm";
  bool with_tokenizer = true;
  std::uint64_t seed = 1;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-tokenizer") with_tokenizer = false;
    else if (a == "--pre" && i + 1 < argc) o.pre = argv[++i];
    else if (a == "--template" && i + 1 < argc) o.chat_template = testing::read_text_file(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else throw Error("unknown argument '" + a + "'");
  }
  const auto tok = testing::gguf_tokenizer_from_folder(tok_dir, o);

  ModelConfig c{};
  c.arch = Arch::llama;
  c.layers = 2;
  c.hidden = 64;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 16;
  c.ffn = 96;
  c.vocab = int(tok[2].second.array.size());  // tokenizer.ggml.tokens
  c.tied_embeddings = true;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;
  c.max_position = 256;
  std::vector<std::pair<std::string, GgufValue>> meta = {
      {"general.architecture", GgufValue::str("llama")},
      {"general.name", GgufValue::str("lvt tiny test model")},
      {"llama.block_count", GgufValue::u32(std::uint32_t(c.layers))},
      {"llama.context_length", GgufValue::u32(std::uint32_t(c.max_position))},
      {"llama.embedding_length", GgufValue::u32(std::uint32_t(c.hidden))},
      {"llama.feed_forward_length", GgufValue::u32(std::uint32_t(c.ffn))},
      {"llama.attention.head_count", GgufValue::u32(std::uint32_t(c.heads))},
      {"llama.attention.head_count_kv", GgufValue::u32(std::uint32_t(c.kv_heads))},
      {"llama.attention.layer_norm_rms_epsilon", GgufValue::f32(float(c.norm_eps))},
      {"llama.rope.freq_base", GgufValue::f32(float(c.rope_theta))},
      {"llama.rope.dimension_count", GgufValue::u32(std::uint32_t(c.head_dim))},
      {"llama.vocab_size", GgufValue::u32(std::uint32_t(c.vocab))}};
  if (with_tokenizer) meta.insert(meta.end(), tok.begin(), tok.end());

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.08f);
  std::vector<GgufTensorData> tensors;
  for (const WeightSlot& s : weight_slots(c)) {
    std::vector<float> hf(std::size_t(s.numel()));
    const bool norm = s.kind == WeightKind::attn_norm || s.kind == WeightKind::mlp_norm || s.kind == WeightKind::final_norm;
    for (auto& x : hf) x = norm ? 1.0f : normal(rng);
    std::vector<float> v = hf;
    if (s.kind == WeightKind::q || s.kind == WeightKind::k) {  // the converter's permute
      const std::int64_t cols = s.shape[1];
      for (std::int64_t r = 0; r < s.shape[0]; ++r)
        std::copy_n(hf.begin() + r * cols, cols, v.begin() + gguf_permuted_row(r, c.head_dim) * cols);
    }
    GgufTensorData t;
    t.name = gguf_tensor_name(s);
    t.ne.assign(s.shape.rbegin(), s.shape.rend());
    t.type = target_index(s.kind) >= 0 && s.layer == 1 ? GgmlType::Q8_0
             : s.kind == WeightKind::embed                 ? GgmlType::F16
                                                           : GgmlType::F32;
    t.bytes.resize(ggml_row_bytes(t.type, v.size()));
    ggml_quantize(t.type, v.data(), v.size(), t.bytes.data());
    tensors.push_back(std::move(t));
  }
  write_gguf(out, meta, tensors);
  std::printf("%s: tiny llama (%d layers, hidden %d, vocab %d)%s\n", out.c_str(), c.layers, c.hidden, c.vocab,
              with_tokenizer ? ", tokenizer metadata" : ", no tokenizer");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "make_tiny_gguf: %s\n", e.what());
  return 1;
}
