// Token datasets: llm.c .bin (uint16 and uint32), JSONL with loss masks, windows, shuffling,
// the train/validation split, exact resumption, and the errors (token >= vocab, empty, ...).
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <set>

#include "io_test_util.hpp"
#include "lvt/io/tokens.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {
std::vector<std::uint32_t> random_tokens(std::size_t n, std::uint32_t vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> t(n);
  for (auto& x : t) x = std::uint32_t(rng() % vocab);
  return t;
}
std::string open_error(const std::filesystem::path& p, int vocab) {
  try {
    TokenDataset::open(p, vocab, 2);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("llm.c .bin files, uint16 and uint32, read back; windows as llm.c cuts them") {
  TempDir d;
  for (bool wide : {false, true}) {
    CAPTURE(wide);
    const std::uint32_t vocab = wide ? 128256 : 50257;
    const auto toks = random_tokens(1001, vocab, wide ? 3 : 4);
    const auto path = d.path / (wide ? "w.bin" : "n.bin");
    write_llmc_tokens(path, toks, wide);
    CHECK(std::filesystem::file_size(path) == 1024 + toks.size() * (wide ? 4 : 2));
    std::ifstream f(path, std::ios::binary);
    std::int32_t h[3];
    f.read(reinterpret_cast<char*>(h), sizeof h);
    CHECK(h[0] == (wide ? 20240801 : 20240520));
    CHECK(h[1] == (wide ? 7 : 1));
    CHECK(h[2] == 1001);

    const TokenDataset ds = TokenDataset::open(path, int(vocab));
    REQUIRE(ds.size() == toks.size());
    CHECK(ds.token_bytes() == (wide ? 4 : 2));
    for (std::size_t i = 0; i < toks.size(); ++i) CHECK(ds[i] == toks[i]);
    CHECK(!ds.has_mask());

    WindowLoader L(ds, 100, Split::train, 0.0, false, 0);
    CHECK(L.windows() == 10);
    std::vector<std::int32_t> in(100), tg(100);
    for (int w = 0; w < 10; ++w) {
      L.next(in.data(), tg.data());
      for (int t = 0; t < 100; ++t) {
        CHECK(in[t] == std::int32_t(toks[std::size_t(w * 100 + t)]));
        CHECK(tg[t] == std::int32_t(toks[std::size_t(w * 100 + t + 1)]));
      }
    }
    CHECK(L.position() == DataPosition{1, 0});
  }
}

TEST_CASE("shuffled windows: a seeded permutation per epoch; split; exact resume") {
  TempDir d;
  const auto toks = random_tokens(64 * 50 + 1, 1000, 9);
  write_llmc_tokens(d.path / "t.bin", toks, false);
  const TokenDataset ds = TokenDataset::open(d.path / "t.bin", 1000);
  WindowLoader train(ds, 64, Split::train, 0.1, true, 1234);
  WindowLoader val(ds, 64, Split::validation, 0.1, false, 0);
  CHECK(train.windows() == 45);
  CHECK(val.windows() == 5);
  std::vector<std::uint64_t> e0, e1;
  for (int i = 0; i < 45; ++i) e0.push_back(train.next_window());
  for (int i = 0; i < 45; ++i) e1.push_back(train.next_window());
  std::set<std::uint64_t> s0(e0.begin(), e0.end()), s1(e1.begin(), e1.end());
  CHECK(s0.size() == 45);
  CHECK(*s0.rbegin() == 44);  // train windows only
  CHECK(s0 == s1);
  CHECK(e0 != e1);            // a new order each epoch
  std::vector<std::uint64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted != e0);        // actually shuffled
  for (int i = 0; i < 5; ++i) CHECK(val.next_window() == std::uint64_t(45 + i));

  // Same seed, same order; a different seed, a different order.
  WindowLoader again(ds, 64, Split::train, 0.1, true, 1234);
  WindowLoader other(ds, 64, Split::train, 0.1, true, 1235);
  std::vector<std::uint64_t> a, o;
  for (int i = 0; i < 45; ++i) a.push_back(again.next_window()), o.push_back(other.next_window());
  CHECK(a == e0);
  CHECK(o != e0);

  // Resume mid-epoch-1 from a saved position: continues exactly.
  WindowLoader run(ds, 64, Split::train, 0.1, true, 1234);
  for (int i = 0; i < 60; ++i) run.next_window();
  const DataPosition saved = run.position();
  CHECK(saved == DataPosition{1, 15});
  std::vector<std::uint64_t> cont, resumed;
  for (int i = 0; i < 50; ++i) cont.push_back(run.next_window());
  WindowLoader fresh(ds, 64, Split::train, 0.1, true, 1234);
  fresh.seek(saved);
  for (int i = 0; i < 50; ++i) resumed.push_back(fresh.next_window());
  CHECK(cont == resumed);
  CHECK_THROWS_WITH_AS(fresh.seek({0, 45}), doctest::Contains("beyond the split's 45 windows"),
                       Error);
}

TEST_CASE("JSONL documents packed with EOS; loss masks become ignored targets") {
  TempDir d;
  const auto path = d.path / "docs.jsonl";
  {
    std::ofstream f(path);
    f << "[5, 6, 7]\n\n";
    f << R"({"input_ids": [8, 9, 10, 11], "loss_mask": [0, 0, 1, 1]})" << "\n";
    f << R"({"input_ids": [12, 13], "loss_mask": [true, false]})" << "\n";
  }
  const TokenDataset ds = TokenDataset::open(path, 100, /*eos=*/2);
  const std::vector<std::uint32_t> want = {5, 6, 7, 2, 8, 9, 10, 11, 2, 12, 13, 2};
  REQUIRE(ds.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(ds[i] == want[i]);
  CHECK(ds.has_mask());
  WindowLoader L(ds, 11, Split::train, 0.0, false, 0);
  std::vector<std::int32_t> in(11), tg(11);
  L.next(in.data(), tg.data());
  // Target j counts when token j is masked in; EOS inherits its document's last mask.
  const std::vector<std::int32_t> want_tg = {6, 7, 2, -100, -100, 10, 11, 2, 12, -100, -100};
  CHECK(tg == want_tg);
  CHECK(in[0] == 5);
  // Without masks every target counts.
  std::ofstream(d.path / "plain.jsonl") << "[1,2,3]\n[4,5]\n";
  const TokenDataset p = TokenDataset::open(d.path / "plain.jsonl", 10, -1);
  CHECK(p.size() == 5);
  CHECK(!p.has_mask());
}

TEST_CASE("token dataset errors name the file and what is wrong") {
  TempDir d;
  const auto bin = d.path / "t.bin";
  auto toks = random_tokens(300, 500, 1);
  toks[123] = 777;
  write_llmc_tokens(bin, toks, false);
  std::string e = open_error(bin, 500);
  CHECK(contains(e, bin.string()));
  CHECK(contains(e, "token 123 is id 777"));
  CHECK(contains(e, "vocab_size 500"));

  write_llmc_tokens(bin, {}, false);
  CHECK(contains(open_error(bin, 500), "empty dataset"));

  write_llmc_tokens(bin, random_tokens(300, 500, 2), true);
  std::filesystem::resize_file(bin, 1024 + 4 * 299);
  e = open_error(bin, 500);
  CHECK(contains(e, "truncated"));
  CHECK(contains(e, "300 tokens"));
  std::filesystem::resize_file(bin, 1024 + 4 * 300 + 2);
  CHECK(contains(open_error(bin, 500), "2 bytes after the 300 tokens"));
  std::filesystem::resize_file(bin, 100);
  CHECK(contains(open_error(bin, 500), "truncated"));
  {
    write_llmc_tokens(bin, random_tokens(10, 500, 2), false);
    std::fstream f(bin, std::ios::in | std::ios::out | std::ios::binary);
    const std::int32_t bad[2] = {20240521, 1};
    f.write(reinterpret_cast<const char*>(bad), 8);
  }
  CHECK(contains(open_error(bin, 500), "magic 20240521"));
  {
    std::fstream f(bin, std::ios::in | std::ios::out | std::ios::binary);
    const std::int32_t bad[2] = {20240520, 7};
    f.write(reinterpret_cast<const char*>(bad), 8);
  }
  CHECK(contains(open_error(bin, 500), "version 7"));
  CHECK(contains(open_error(d.path / "missing.bin", 500), "missing.bin"));
  CHECK_THROWS_WITH_AS(write_llmc_tokens(bin, {70000}, false), doctest::Contains("uint16"), Error);

  const auto jl = d.path / "d.jsonl";
  std::ofstream(jl) << "[1, 2]\n[3, oops]\n";
  CHECK(contains(open_error(jl, 500), "d.jsonl:2: not JSON"));
  std::ofstream(jl) << "[1, 2]\n[3, -4]\n";
  CHECK(contains(open_error(jl, 500), "d.jsonl:2: token 1 is -4"));
  std::ofstream(jl) << R"({"input_ids": [1, 2], "loss_mask": [1]})" << "\n";
  CHECK(contains(open_error(jl, 500), "d.jsonl:1: field 'loss_mask'"));
  std::ofstream(jl) << R"({"ids": [1, 2]})" << "\n";
  CHECK(contains(open_error(jl, 500), "field 'input_ids' missing"));
  std::ofstream(jl) << "[1, 2, 600]\n";
  CHECK(contains(open_error(jl, 500), "token 2 is id 600"));
  std::ofstream(jl) << "\n[]\n";
  CHECK(contains(open_error(jl, 500), "empty dataset"));

  // Too short for one window; a split that leaves no training windows.
  write_llmc_tokens(bin, random_tokens(20, 500, 3), false);
  const TokenDataset small = TokenDataset::open(bin, 500);
  CHECK_THROWS_WITH_AS(WindowLoader(small, 20, Split::train, 0, false, 0),
                       doctest::Contains("fewer than one window of seq + 1 = 21"), Error);
  CHECK_THROWS_WITH_AS(WindowLoader(small, 19, Split::train, 0.5, false, 0),
                       doctest::Contains("none for training"), Error);
  CHECK_THROWS_WITH_AS(WindowLoader(small, 19, Split::validation, 0, false, 0),
                       doctest::Contains("empty dataset split (validation"), Error);
}
