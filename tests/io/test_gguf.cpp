// GGUF: the container (every value type, arrays, v2/v3, alignments) on files written here and by
// the real gguf-py (tests/io/gguf/, tools/peers/make_gguf_goldens.py); dequantization of every
// supported type and Q8_0/Q4_0/F16/BF16 quantization bit for bit against gguf-py; every bound
// error with its message; the llama metadata mapping and the Q/K un-permutation against the
// converter's permute recomputed here.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "../errors.hpp"
#include "io_test_util.hpp"
#include "lvt/io/gguf.hpp"
#include "lvt/io/gguf_model.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace gguf_t {

const std::filesystem::path goldens = std::filesystem::path(LVT_SOURCE_ROOT) / "tests/io/gguf";

// A raw little-endian byte builder, for headers the serializer would refuse to write.
struct Raw {
  std::vector<std::byte> b;
  Raw& u8(std::uint64_t v) { return put(v, 1); }
  Raw& u32(std::uint64_t v) { return put(v, 4); }
  Raw& u64(std::uint64_t v) { return put(v, 8); }
  Raw& put(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(std::byte((v >> (8 * i)) & 0xff));
    return *this;
  }
  Raw& str(const std::string& s) {
    u64(s.size());
    for (char c : s) b.push_back(std::byte(static_cast<unsigned char>(c)));
    return *this;
  }
  Raw& head(std::uint64_t tensors, std::uint64_t kvs, std::uint32_t version = 3) {
    return u32(gguf_magic).u32(version).u64(tensors).u64(kvs);
  }
  Raw& pad(std::size_t a = 32) {
    b.resize(b.size() + (a - b.size() % a) % a);
    return *this;
  }
  Raw& zeros(std::size_t n) {
    b.resize(b.size() + n);
    return *this;
  }
};

std::string gguf_parse_error(const std::vector<std::byte>& b) {
  return error_of([&] { parse_gguf(b, "bad.gguf"); });
}

std::vector<float> randn(std::size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

bool same_float_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

}  // namespace gguf_t

using namespace gguf_t;

TEST_CASE("gguf dequantization: every supported type bit for bit against gguf-py's dequantize") {
  GgufFile f(goldens / "quants.gguf");
  const char* types[] = {"F32",  "F16",  "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                         "Q8_0", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
  for (const char* name : types) {
    CAPTURE(name);
    const GgufTensorInfo* q = f.find(name);
    const GgufTensorInfo* d = f.find(std::string(name) + ".deq");
    REQUIRE(q);
    REQUIRE(d);
    CHECK(std::string(ggml_type_name(q->type)) == name);
    CHECK(d->type == GgmlType::F32);
    CHECK(q->ne == d->ne);
    const std::vector<float> mine = f.to_float(*q), ref = f.to_float(*d);
    CHECK(same_float_bits(mine, ref));
    std::size_t nonzero = 0;
    for (float x : ref) nonzero += x != 0.0f;
    CHECK(nonzero > ref.size() / 2);  // the goldens exercise real values, not zeros
  }
}

TEST_CASE("gguf quantization: Q8_0, Q4_0, F16, BF16 bytes equal gguf-py's quantize") {
  GgufFile f(goldens / "quants.gguf");
  const std::vector<float> x = f.to_float(*f.find("quant.input"));
  REQUIRE(x.size() == 512);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::F16, GgmlType::BF16}) {
    CAPTURE(ggml_type_name(t));
    const GgufTensorInfo* ref = f.find(std::string("quant.") + ggml_type_name(t));
    REQUIRE(ref);
    CHECK(ref->type == t);
    std::vector<std::byte> mine(ggml_row_bytes(t, x.size()));
    ggml_quantize(t, x.data(), x.size(), mine.data());
    const auto want = f.bytes(*ref);
    REQUIRE(mine.size() == want.size());
    CHECK(std::memcmp(mine.data(), want.data(), mine.size()) == 0);
  }
  CHECK(contains(error_of([] {
                   float v[32] = {};
                   std::byte o[64];
                   ggml_quantize(GgmlType::Q4_K, v, 32, o);
                 }),
                 "does not quantize to Q4_K"));
  CHECK(contains(error_of([] {
                   float v[16] = {};
                   std::byte o[64];
                   ggml_quantize_q8_0(v, 16, o);
                 }),
                 "not a multiple of 32"));
}

