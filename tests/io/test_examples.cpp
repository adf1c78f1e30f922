// Packed instruction examples (io/examples.hpp): row contents, positions, targets at example
// boundaries, padding, truncation, shuffled rows and exact resume, the cache file (round trip,
// key mismatch, corrupt file, atomic write) and the content hash.
#include <doctest/doctest.h>

#include <fstream>
#include <set>

#include "io_test_util.hpp"
#include "lvt/io/examples.hpp"

using namespace lvt;
using namespace lvt::io;
using lvt_test::contains;
using lvt_test::TempDir;

namespace {

// Examples of the given lengths; ids are 100 * example + position, the mask is on from
// position `prompt` on.
ExampleSet make_set(const std::vector<int>& lengths, int prompt = 0) {
  ExampleSet s;
  s.source = "data.jsonl";
  s.pad_id = 7;
  for (std::size_t k = 0; k < lengths.size(); ++k) {
    std::vector<std::int32_t> ids;
    std::vector<std::uint8_t> mask;
    for (int i = 0; i < lengths[k]; ++i) {
      ids.push_back(std::int32_t(100 * (k + 1) + i));
      mask.push_back(i >= prompt ? 1 : 0);
    }
    s.add(ids, mask, 2 * k + 1);  // every other line blank
  }
  return s;
}

struct Row {
  std::vector<std::int32_t> tok, tgt, pos;
};
Row row_of(const PackedExamples& p, std::uint64_t r) {
  Row x{std::vector<std::int32_t>(std::size_t(p.seq())), {}, {}};
  x.tgt = x.pos = x.tok;
  p.fill_row(r, x.tok.data(), x.tgt.data(), x.pos.data());
  return x;
}

}  // namespace

TEST_CASE("examples: greedy packing in file order, positions restart, targets stop at boundaries") {
  // seq 8: [3, 4] fit in row 0 (7 tokens + 1 pad), 5 opens row 1, 2 joins it (7 + 1), 8 fills row 2.
  const PackedExamples p(make_set({3, 4, 5, 2, 8}, 1), 8, true);
  REQUIRE(p.rows() == 3);
  CHECK(p.tokens() == 22);
  CHECK(p.pad_tokens() == 2);
  CHECK(p.truncated() == 0);
  const Row r0 = row_of(p, 0);
  CHECK(r0.tok == std::vector<std::int32_t>{100, 101, 102, 200, 201, 202, 203, 7});
  CHECK(r0.pos == std::vector<std::int32_t>{0, 1, 2, 0, 1, 2, 3, 0});
  // target[i] = ids[i+1] (mask on from position 1); the last token of each example and the pad: -100.
  CHECK(r0.tgt == std::vector<std::int32_t>{101, 102, -100, 201, 202, 203, -100, -100});
  const Row r1 = row_of(p, 1);
  CHECK(r1.tok == std::vector<std::int32_t>{300, 301, 302, 303, 304, 400, 401, 7});
  CHECK(r1.pos == std::vector<std::int32_t>{0, 1, 2, 3, 4, 0, 1, 0});
  CHECK(r1.tgt == std::vector<std::int32_t>{301, 302, 303, 304, -100, 401, -100, -100});
  const Row r2 = row_of(p, 2);
  CHECK(r2.pos == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(r2.tgt.back() == -100);
  // Targets: every token after an example's first whose mask is on.
  CHECK(p.targets() == 2 + 3 + 4 + 1 + 7);
  CHECK(p.set().target_tokens() == p.targets());
}

TEST_CASE("examples: the mask decides which tokens are targets") {
  // prompt of 3 tokens: positions 0..2 off, so targets start at the token predicting position 3.
  const PackedExamples p(make_set({6}, 3), 8, true);
  const Row r = row_of(p, 0);
  CHECK(r.tgt == std::vector<std::int32_t>{-100, -100, 103, 104, 105, -100, -100, -100});
  CHECK(r.pos == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 0, 1});  // padding: its own segment
  CHECK(r.tok[6] == 7);
  CHECK(p.targets() == 3);
}

TEST_CASE("examples: an example longer than seq is truncated and counted, or an error") {
  const PackedExamples p(make_set({3, 12, 2}, 0), 8, true);
  CHECK(p.truncated() == 1);
  CHECK(p.truncated_tokens() == 4);
  CHECK(p.rows() == 3);  // 3 | 8 (cut) | 2
  const Row r1 = row_of(p, 1);
  CHECK(r1.tok == std::vector<std::int32_t>{200, 201, 202, 203, 204, 205, 206, 207});
  CHECK(r1.tgt.back() == -100);  // the cut example never predicts past the row
  std::string err;
  try {
    PackedExamples q(make_set({3, 12}, 0), 8, false);
  } catch (const Error& e) {
    err = e.what();
  }
  CHECK(contains(err, "data.jsonl:3: example of 12 tokens is longer than seq 8"));
}

