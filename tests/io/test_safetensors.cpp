// safetensors: round trips on random tensors, dtype conversions, sharded folders, and every
// malformed-file rule of the format (each error names the file and, where there is one, the
// tensor).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "lvt/io/safetensors.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {

std::vector<std::byte> random_bytes(std::size_t n, std::mt19937_64& rng) {
  std::vector<std::byte> b(n);
  for (auto& x : b) x = std::byte(rng() & 0xff);
  return b;
}

// A file image from a header text and a data section, with the 8-byte length in front.
std::vector<std::byte> image(const std::string& header, std::size_t data_bytes,
                             std::uint64_t claimed_len = UINT64_MAX) {
  const std::uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  std::vector<std::byte> f(8);
  for (int i = 0; i < 8; ++i) f[i] = std::byte((n >> (8 * i)) & 0xff);
  for (char c : header) f.push_back(std::byte(c));
  for (std::size_t i = 0; i < data_bytes; ++i) f.push_back(std::byte(i * 7 + 1));
  return f;
}

std::string parse_error(const std::vector<std::byte>& f) {
  try {
    parse_safetensors(f, "w/model.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}


}  // namespace

TEST_CASE("safetensors round trip: random tensors of every width, metadata, zero-copy views") {
  std::mt19937_64 rng(1234);
  TempDir d;
  const auto path = d.path / "t.safetensors";
  std::vector<TensorData> ts = {
      {{"model.embed_tokens.weight", StDtype::BF16, {7, 5}}, {}},
      {{"a.f32", StDtype::F32, {3, 4, 2}}, {}},
      {{"b.f16", StDtype::F16, {9}}, {}},
      {{"c.i64", StDtype::I64, {2}}, {}},
      {{"d.u8", StDtype::U8, {13}}, {}},
      {{"e.empty", StDtype::F32, {0, 4}}, {}},
      {{"f.scalar", StDtype::F64, {}}, {}},
      {{"g.f8", StDtype::F8_E4M3, {3}}, {}},
  };
  for (auto& t : ts) t.bytes = random_bytes(t.spec.nbytes(), rng);
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "lvt test"}});

  SafetensorsFile f(path);
  REQUIRE(f.tensors().size() == ts.size());
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "lvt test");
  // Data section 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  CHECK((8 + n) % 8 == 0);
  for (const auto& t : ts) {
    CAPTURE(t.spec.name);
    const TensorInfo& info = f.at(t.spec.name);
    CHECK(info.dtype == t.spec.dtype);
    CHECK(info.shape == t.spec.shape);
    auto b = f.bytes(info);
    REQUIRE(b.size() == t.bytes.size());
    CHECK((b.empty() || std::memcmp(b.data(), t.bytes.data(), b.size()) == 0));
  }
  CHECK(f.find("nope") == nullptr);
  try {
    (void)f.at("nope");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), path.string()));
    CHECK(contains(e.what(), "'nope'"));
  }
  // Views point into the map: the same address on every call.
  CHECK(f.bytes(f.at("a.f32")).data() == f.bytes(f.at("a.f32")).data());
  // No temporary file left behind.
  int files = 0;
  for (auto it = std::filesystem::directory_iterator(d.path); it != std::filesystem::directory_iterator(); ++it) ++files;
  CHECK(files == 1);
}

TEST_CASE("float conversions: bf16 and fp16 round to nearest-even, read back exactly") {
  // Known values.
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  CHECK(float_to_bf16(1.0f + 1.0f / 256) == 0x3f80);            // tie -> even (down)
  CHECK(float_to_bf16(1.0f + 3.0f / 256) == 0x3f82);            // tie -> even (up)
  CHECK(float_to_bf16(-2.5f) == 0xc020);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  CHECK(float_to_fp16(1.0f) == 0x3c00);
  CHECK(float_to_fp16(65504.0f) == 0x7bff);
  CHECK(float_to_fp16(65520.0f) == 0x7c00);                     // rounds to infinity
  CHECK(float_to_fp16(-0.0f) == 0x8000);
  CHECK(float_to_fp16(5.9604644775390625e-8f) == 0x0001);       // smallest subnormal
  CHECK(fp16_to_float(0x0001) == 5.9604644775390625e-8f);
  CHECK(fp16_to_float(0x03ff) == 6.097555160522461e-05f);
  CHECK(fp16_to_float(0xfc00) == -INFINITY);
  CHECK(std::isnan(fp16_to_float(float_to_fp16(NAN))));

  std::mt19937_64 rng(99);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-26, 16);
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = std::ldexp(u(rng), e(rng));
    // bf16: the rounded value is the nearest of the two bf16 neighbours (ties to even).
    const float b = bf16_to_float(float_to_bf16(x));
    const std::uint32_t xb = std::bit_cast<std::uint32_t>(x);
    const float lo = std::bit_cast<float>(xb & 0xffff0000u);
    const float hi = std::bit_cast<float>((xb & 0xffff0000u) + 0x10000u);
    const double dl = std::fabs(double(x) - lo), dh = std::fabs(double(hi) - x);
    CHECK((b == (dl < dh ? lo : dh < dl ? hi : ((xb >> 16) & 1 ? hi : lo))));