TEST_CASE("gguf reader: gguf-py's file with every metadata type, alignment 64") {
  GgufFile f(goldens / "metadata.gguf");
  const GgufHeader& h = f.header();
  CHECK(h.version == 3);
  CHECK(h.alignment == 64);
  CHECK(h.data_offset % 64 == 0);
  auto v = [&](const char* k) {
    const GgufValue* x = f.find_value(k);
    REQUIRE_MESSAGE(x, k);
    return *x;
  };
  CHECK(v("general.architecture").s == "llama");
  CHECK((v("t.u8").type == GgufValueType::u8 && v("t.u8").u == 200));
  CHECK((v("t.i8").type == GgufValueType::i8 && v("t.i8").i == -100));
  CHECK((v("t.u16").type == GgufValueType::u16 && v("t.u16").u == 60000));
  CHECK((v("t.i16").type == GgufValueType::i16 && v("t.i16").i == -30000));
  CHECK((v("t.u32").type == GgufValueType::u32 && v("t.u32").u == 4000000000u));
  CHECK((v("t.i32").type == GgufValueType::i32 && v("t.i32").i == -2000000000));
  CHECK((v("t.f32").type == GgufValueType::f32 && v("t.f32").f == double(0.1f)));
  CHECK((v("t.bool").type == GgufValueType::boolean && v("t.bool").u == 1));
  CHECK(v("t.string").s == "h\xc3\xa9llo \xe2\x9c\x93");
  CHECK((v("t.u64").type == GgufValueType::u64 && v("t.u64").u == (1ull << 63) + 5));
  CHECK((v("t.i64").type == GgufValueType::i64 && v("t.i64").i == -(1ll << 62)));
  CHECK((v("t.f64").type == GgufValueType::f64 && v("t.f64").f == 1.0 / 3.0));
  const GgufValue ints = v("t.ints");
  REQUIRE(ints.elem_type == GgufValueType::i32);
  REQUIRE(ints.array.size() == 3);
  CHECK(ints.array[1].i == -2);
  const GgufValue strs = v("t.strings");
  REQUIRE(strs.elem_type == GgufValueType::string);
  REQUIRE(strs.array.size() == 4);
  CHECK(strs.array[1].s.empty());
  CHECK(strs.array[3].s == "\xe6\x97\xa5\xe6\x9c\xac");
  const GgufValue nested = v("t.nested");
  REQUIRE(nested.elem_type == GgufValueType::array);
  REQUIRE(nested.array.size() == 2);
  CHECK(nested.array[0].array.size() == 2);
  CHECK(nested.array[1].array[0].i == 3);

  const GgufTensorInfo* a = f.find("a");
  REQUIRE(a);
  // numpy [2, 3] -> ggml ne {3, 2}; shape() gives the numpy order back.
  CHECK(a->ne == std::vector<std::uint64_t>{3, 2});
  CHECK(a->shape() == std::vector<std::int64_t>{2, 3});
  CHECK(a->offset % 64 == 0);
  CHECK(f.to_float(*a) == std::vector<float>{0, 1, 2, 3, 4, 5});
  const GgufTensorInfo* b = f.find("b");
  REQUIRE(b);
  CHECK(b->type == GgmlType::F16);
  CHECK(b->offset % 64 == 0);
  CHECK(f.to_float(*b) == std::vector<float>{0, 1, 2, 3, 4});
}