TEST_CASE("examples: empty input and vocab errors name the line") {
  CHECK_THROWS_WITH_AS(PackedExamples(ExampleSet(), 8, true), doctest::Contains("no examples"), Error);
  CHECK_THROWS_WITH_AS(PackedExamples(make_set({0, 0}), 8, true), doctest::Contains("every example is empty"), Error);
  CHECK_THROWS_WITH_AS(make_set({3, 4}).check_vocab(203), doctest::Contains("data.jsonl:3: token 3 is id 203, not below the model's vocab_size 203"), Error);
  make_set({3, 4}).check_vocab(204);
}

TEST_CASE("examples: shuffled rows per epoch and exact resume through DataPosition") {
  std::vector<int> lengths;
  for (int k = 0; k < 40; ++k) lengths.push_back(1 + (k * 7) % 9);
  const PackedExamples p(make_set(lengths, 1), 10, true);
  REQUIRE(p.rows() > 10);
  PackedLoader a(p, true, 42);
  std::vector<std::uint64_t> epoch0, epoch1;
  for (std::uint64_t i = 0; i < p.rows(); ++i) epoch0.push_back(a.next_row());
  CHECK(a.position() == DataPosition{1, 0});
  for (std::uint64_t i = 0; i < p.rows(); ++i) epoch1.push_back(a.next_row());
  CHECK(std::set<std::uint64_t>(epoch0.begin(), epoch0.end()).size() == p.rows());
  CHECK(epoch0 != epoch1);
  // The same order as WindowLoader's (shuffled_order with the same seed and epoch).
  std::vector<std::uint64_t> order;
  shuffled_order(order, p.rows(), 42, 0);
  CHECK(order == epoch0);
  // Stop in epoch 1 and continue from the saved position: the same rows follow.
  PackedLoader b(p, true, 42);
  for (std::uint64_t i = 0; i < p.rows() + 5; ++i) b.next_row();
  const DataPosition saved = b.position();
  CHECK(saved == DataPosition{1, 5});
  PackedLoader c(p, true, 42);
  c.seek(saved);
  std::vector<std::int32_t> t1(10), g1(10), q1(10), t2(10), g2(10), q2(10);
  for (int i = 0; i < 2 * int(p.rows()); ++i) {
    b.next(t1.data(), g1.data(), q1.data());
    c.next(t2.data(), g2.data(), q2.data());
    REQUIRE(t1 == t2);
    REQUIRE(g1 == g2);
    REQUIRE(q1 == q2);
  }
  CHECK_THROWS_WITH_AS(c.seek({0, p.rows()}), doctest::Contains("beyond the"), Error);
  // In order without shuffling.
  PackedLoader d(p, false, 42);
  for (std::uint64_t i = 0; i < p.rows(); ++i) CHECK(d.next_row() == i);
}

TEST_CASE("examples: the cache file round trips, and a changed key or a corrupt file is a miss") {
  TempDir tmp;
  const auto path = tmp.path / "data.jsonl.lvt-cache.safetensors";
  ExampleSet s = make_set({3, 5, 1}, 1);
  s.pad_id = 11;
  std::string why;
  ExampleSet back;
  CHECK_FALSE(read_example_cache(path, "k1", back, why));
  CHECK(why == "no cache yet");
  write_example_cache(path, s, "k1");
  // No temporary left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(tmp.path)) files += e.is_regular_file();
  CHECK(files == 1);
  REQUIRE(read_example_cache(path, "k1", back, why));
  CHECK(back.ids == s.ids);
  CHECK(back.mask == s.mask);
  CHECK(back.starts == s.starts);
  CHECK(back.lines == s.lines);
  CHECK(back.pad_id == 11);
  CHECK(back.source == "data.jsonl");
  CHECK_FALSE(read_example_cache(path, "k2", back, why));
  CHECK(contains(why, "changed"));
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "garbage";
  }
  CHECK_FALSE(read_example_cache(path, "k1", back, why));
  CHECK(contains(why, "unreadable"));
  CHECK_THROWS_WITH_AS(write_example_cache(path, ExampleSet(), "k"), doctest::Contains("no examples"), Error);
}

TEST_CASE("examples: the content hash separates fields and sees every byte") {
  auto h = [](std::initializer_list<std::string_view> parts) {
    ContentHash c;
    for (auto p : parts) c.add(p);
    return c.hex();
  };
  CHECK(h({"ab", "c"}) != h({"a", "bc"}));
  CHECK(h({""}) != h({}));
  CHECK(h({"hello world, this is longer than eight"}) == h({"hello world, this is longer than eight"}));
  std::string a(1000, 'x'), b = a;
  b[999] = 'y';
  CHECK(h({a}) != h({b}));
  b = a;
  b[3] = 'y';
  CHECK(h({a}) != h({b}));
  CHECK(h({a}).size() == 32);
}