#ifdef __FLT16_MAX__
    // fp16: against the compiler's _Float16 conversion (IEEE round to nearest-even).
    const _Float16 r = static_cast<_Float16>(x);
    std::uint16_t rb;
    std::memcpy(&rb, &r, 2);
    CHECK(float_to_fp16(x) == rb);
    CHECK(fp16_to_float(rb) == static_cast<float>(r));
#endif
    ++checked;
  }
  CHECK(checked == 200000);

  // Array conversion through a file: bf16/fp16/f32/f64 -> float.
  TempDir d;
  std::vector<float> v(1000);
  for (auto& x : v) x = u(rng) * 100;
  SafetensorsWriter w(d.path / "c.safetensors", {{"bf", StDtype::BF16, {10, 100}},
                                                 {"hf", StDtype::F16, {1000}},
                                                 {"f", StDtype::F32, {1000}}});
  w.write_float("bf", v);
  w.write_float("hf", v);
  w.write_float("f", v);
  w.finish();
  SafetensorsFile f(d.path / "c.safetensors");
  const auto bf = f.to_float(f.at("bf"));
  const auto hf = f.to_float(f.at("hf"));
  const auto ff = f.to_float(f.at("f"));
  for (int i = 0; i < 1000; ++i) {
    CHECK(bf[i] == bf16_to_float(float_to_bf16(v[i])));
    CHECK(hf[i] == fp16_to_float(float_to_fp16(v[i])));
    CHECK(ff[i] == v[i]);
  }
  write_safetensors(d.path / "i.safetensors", {{{"ids", StDtype::I32, {2}}, random_bytes(8, rng)}});
  SafetensorsFile fi(d.path / "i.safetensors");
  try {
    (void)fi.to_float(fi.at("ids"));
    FAIL("no error");
  } catch (const Error& err) {
    CHECK(contains(err.what(), "'ids'"));
    CHECK(contains(err.what(), "I32"));
  }
}

TEST_CASE("safetensors bad input: each rule of the format, named file and tensor") {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(parse_error(image(ok, 8)) == "(no error)");
  std::string e;

  // Truncated: shorter than the length field.
  e = parse_error(std::vector<std::byte>(5, std::byte{0}));
  CHECK(contains(e, "w/model.safetensors"));
  CHECK(contains(e, "truncated"));

  // Header length beyond the file.
  e = parse_error(image(ok, 8, 4000));
  CHECK(contains(e, "beyond the end of the file"));

  // Header length beyond the limit.
  e = parse_error(image(ok, 8, 200'000'000));
  CHECK(contains(e, "exceeds the limit"));

  // Header not JSON.
  e = parse_error(image(R"({"a": [1, 2)", 0));
  CHECK(contains(e, "not JSON"));
  e = parse_error(image("  [1]   ", 0));
  CHECK(contains(e, "not JSON"));
  e = parse_error(image("[1, 2]", 0));
  CHECK(contains(e, "not JSON"));

  // Unknown dtype.
  e = parse_error(image(R"({"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "tensor 'a'"));
  CHECK(contains(e, "unknown dtype 'F128'"));

  // Span beyond the end of the data section (truncated data).
  e = parse_error(image(ok, 4));
  CHECK(contains(e, "tensor 'a'"));
  CHECK(contains(e, "beyond the end of the data section"));

  // Overlapping spans.
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12));
  CHECK(contains(e, "tensor 'b'"));
  CHECK(contains(e, "overlap tensor 'a'"));

  // Gap between spans.
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12));
  CHECK(contains(e, "tensor 'b'"));
  CHECK(contains(e, "gap"));

  // Bytes after the last tensor.
  e = parse_error(image(ok, 16));
  CHECK(contains(e, "8 bytes after the last tensor"));

  // Shape x dtype disagrees with the span.
  e = parse_error(image(R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "tensor 'a'"));
  CHECK(contains(e, "needs 6 bytes"));

  // Malformed entries.
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "tensor 'a'"));
  CHECK(contains(e, "shape"));
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "overflows"));
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8));
  CHECK(contains(e, "end before begin"));
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8));
  CHECK(contains(e, "data_offsets"));
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[2]}})", 8));
  CHECK(contains(e, "data_offsets"));
  e = parse_error(image(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "dtype"));
  e = parse_error(image(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "shape"));
  e = parse_error(image(R"({"a":[1]})", 8));
  CHECK(contains(e, "tensor 'a'"));
  e = parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "tensor 'a'"));
  CHECK(contains(e, "twice"));
  e = parse_error(image(R"({"__metadata__":{"format":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "__metadata__['format']"));
  e = parse_error(image(R"({"__metadata__":[1],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
  CHECK(contains(e, "__metadata__"));
  // Padding with spaces is accepted (the writer's own alignment).
  CHECK(parse_error(image(ok + "      ", 8)) == "(no error)");
}

TEST_CASE("safetensors file errors: missing file, truncated file on disk") {
  TempDir d;
  try {
    SafetensorsFile f(d.path / "missing.safetensors");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "missing.safetensors"));
  }
  std::mt19937_64 rng(5);
  const auto path = d.path / "model.safetensors";
  write_safetensors(path, {{{"w", StDtype::BF16, {64, 32}}, random_bytes(64 * 32 * 2, rng)}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  try {
    SafetensorsFile f(path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), path.string()));
    CHECK(contains(e.what(), "tensor 'w'"));
    CHECK(contains(e.what(), "truncated"));
  }
  std::filesystem::resize_file(path, 3);
  try {
    SafetensorsFile f(path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "truncated"));
  }
  std::filesystem::resize_file(path, 0);
  CHECK_THROWS_AS(SafetensorsFile{path}, Error);
}