TEST_CASE("gguf writer/reader round trip: every value type, v2 and v3, alignments 32 and 128") {
  std::mt19937_64 rng(7);
  using VT = GgufValueType;
  std::vector<std::pair<std::string, GgufValue>> md = {
      {"a.u8", GgufValue::unsigned_of(VT::u8, 255)},
      {"a.i8", GgufValue::signed_of(VT::i8, -128)},
      {"a.u16", GgufValue::unsigned_of(VT::u16, 65535)},
      {"a.i16", GgufValue::signed_of(VT::i16, -32768)},
      {"a.u32", GgufValue::u32(4294967295u)},
      {"a.i32", GgufValue::signed_of(VT::i32, -2147483647 - 1)},
      {"a.f32", GgufValue::f32(-1.5e-3f)},
      {"a.bool", GgufValue::boolean(false)},
      {"a.string", GgufValue::str(std::string("nul\0inside", 10))},
      {"a.u64", GgufValue::u64(~0ull)},
      {"a.i64", GgufValue::signed_of(VT::i64, INT64_MIN)},
      {"a.f64", GgufValue::float_of(VT::f64, -0.0)},
      {"a.strings", GgufValue::array_of(VT::string, {GgufValue::str("x"), GgufValue::str("")})},
      {"a.empty", GgufValue::array_of(VT::f32, {})},
      {"a.nested", GgufValue::array_of(VT::array, {GgufValue::array_of(VT::u8, {GgufValue::unsigned_of(VT::u8, 9)}),
                                                   GgufValue::array_of(VT::string, {GgufValue::str("deep")})})},
  };
  for (std::uint32_t version : {2u, 3u})
    for (std::uint32_t align : {32u, 128u}) {
      CAPTURE(version);
      CAPTURE(align);
      auto m = md;
      if (align != 32) m.push_back({"general.alignment", GgufValue::u32(align)});
      std::vector<GgufTensorData> ts;
      const std::vector<float> v1 = randn(7, rng), v2 = randn(64, rng);
      ts.push_back({"odd", GgmlType::F32, {7}, f32_bytes(v1)});  // 28 bytes: forces padding
      std::vector<std::byte> q(ggml_row_bytes(GgmlType::Q8_0, 64));
      ggml_quantize(GgmlType::Q8_0, v2.data(), 64, q.data());
      ts.push_back({"q", GgmlType::Q8_0, {32, 2}, q});
      std::vector<std::byte> h(128);
      ggml_quantize(GgmlType::F16, v2.data(), 64, h.data());
      ts.push_back({"h", GgmlType::F16, {4, 4, 2, 2}, h});
      TempDir dir;
      write_gguf(dir.path / "x.gguf", m, ts, version);
      GgufFile f(dir.path / "x.gguf");
      CHECK(f.header().version == version);
      CHECK(f.header().alignment == align);
      CHECK(f.header().data_offset % align == 0);
      REQUIRE(f.metadata().size() == m.size());
      for (std::size_t i = 0; i < m.size(); ++i) {
        CAPTURE(m[i].first);
        CHECK(f.metadata()[i].key == m[i].first);
        CHECK(f.metadata()[i].value == m[i].second);
      }
      REQUIRE(f.tensors().size() == 3);
      for (const auto& t : f.tensors()) CHECK(t.offset % align == 0);
      CHECK(f.to_float(*f.find("odd")) == v1);
      CHECK(f.find("h")->shape() == std::vector<std::int64_t>{2, 2, 4, 4});
      const std::vector<float> hq = f.to_float(*f.find("h"));
      for (std::size_t i = 0; i < 64; ++i) CHECK(hq[i] == fp16_to_float(float_to_fp16(v2[i])));
      const std::vector<float> qq = f.to_float(*f.find("q"));
      for (std::size_t i = 0; i < 64; ++i) CHECK(std::fabs(qq[i] - v2[i]) <= 0.02f);
    }
  // No tensors, no padding after the metadata: still a valid file.
  const auto b = gguf_serialize({{"k", GgufValue::u32(1)}}, {});
  CHECK(parse_gguf(b, "empty.gguf").tensors.empty());
}

TEST_CASE("gguf bad input: each bound names the file, key or tensor, and the byte offset") {
  CHECK(contains(gguf_parse_error({}), "bad.gguf: not a GGUF file"));
  CHECK(contains(gguf_parse_error(Raw().u32(0x46554746).u32(3).u64(0).u64(0).b), "not a GGUF file"));
  CHECK(contains(gguf_parse_error(Raw().u32(gguf_magic).b), "header: truncated: version needs 4 bytes"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 0, 1).b), "GGUF version 1 is not supported"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 0, 4).b), "header: unknown GGUF version 4 (lvt reads 2 and 3) (at byte 4)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 0, 0x03000000).b), "big-endian"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1ull << 60).b), "metadata count 1152921504606846976 cannot fit"));
  CHECK(contains(gguf_parse_error(Raw().head(1ull << 40, 0).b), "tensor count 1099511627776 cannot fit in the file (24 bytes) (at byte 8)"));

  // kv: key length past the end; value type; bool; duplicate; string / array lengths; nesting
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).u64(1000).zeros(20).b),
                 "metadata entry 0: key length 1000 runs past the end of the file (20 bytes left) (at byte 24)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("k.x").u32(13).zeros(16).b),
                 "bad.gguf: key 'k.x': unknown value type 13 (at byte 35)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("k.b").u32(7).u8(2).zeros(12).b),
                 "key 'k.b': bool value 2 is neither 0 nor 1 (at byte 39)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 2).str("k").u32(0).u8(1).str("k").u32(0).u8(2).b),
                 "key 'k': appears twice in the metadata (at byte 38)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("s").u32(8).u64(99).zeros(12).b),
                 "key 's': string length 99 runs past the end of the file (12 bytes left) (at byte 37)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("a").u32(9).u32(4).u64(1000).zeros(40).b),
                 "key 'a': array of 1000 uint32 values cannot fit in the 40 bytes left in the file (at byte 37)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("a").u32(9).u32(77).u64(1).zeros(40).b),
                 "key 'a': unknown array element type 77"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("a").u32(9).u32(8).u64(1).u64(1ull << 62).zeros(4).b),
                 "key 'a': string length 4611686018427387904 runs past the end"));
  {
    Raw r;
    r.head(0, 1).str("deep").u32(9);
    for (int i = 0; i < 12; ++i) r.u32(9).u64(1);
    r.zeros(64);
    CHECK(contains(gguf_parse_error(r.b), "key 'deep': arrays nested deeper than 8"));
  }
  {
    Raw r;
    r.head(0, 1).str("big").u32(9).u32(0).u64(gguf_max_metadata_values);
    r.zeros(std::size_t(gguf_max_metadata_values));
    CHECK(contains(gguf_parse_error(r.b), "key 'big': the metadata holds more than 8388608 values (lvt's limit)"));
  }
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("general.alignment").u32(10).u64(32).zeros(8).b),
                 "key 'general.alignment': expected a uint32, got uint64 (at byte 24)"));
  CHECK(contains(gguf_parse_error(Raw().head(0, 1).str("general.alignment").u32(4).u32(48).zeros(8).b),
                 "key 'general.alignment': 48 is not a power of two"));

  // tensor infos
  auto tensor = [](Raw& r, const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type,
                   std::uint64_t off) {
    r.str(name).u32(ne.size());
    for (auto d : ne) r.u64(d);
    r.u32(type).u64(off);
  };
  {
    Raw r;
    r.head(1, 0);
    tensor(r, std::string(65, 'n'), {4}, 0, 0);
    CHECK(contains(gguf_parse_error(r.pad().zeros(16).b), "longer than GGUF's 64 (at byte 24)"));
  }
  {
    Raw r;
    r.head(2, 0);
    tensor(r, "w", {4}, 0, 0);
    tensor(r, "w", {4}, 0, 32);
    CHECK(contains(gguf_parse_error(r.pad().zeros(64).b), "tensor 'w': appears twice (at byte 57)"));
  }
  for (std::uint32_t nd : {0u, 5u}) {
    Raw r;
    r.head(1, 0).str("w").u32(nd);
    for (std::uint32_t i = 0; i < nd; ++i) r.u64(1);
    r.u32(0).u64(0).pad().zeros(32);
    CHECK(contains(gguf_parse_error(r.b), "tensor 'w': " + std::to_string(nd) + " dimensions (ggml allows 1 to 4) (at byte 33)"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {1ull << 32, 1ull << 32}, 0, 0);
    CHECK(contains(gguf_parse_error(r.pad().zeros(32).b), "tensor 'w': dimensions overflow int64 (ne[1] = 4294967296) (at byte 45)"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {1ull << 61}, 0, 0);
    CHECK(contains(gguf_parse_error(r.pad().zeros(32).b), "tensor 'w': byte size overflows int64"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {4}, 5, 0);
    CHECK(contains(gguf_parse_error(r.pad().zeros(32).b), "tensor 'w': unknown ggml type 5 (at byte 45)"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {48}, 12, 0);
    CHECK(contains(gguf_parse_error(r.pad().zeros(300).b), "row length ne[0] = 48 is not a multiple of the Q4_K block size 256"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {4}, 0, 8);
    CHECK(contains(gguf_parse_error(r.pad().zeros(64).b), "tensor 'w': data offset 8 is not a multiple of the alignment 32 (at byte 49)"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {32}, 0, 0);
    CHECK(contains(gguf_parse_error(r.pad().zeros(100).b),
                   "tensor 'w': data [0, +128 bytes) runs past the end of the data section (100 bytes): truncated file? (at byte 24)"));
  }
  {
    Raw r;
    r.head(1, 0);
    tensor(r, "w", {4}, 0, 0);
    CHECK(contains(gguf_parse_error(r.b), "data section: starts at byte 64, past the end of the file (57 bytes)"));
  }
  {
    Raw r;
    r.head(2, 0);
    tensor(r, "a", {16}, 0, 0);
    tensor(r, "b", {4}, 0, 32);
    CHECK(contains(gguf_parse_error(r.pad().zeros(64).b), "tensor 'b': data at offset 32 overlaps tensor 'a' [0, 64)"));
  }
  // Truncating a valid file anywhere gives an error, never a crash.
  std::mt19937_64 rng(3);
  const auto good = gguf_serialize({{"general.alignment", GgufValue::u32(64)},
                                    {"s", GgufValue::array_of(GgufValueType::string, {GgufValue::str("ab")})}},
                                   {{"w", GgmlType::F32, {3}, f32_bytes(randn(3, rng))}});
  const GgufHeader gh = parse_gguf(good, "ok.gguf");
  CHECK(gh.tensors.size() == 1);
  for (std::size_t n = 0; n < gh.data_offset + 12; ++n) {  // after that only padding is cut
    CAPTURE(n);
    std::vector<std::byte> cut(good.begin(), good.begin() + std::ptrdiff_t(n));
    CHECK(contains(gguf_parse_error(cut), "bad.gguf: "));
  }
  // Dequantizing a type lvt does not read names it.
  CHECK(contains(error_of([] {
                   std::byte b[66] = {};
                   float y[256];
                   ggml_dequantize(GgmlType::IQ2_XXS, b, 256, y, "x.gguf: tensor 't'");
                 }),
                 "x.gguf: tensor 't': ggml type IQ2_XXS cannot be read"));
}

namespace gguf_t {

// A tiny llama in Hugging Face layout: every slot's values by canonical name.
struct GgufTinyLlama {
  ModelConfig c{};
  std::vector<WeightSlot> slots;
  std::vector<std::vector<float>> values;
  explicit GgufTinyLlama(bool tied, std::uint64_t seed = 1) {
    c.arch = Arch::llama;
    c.layers = 2;
    c.hidden = 64;
    c.heads = 4;
    c.kv_heads = 2;
    c.head_dim = 16;
    c.ffn = 96;
    c.vocab = 40;
    c.tied_embeddings = tied;
    c.rope_theta = 500000.0;
    c.norm_eps = 1e-5;
    c.max_position = 256;
    slots = weight_slots(c);
    std::mt19937_64 rng(seed);
    for (const auto& s : slots) values.push_back(randn(std::size_t(s.numel()), rng));
  }
};

// The converter's LlamaModel.permute, recomputed as numpy does it: w.reshape(n_head, 2,
// rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols). out[h][i][j] = in[h][j][i].
std::vector<float> converter_permute(const std::vector<float>& w, std::int64_t rows,
                                     std::int64_t cols, std::int64_t n_head) {
  const std::int64_t half = rows / n_head / 2;
  std::vector<float> out(w.size());
  for (std::int64_t h = 0; h < n_head; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (std::int64_t j = 0; j < 2; ++j)
        for (std::int64_t k = 0; k < cols; ++k) {
          const std::int64_t src = ((h * 2 + j) * half + i) * cols + k;  // [h][j][i][k]
          const std::int64_t dst = ((h * half + i) * 2 + j) * cols + k;  // [h][i][j][k]
          out[std::size_t(dst)] = w[std::size_t(src)];
        }
  return out;
}

std::vector<std::pair<std::string, GgufValue>> llama_metadata(const ModelConfig& c) {
  return {{"general.architecture", GgufValue::str("llama")},
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
}

// The GGUF tensors of a tiny llama as the converter writes them: ne reversed, q/k permuted,
// projections of layer 1 as Q8_0 (layer 0 F32), norms F32, embeddings F16.
std::vector<GgufTensorData> llama_tensors(const GgufTinyLlama& m) {
  std::vector<GgufTensorData> ts;
  for (std::size_t i = 0; i < m.slots.size(); ++i) {
    const WeightSlot& s = m.slots[i];
    std::vector<float> v = m.values[i];
    if (s.kind == WeightKind::q) v = converter_permute(v, s.shape[0], s.shape[1], m.c.heads);
    if (s.kind == WeightKind::k) v = converter_permute(v, s.shape[0], s.shape[1], m.c.kv_heads);
    GgufTensorData t;
    t.name = gguf_tensor_name(s);
    t.ne.assign(s.shape.rbegin(), s.shape.rend());
    t.type = target_index(s.kind) >= 0 && s.layer == 1 ? GgmlType::Q8_0
             : s.kind == WeightKind::embed || s.kind == WeightKind::lm_head ? GgmlType::F16
                                                                              : GgmlType::F32;
    t.bytes.resize(ggml_row_bytes(t.type, v.size()));
    ggml_quantize(t.type, v.data(), v.size(), t.bytes.data());
    ts.push_back(std::move(t));
  }
  return ts;
}

// What lvt must read for slot i: the HF values through the file's type (F16 / Q8_0 rounding
// applied to the permuted rows, which are the same rows un-permuted).
std::vector<float> expected_values(const GgufTinyLlama& m, std::size_t i, GgmlType type) {
  const WeightSlot& s = m.slots[i];
  const std::vector<float>& v = m.values[i];
  if (type == GgmlType::F32) return v;
  std::vector<float> out(v.size());
  const std::size_t cols = std::size_t(s.shape.back());
  std::vector<std::byte> q(ggml_row_bytes(type, cols));
  for (std::size_t r = 0; r < v.size() / cols; ++r) {  // row-wise: blocks never cross rows
    ggml_quantize(type, v.data() + r * cols, cols, q.data());
    ggml_dequantize(type, q.data(), cols, out.data() + r * cols, "expected");
  }
  return out;
}

}  // namespace gguf_t

TEST_CASE("gguf llama: metadata -> ModelConfig, HF names, q/k un-permuted, tied and untied") {
  for (bool tied : {false, true}) {
    CAPTURE(tied);
    GgufTinyLlama m(tied);
    TempDir dir;
    const auto path = dir.path / "tiny.gguf";
    const auto ts = llama_tensors(m);
    write_gguf(path, llama_metadata(m.c), ts);
    GgufModel g(path, &m.c);
    CHECK(g.config() == m.c);
    REQUIRE(g.slots().size() == m.slots.size());
    std::size_t i = 0;
    g.for_each_weight([&](const WeightSlot& s, std::span<const float> v) {
      CAPTURE(s.name);
      CHECK(s.name == m.slots[i].name);
      CHECK(same_float_bits(v, expected_values(m, i, ts[i].type)));
      ++i;
    });
    CHECK(i == m.slots.size());
    CHECK(g.tensor(1).name == "blk.0.attn_norm.weight");
  }
}

TEST_CASE("gguf llama: the un-permutation inverts the converter's permute (q heads, k kv heads)") {
  for (auto [rows, heads] : {std::pair<std::int64_t, std::int64_t>{64, 4}, {32, 2}, {12, 3}, {128, 1}}) {
    const std::int64_t hd = rows / heads, cols = 3;
    std::vector<float> w(std::size_t(rows * cols));
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(i);
    const std::vector<float> p = converter_permute(w, rows, cols, heads);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t k = 0; k < cols; ++k)
        CHECK(p[std::size_t(gguf_permuted_row(r, hd) * cols + k)] == w[std::size_t(r * cols + k)]);
  }
  // It is not the identity: a reader that skipped it would fail the model test above.
  CHECK(gguf_permuted_row(1, 16) == 2);
  CHECK(gguf_permuted_row(8, 16) == 1);
}

TEST_CASE("gguf llama: optional keys, vocab from tokens, rope scaling, head_dim") {
  GgufTinyLlama m(true);
  auto ts = llama_tensors(m);
  auto with = [&](std::vector<std::pair<std::string, GgufValue>> md) {
    return gguf_llama_config(parse_gguf(gguf_serialize(md, ts), "t.gguf"), "t.gguf");
  };
  auto md = llama_metadata(m.c);
  CHECK(with(md) == m.c);
  // No head_count_kv: MHA. No vocab_size: the token list, else token_embd's rows.
  auto drop = [](auto v, const std::string& key) {
    std::erase_if(v, [&](const auto& kv) { return kv.first == key; });
    return v;
  };
  auto no_kv = drop(md, "llama.attention.head_count_kv");
  CHECK(with(no_kv).kv_heads == 4);
  auto no_vocab = drop(md, "llama.vocab_size");
  CHECK(with(no_vocab).vocab == 40);
  std::vector<GgufValue> toks;
  for (int i = 0; i < 40; ++i) toks.push_back(GgufValue::str(std::to_string(i) + "t"));
  no_vocab.push_back({"tokenizer.ggml.tokens", GgufValue::array_of(GgufValueType::string, toks)});
  CHECK(with(no_vocab).vocab == 40);
  auto defaults = drop(drop(md, "llama.rope.freq_base"), "llama.rope.dimension_count");
  CHECK(with(defaults).rope_theta == 10000.0);
  CHECK(with(defaults).partial_rotary_factor == 1.0);
  auto lin = md;
  lin.push_back({"llama.rope.scaling.type", GgufValue::str("linear")});
  lin.push_back({"llama.rope.scaling.factor", GgufValue::f32(4.0f)});
  CHECK(with(lin).rope_scaling == RopeScaling::linear);
  CHECK(with(lin).rope_factor == 4.0);
  auto old = md;
  old.push_back({"llama.rope.scale_linear", GgufValue::f32(2.0f)});
  CHECK(with(old).rope_factor == 2.0);
  auto kl = md;
  kl.push_back({"llama.attention.key_length", GgufValue::u32(16)});
  CHECK(with(kl).head_dim == 16);
  auto u64s = md;  // counts may be any integer type
  u64s[1].second = GgufValue::u64(2);
  CHECK(with(u64s).layers == 2);
}

TEST_CASE("gguf llama bad input: keys, tensors and shapes named") {
  GgufTinyLlama m(false);
  const auto ts = llama_tensors(m);
  const auto md = llama_metadata(m.c);
  TempDir dir;
  auto open = [&](const std::vector<std::pair<std::string, GgufValue>>& meta,
                  const std::vector<GgufTensorData>& tensors, const ModelConfig* expected = nullptr) {
    const auto p = dir.path / "m.gguf";
    write_gguf(p, meta, tensors);
    return error_of([&] { GgufModel g(p, expected); });
  };
  auto set = [](auto v, const std::string& key, GgufValue x) {
    for (auto& kv : v)
      if (kv.first == key) kv.second = x;
    return v;
  };
  auto drop = [](auto v, const std::string& key) {
    std::erase_if(v, [&](const auto& kv) { return kv.first == key; });
    return v;
  };
  CHECK(contains(open(set(md, "general.architecture", GgufValue::str("qwen2")), ts),
                 "m.gguf: key 'general.architecture': architecture 'qwen2' is not supported"));
  CHECK(contains(open(drop(md, "llama.block_count"), ts),
                 "m.gguf: key 'llama.block_count': missing (required)"));
  CHECK(contains(open(drop(md, "llama.attention.layer_norm_rms_epsilon"), ts),
                 "key 'llama.attention.layer_norm_rms_epsilon': missing (required)"));
  CHECK(contains(open(set(md, "llama.embedding_length", GgufValue::str("64")), ts),
                 "key 'llama.embedding_length': expected an integer, got string (at byte"));
  CHECK(contains(open(set(md, "llama.attention.head_count", GgufValue::signed_of(GgufValueType::i32, -4)), ts),
                 "key 'llama.attention.head_count': negative (-4)"));
  CHECK(contains(open(set(md, "llama.attention.head_count",
                          GgufValue::array_of(GgufValueType::u32, {GgufValue::u32(4), GgufValue::u32(4)})), ts),
                 "key 'llama.attention.head_count': an array (per-layer values"));
  CHECK(contains(open(set(md, "llama.feed_forward_length", GgufValue::u64(1ull << 40)), ts),
                 "key 'llama.feed_forward_length': 1099511627776 exceeds lvt's limit of 16777216"));
  CHECK(contains(open(set(md, "llama.rope.freq_base", GgufValue::u32(10000)), ts),
                 "key 'llama.rope.freq_base': expected a float32 or float64, got uint32"));
  auto yarn = md;
  yarn.push_back({"llama.rope.scaling.type", GgufValue::str("yarn")});
  CHECK(contains(open(yarn, ts), "key 'llama.rope.scaling.type': 'yarn' is not supported"));
  CHECK(contains(open(set(md, "llama.attention.head_count_kv", GgufValue::u32(3)), ts),
                 "m.gguf: num_attention_heads must be a multiple of num_key_value_heads"));
  // tensors
  auto missing = ts;
  std::erase_if(missing, [](const auto& t) { return t.name == "blk.1.ffn_up.weight"; });
  CHECK(contains(open(md, missing), "m.gguf: tensor 'blk.1.ffn_up.weight' missing (the metadata implies it, as "
                                    "model.layers.1.mlp.up_proj.weight)"));
  auto extra = ts;
  extra.push_back({"blk.0.attn_q.bias", GgmlType::F32, {64}, std::vector<std::byte>(256)});
  CHECK(contains(open(md, extra), "tensor 'blk.0.attn_q.bias' is not part of lvt's llama block"));
  auto rope = ts;
  rope.push_back({"rope_freqs.weight", GgmlType::F32, {8}, std::vector<std::byte>(32)});
  CHECK(contains(open(md, rope), "tensor 'rope_freqs.weight': factor 0 is 0.000000 (RoPE factors are positive)"));
  rope.back().ne = {4};
  rope.back().bytes.resize(16);
  CHECK(contains(open(md, rope), "tensor 'rope_freqs.weight': 4 factors, the rotary dimension"));
  auto swapped = ts;  // [out, in] written without reversing: ne {out, in}
  for (auto& t : swapped)
    if (t.name == "blk.0.ffn_down.weight") t.ne = {64, 96};
  CHECK(contains(open(md, swapped), "tensor 'blk.0.ffn_down.weight' has shape [96, 64] (ne [64, 96]) but the "
                                    "metadata implies [64, 96] (ne [96, 64])"));
  auto odd_type = ts;
  for (auto& t : odd_type)
    if (t.name == "output_norm.weight") {
      t.type = GgmlType::I32;
      t.bytes.assign(256, std::byte{0});
    }
  CHECK(contains(open(md, odd_type), "tensor 'output_norm.weight' has ggml type I32, which lvt cannot dequantize"));
  ModelConfig other = m.c;
  other.layers = 3;
  CHECK(contains(open(md, ts, &other), "m.gguf: field 'num_hidden_layers' is 2 but the model description says 3"));
}