TEST_CASE("safetensors writer: order, sizes, unfinished files leave nothing behind") {
  TempDir d;
  const auto path = d.path / "w.safetensors";
  {
    SafetensorsWriter w(path, {{"x", StDtype::F32, {2}}, {"y", StDtype::F32, {3}}});
    std::vector<float> three(3, 1.5f);
    try {
      w.write_float("y", three);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(contains(e.what(), "'y'"));
      CHECK(contains(e.what(), "out of order"));
    }
    try {
      w.write_float("x", three);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(contains(e.what(), "'x'"));
      CHECK(contains(e.what(), "got 3 values"));
    }
    std::vector<float> two(2, 0.25f);
    w.write_float("x", two);
    try {
      w.finish();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(contains(e.what(), "'y'"));
      CHECK(contains(e.what(), "never written"));
    }
  }
  CHECK(!std::filesystem::exists(path));
  CHECK(std::filesystem::is_empty(d.path));
  try {
    SafetensorsWriter w(path, {{"x", StDtype::F32, {2}}, {"x", StDtype::F32, {3}}});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "'x' declared twice"));
  }
}

TEST_CASE("sharded checkpoints: index.json + shards written and read back") {
  std::mt19937_64 rng(77);
  TempDir d;
  std::vector<TensorData> ts;
  for (int i = 0; i < 7; ++i)
    ts.push_back({{"layers." + std::to_string(i) + ".w", i % 2 ? StDtype::BF16 : StDtype::F32,
                   {int64_t(10 + i), 16}}, {}});
  for (auto& t : ts) t.bytes = random_bytes(t.spec.nbytes(), rng);
  std::vector<TensorSpec> specs;
  for (auto& t : ts) specs.push_back(t.spec);
  ShardedWriter w(d.path, specs, /*max_shard_bytes=*/1500);
  for (auto& t : ts) w.write(t.spec.name, t.bytes);
  w.finish();
  CHECK(std::filesystem::exists(d.path / "model.safetensors.index.json"));
  CHECK(std::filesystem::exists(d.path / "model-00001-of-00004.safetensors"));
  CHECK(!std::filesystem::exists(d.path / "model.safetensors"));

  SafetensorsSet set = SafetensorsSet::open_dir(d.path);
  CHECK(set.files().size() == 4);
  CHECK(set.tensors().size() == ts.size());
  for (auto& t : ts) {
    const auto* r = set.find(t.spec.name);
    REQUIRE(r);
    auto b = r->file->bytes(*r->info);
    REQUIRE(b.size() == t.bytes.size());
    CHECK(std::memcmp(b.data(), t.bytes.data(), b.size()) == 0);
  }
  // One shard when it all fits: a single model.safetensors, no index.
  TempDir d1;
  ShardedWriter w1(d1.path, specs);
  for (auto& t : ts) w1.write(t.spec.name, t.bytes);
  w1.finish();
  CHECK(std::filesystem::exists(d1.path / "model.safetensors"));
  CHECK(!std::filesystem::exists(d1.path / "model.safetensors.index.json"));
  CHECK(SafetensorsSet::open_dir(d1.path).tensors().size() == ts.size());

  // Index naming a tensor its shard lacks; a missing shard; a path outside the folder.
  const auto idx = d.path / "model.safetensors.index.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(idx));
  j["weight_map"]["ghost.weight"] = "model-00001-of-00004.safetensors";
  std::ofstream(idx) << j.dump();
  try {
    (void)SafetensorsSet::open_dir(d.path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "'ghost.weight'"));
    CHECK(contains(e.what(), "model-00001-of-00004.safetensors"));
  }
  j["weight_map"]["ghost.weight"] = "model-00009-of-00009.safetensors";
  std::ofstream(idx) << j.dump();
  try {
    (void)SafetensorsSet::open_dir(d.path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "model-00009-of-00009.safetensors"));
  }
  j["weight_map"]["ghost.weight"] = "../x.safetensors";
  std::ofstream(idx) << j.dump();
  CHECK_THROWS_WITH_AS((void)SafetensorsSet::open_dir(d.path),
                       doctest::Contains("not a file name in this folder"), Error);
  std::ofstream(idx) << "{\"weight_map\": 3}";
  CHECK_THROWS_WITH_AS((void)SafetensorsSet::open_dir(d.path), doctest::Contains("weight_map"),
                       Error);
  TempDir empty;
  CHECK_THROWS_WITH_AS((void)SafetensorsSet::open_dir(empty.path),
                       doctest::Contains("no model.safetensors"), Error);
}
