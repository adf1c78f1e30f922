// The host backend executing planned step programs: policies that must not change the math give
// bit-identical LoRA gradients; poison mode (freed buffers filled with NaN) passes for all of them.
// Packed rows (positions restarting at each example) give each example what it gets alone.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lvt/backend/host.hpp"
#include "step_fixtures.hpp"

using namespace lvt;

namespace {

constexpr ModelConfig tiny{.arch = Arch::qwen2, .layers = 4, .hidden = 64, .heads = 4,
                           .kv_heads = 2, .head_dim = 16, .ffn = 128, .vocab = 96,
                           .tied_embeddings = false, .rope_theta = 10000.0, .norm_eps = 1e-5,
                           .qkv_bias = true, .max_position = 64};

using test::Batch;
using test::init_lora;
using test::init_weights;
using test::make_batch;

struct Outcome {
  double loss;
  std::vector<float> grads;
};

Outcome one_step(PlanOptions o, bool poison) {
  backend::HostBackend b(tiny, o, poison);
  init_weights(b, 7);
  init_lora(b, 11);
  const Batch batch = make_batch(b.options(), 5, tiny.vocab);
  const backend::StepStats st = b.step(batch.tokens.data(), batch.targets.data(), nullptr, 1.0, 3, 1);
  Outcome out{st.mean(), {}};
  const auto g = b.lora_grads();
  out.grads.assign(g.begin(), g.end());
  return out;
}

PlanOptions base_options() {
  PlanOptions o;
  o.batch = 2;
  o.seq = 16;
  o.lora_rank = 4;
  o.lora_alpha = 8;
  o.quant = QuantKind::nf4;
  o.double_quant = true;
  return o;
}

}  // namespace

TEST_CASE("checkpointing, offload and slot counts give bit-identical LoRA gradients; poison passes") {
  const Outcome ref = one_step(base_options(), false);
  REQUIRE(std::isfinite(ref.loss));
  REQUIRE(ref.loss > 0);
  double norm = 0;
  for (float g : ref.grads) norm += double(g) * g;
  REQUIRE(norm > 0);
  struct Variant {
    const char* name;
    int every;
    bool offload, offload_ckpt, offload_opt;
    int slots;
  } variants[] = {
      {"checkpoint every 1", 1, false, false, false, 2},
      {"checkpoint every 3", 3, false, false, false, 2},
      {"offload, 2 slots", 0, true, false, false, 2},
      {"offload, 3 slots, checkpoint every 2", 2, true, false, false, 3},
      {"offload + offloaded checkpoints", 1, true, true, false, 2},
      {"offloaded optimizer", 2, false, false, true, 2},
  };
  for (const Variant& v : variants)
    for (bool poison : {false, true}) {
      CAPTURE(v.name);
      CAPTURE(poison);
      PlanOptions o = base_options();
      o.checkpoint_every = v.every;
      o.offload_weights = v.offload;
      o.offload_checkpoints = v.offload_ckpt;
      o.offload_optimizer = v.offload_opt;
      o.weight_slots = v.slots;
      const Outcome got = one_step(o, poison);
      CHECK(got.loss == ref.loss);
      REQUIRE(got.grads.size() == ref.grads.size());
      CHECK(std::memcmp(got.grads.data(), ref.grads.data(), ref.grads.size() * 4) == 0);
    }
}

TEST_CASE("SparseLayers: the adapters of the trained layers get the gradients full training gives them") {
  // PEFT's init (B = 0) makes every adapter a no-op, so the forward pass is the same with and
  // without the middle layers' adapters, and the trained layers' gradients must agree bit for bit.
  auto run = [](PlanOptions o, std::vector<backend::LoraSlice>& slices) {
    backend::HostBackend b(tiny, o, true);
    init_weights(b, 7);
    std::mt19937_64 rng(13);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    auto params = b.lora_params();
    std::fill(params.begin(), params.end(), 0.0f);
    for (const auto& s : b.lora_layout())  // A from a per-(layer, proj) stream, B = 0
      for (std::int64_t i = 0; i < s.in * o.lora_rank; ++i) {
        std::mt19937_64 r(1000 * s.layer + s.proj * 10 + std::uint64_t(i));
        params[std::size_t(s.a + i)] = std::normal_distribution<float>(0.0f, 0.05f)(r);
      }
    (void)rng;
    (void)nd;
    b.sync_lora_to_device();
    b.zero_grads();
    const Batch batch = make_batch(b.options(), 5, tiny.vocab);
    b.step(batch.tokens.data(), batch.targets.data(), nullptr, 1.0, 3, 1);
    slices = b.lora_layout();
    auto g = b.lora_grads();
    return std::vector<float>(g.begin(), g.end());
  };
  std::vector<backend::LoraSlice> full_s, sparse_s;
  const std::vector<float> full = run(base_options(), full_s);
  PlanOptions o = base_options();
  o.sparse_first = 1;
  o.sparse_last = 1;
  const std::vector<float> sparse = run(o, sparse_s);
  REQUIRE(sparse_s.size() == 2 * 7);
  std::size_t compared = 0;
  for (const auto& s : sparse_s) {
    REQUIRE((s.layer == 0 || s.layer == 3));
    const auto* f = &*std::find_if(full_s.begin(), full_s.end(), [&](const backend::LoraSlice& x) {
      return x.layer == s.layer && x.proj == s.proj;
    });
    const std::int64_t n = s.in * 4 + s.out * 4;
    CHECK(std::memcmp(sparse.data() + s.a, full.data() + f->a, std::size_t(n) * 4) == 0);
    compared += std::size_t(n);
  }
  CHECK(compared == sparse.size());
  // With First = 0 the backward pass stops at the lowest trainable layer: it never runs below.
  o.sparse_first = 0;
  o.sparse_last = 2;
  backend::HostBackend b(tiny, o, true);
  int lowest = 99;
  for (const auto& a : b.plan().actions)
    if (a.op == plan::Op::backward) lowest = std::min(lowest, a.layer);
  CHECK(lowest == 2);
}

TEST_CASE("evaluation runs without LoRA dropout (PEFT's eval mode); training steps use it") {
  PlanOptions o = base_options();
  PlanOptions drop = o;
  drop.lora_dropout = 0.3;
  backend::HostBackend a(tiny, o), b(tiny, drop);
  for (backend::HostBackend* x : {&a, &b}) {
    init_weights(*x, 7);
    init_lora(*x, 11);
  }
  const Batch batch = make_batch(o, 5, tiny.vocab);
  const double ea = a.evaluate(batch.tokens.data(), batch.targets.data()).mean();
  const double eb = b.evaluate(batch.tokens.data(), batch.targets.data()).mean();
  CHECK(ea == eb);
  const double ta = a.step(batch.tokens.data(), batch.targets.data(), nullptr, 1.0, 3, 1).mean();
  const double tb = b.step(batch.tokens.data(), batch.targets.data(), nullptr, 1.0, 3, 1).mean();
  CHECK(ta == ea);
  CHECK(tb != ea);  // the training step's forward drops out
}

// ---- packed rows: positions restart at each example ---------------------------------------

namespace {

// Three rows of 16: examples of 5, 7 and 4 tokens; one that fills its row; 3 and 6 tokens and a
// padded tail of 7 (targets -100, positions restarting as one more example nobody reads).
struct Packed {
  struct Example {
    int row, start, len;
  };
  std::vector<Example> examples{{0, 0, 5}, {0, 5, 7}, {0, 12, 4}, {1, 0, 16}, {2, 0, 3}, {2, 3, 6}};
  std::vector<std::int32_t> tokens, targets, positions;
};

PlanOptions packed_options() {
  PlanOptions o = base_options();
  o.batch = 3;
  return o;
}

Packed make_packed(const PlanOptions& o) {
  Packed p;
  std::mt19937_64 rng(21);
  const int n = o.batch * o.seq;
  p.tokens.assign(std::size_t(n), 0);
  p.targets.assign(std::size_t(n), -100);
  p.positions.assign(std::size_t(n), 0);
  for (int i = 0; i < n; ++i) p.positions[std::size_t(i)] = i % o.seq;
  for (const Packed::Example& e : p.examples)
    for (int t = 0; t < e.len; ++t) {
      const std::size_t i = std::size_t(e.row * o.seq + e.start + t);
      p.tokens[i] = std::int32_t(rng() % tiny.vocab);
      p.targets[i] = t == 2 ? -100 : std::int32_t(rng() % tiny.vocab);  // one ignored inside
      p.positions[i] = t;
    }
  for (int t = 9; t < 16; ++t) {  // the padded tail of row 2
    p.positions[std::size_t(2 * o.seq + t)] = t - 9;
    p.tokens[std::size_t(2 * o.seq + t)] = std::int32_t(rng() % tiny.vocab);
  }
  return p;
}

struct Grads {
  double loss_sum = 0;
  std::int64_t tokens = 0;
  std::vector<float> g;
};
Grads take(backend::HostBackend& b, const backend::StepStats& st) {
  Grads r{st.loss_sum, st.tokens, {}};
  const auto g = b.lora_grads();
  r.g.assign(g.begin(), g.end());
  b.zero_grads();
  return r;
}
// max |a - b| / max |b|
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    d = std::max(d, std::fabs(double(a[i]) - double(b[i])));
    m = std::max(m, std::fabs(double(b[i])));
  }
  return d / m;
}

}  // namespace

TEST_CASE("packed rows: per-example loss and LoRA gradients equal each example trained alone") {
  const PlanOptions po = packed_options();
  const Packed p = make_packed(po);
  backend::HostBackend packed(tiny, po, true);
  PlanOptions uo = base_options();
  uo.batch = 1;
  backend::HostBackend alone(tiny, uo, true);
  for (backend::HostBackend* b : {&packed, &alone}) {
    init_weights(*b, 7);
    init_lora(*b, 11);
  }
  const int T = po.seq;
  double worst_grad = 0, worst_loss = 0;
  std::vector<double> whole(std::size_t(packed.lora_count()), 0.0);
  std::int64_t kept_all = 0;
  for (const Packed::Example& e : p.examples) {
    CAPTURE(e.row);
    CAPTURE(e.start);
    // Packed: every row as it is, only this example's targets kept.
    std::vector<std::int32_t> tgt(p.targets.size(), -100);
    for (int t = 0; t < e.len; ++t)
      tgt[std::size_t(e.row * T + e.start + t)] = p.targets[std::size_t(e.row * T + e.start + t)];
    const Grads got = take(packed, packed.step(p.tokens.data(), tgt.data(), p.positions.data(),
                                               nullptr, 1.0, 3, 1));
    // Alone: the example at the start of its own row, padded with targets -100.
    std::vector<std::int32_t> tok1(std::size_t(T), 0), tgt1(std::size_t(T), -100);
    for (int t = 0; t < e.len; ++t) {
      tok1[std::size_t(t)] = p.tokens[std::size_t(e.row * T + e.start + t)];
      tgt1[std::size_t(t)] = p.targets[std::size_t(e.row * T + e.start + t)];
    }
    const Grads ref = take(alone, alone.step(tok1.data(), tgt1.data(), nullptr, 1.0, 3, 1));
    REQUIRE(ref.tokens == e.len - 1);
    CHECK(got.tokens == ref.tokens);
    const double dl = std::fabs(got.loss_sum - ref.loss_sum) / std::fabs(ref.loss_sum);
    const double dg = rel_diff(got.g, ref.g);
    CHECK(dl <= 1e-6);
    CHECK(dg <= 1e-6);
    worst_loss = std::max(worst_loss, dl);
    worst_grad = std::max(worst_grad, dg);
    for (std::size_t i = 0; i < whole.size(); ++i) whole[i] += double(ref.g[i]) * double(ref.tokens);
    kept_all += ref.tokens;
    // Forward only gives the same loss.
    CHECK(packed.evaluate(p.tokens.data(), tgt.data(), p.positions.data()).loss_sum == got.loss_sum);
  }
  MESSAGE("packed vs alone, per example: max rel loss diff " << worst_loss
                                                              << ", max rel LoRA grad diff " << worst_grad);
  // The whole packed batch: the token-weighted mean of the examples' gradients.
  const Grads all = take(packed, packed.step(p.tokens.data(), p.targets.data(), p.positions.data(),
                                             nullptr, 1.0, 3, 1));
  CHECK(all.tokens == kept_all);
  std::vector<float> mean(whole.size());
  for (std::size_t i = 0; i < whole.size(); ++i) mean[i] = float(whole[i] / double(kept_all));
  const double dall = rel_diff(all.g, mean);
  MESSAGE("whole packed batch vs the examples alone: max rel LoRA grad diff " << dall);
  CHECK(dall <= 1e-6);
}

TEST_CASE("packed rows: checkpointing is bit-identical; positions 0..seq-1 equal none") {
  const PlanOptions po = packed_options();
  const Packed p = make_packed(po);
  auto run = [&](PlanOptions o, const std::int32_t* positions, bool poison) {
    backend::HostBackend b(tiny, o, poison);
    init_weights(b, 7);
    init_lora(b, 11);
    return take(b, b.step(p.tokens.data(), p.targets.data(), positions, nullptr, 1.0, 3, 1));
  };
  const Grads ref = run(po, p.positions.data(), false);
  for (int every : {1, 2, 3}) {
    CAPTURE(every);
    PlanOptions o = po;
    o.checkpoint_every = every;
    o.offload_checkpoints = every == 2;
    const Grads got = run(o, p.positions.data(), true);
    CHECK(got.loss_sum == ref.loss_sum);
    CHECK(std::memcmp(got.g.data(), ref.g.data(), ref.g.size() * 4) == 0);
  }
  std::vector<std::int32_t> iota(p.positions.size());
  for (std::size_t i = 0; i < iota.size(); ++i) iota[i] = std::int32_t(i % std::size_t(po.seq));
  const Grads none = run(po, nullptr, false), explicit_iota = run(po, iota.data(), false);
  CHECK(none.loss_sum == explicit_iota.loss_sum);
  CHECK(std::memcmp(none.g.data(), explicit_iota.g.data(), none.g.size() * 4) == 0);
  CHECK(none.loss_sum != ref.loss_sum);  // packing changes what attention sees
}

TEST_CASE("packed rows: bad positions name the row, the column and the values") {
  const PlanOptions po = packed_options();
  Packed p = make_packed(po);
  backend::HostBackend b(tiny, po);
  init_weights(b, 7);
  init_lora(b, 11);
  std::vector<std::int32_t> pos = p.positions;
  pos[std::size_t(po.seq)] = 1;
  CHECK_THROWS_WITH_AS(b.step(p.tokens.data(), p.targets.data(), pos.data(), nullptr, 1.0, 3, 1),
                       "positions: row 1, column 0: position 1 (a row must start at position 0)",
                       Error);
  pos = p.positions;
  pos[3] = 4;
  CHECK_THROWS_WITH_AS(b.evaluate(p.tokens.data(), p.targets.data(), pos.data()),
                       "positions: row 0, column 3: position 4 after 2 (each position is 0, "
                       "starting a new example, or the previous one + 1)",
                       Error);
  pos = p.positions;
  pos[std::size_t(2 * po.seq + 5)] = -1;
  CHECK_THROWS_WITH_AS(b.evaluate(p.tokens.data(), p.targets.data(), pos.data()),
                       doctest::Contains("row 2, column 5: position -1 after 1"), Error);
}

// ---- threads ---------------------------------------------------------------------------------

namespace {

// Big enough that every threaded path runs split (matrix products over the 4 Mi multiply-add
// threshold, element ops over 32 Ki values, two attention query blocks, grouped heads), small
// enough to take well under a second.
constexpr ModelConfig wide{.arch = Arch::llama, .layers = 2, .hidden = 128, .heads = 4,
                           .kv_heads = 2, .head_dim = 32, .ffn = 384, .vocab = 512,
                           .tied_embeddings = false, .rope_theta = 10000.0, .norm_eps = 1e-5,
                           .max_position = 128};

struct Trained {
  std::vector<double> losses;
  std::vector<float> params, grads;
};

// Two optimizer steps (LoRA dropout on, NF4 base, checkpointing), one step without, and an
// evaluation on
// `threads` threads: the losses, the trained LoRA parameters and the last step's gradients.
Trained train(int threads) {
  PlanOptions o;
  o.batch = 2;
  o.seq = 72;
  o.lora_rank = 8;
  o.lora_alpha = 16;
  o.lora_dropout = 0.1;
  o.checkpoint_every = 1;
  backend::HostBackend b(wide, o, false, threads);
  REQUIRE(b.threads() == threads);
  init_weights(b, 7);
  init_lora(b, 11);
  backend::OptimizerSettings os;
  os.adamw.lr = 1e-3;
  Trained t;
  for (int s = 1; s <= 3; ++s) {
    const Batch batch = make_batch(b.options(), std::uint64_t(40 + s), wide.vocab);
    os.step = s;
    // the last step without the optimizer, so its gradients are still there to compare
    const backend::StepStats st = b.step(batch.tokens.data(), batch.targets.data(),
                                         s < 3 ? &os : nullptr, 1.0, 3, std::uint64_t(s));
    t.losses.push_back(st.mean());
  }
  const Batch eval = make_batch(b.options(), 99, wide.vocab);
  t.losses.push_back(b.evaluate(eval.tokens.data(), eval.targets.data()).mean());
  t.params.assign(b.lora_params().begin(), b.lora_params().end());
  t.grads.assign(b.lora_grads().begin(), b.lora_grads().end());
  return t;
}

bool same_bits(const Trained& a, const Trained& b) {
  return a.losses == b.losses && a.params.size() == b.params.size() &&
         std::memcmp(a.params.data(), b.params.data(), a.params.size() * 4) == 0 &&
         a.grads.size() == b.grads.size() &&
         std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * 4) == 0;
}

}  // namespace

TEST_CASE("threads: a fixed thread count gives bit-identical training, run to run") {
  const int most = ops::parallel::available();
  std::vector<int> counts = {1};
  if (most > 1) counts.push_back(most);
  for (int threads : counts) {
    CAPTURE(threads);
    const Trained a = train(threads), b = train(threads);
    REQUIRE(std::isfinite(a.losses.back()));
    CHECK(same_bits(a, b));
  }
  if (most == 1) MESSAGE("one core available: the multi-threaded paths ran on one thread");
}

TEST_CASE("threads: other counts agree with one thread to rounding") {
  const int most = ops::parallel::available();
  if (most == 1) return;
  const Trained one = train(1), many = train(most);
  for (std::size_t i = 0; i < one.losses.size(); ++i)
    CHECK(many.losses[i] == doctest::Approx(one.losses[i]).epsilon(1e-5));
  CHECK(rel_diff(many.grads, one.grads) < 1e-4);
  CHECK(rel_diff(many.params, one.params) < 1e-4);
  // Not asserted (it depends on the BLAS's kernels for the shapes each thread gets): whether
  // the bits also agree across thread counts.
  const std::string same = same_bits(one, many) ? "bit-identical" : "differ in the last bits";
  MESSAGE("1 vs " << most << " threads: " << same);
}

TEST_CASE("threads: 0 means every core; more than the machine has, or negative, is an error") {
  const int most = ops::parallel::available();
  PlanOptions o = base_options();
  CHECK(backend::HostBackend(tiny, o).threads() == most);
  CHECK(backend::HostBackend(tiny, o, false, 0).threads() == most);
  const std::string cores = std::to_string(most) + " core" + (most == 1 ? "" : "s");
  CHECK_THROWS_WITH_AS(backend::HostBackend(tiny, o, false, most + 1),
                       ("threads " + std::to_string(most + 1) + ": this machine has " + cores +
                        " available; use 1.." + std::to_string(most) + " (or 0 for all)")
                           .c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(backend::HostBackend(tiny, o, false, -1),
                       doctest::Contains("threads -1: this machine has"), Error);
  // The plan sizes one attention scratch per thread.
  backend::HostBackend one(tiny, o, false, 1);
  CHECK(one.options().host_threads == 1);
  if (most > 1) {
    backend::HostBackend all(tiny, o, false, most);
    CHECK(all.options().host_threads == most);
    CHECK(all.plan().summary.arena_bytes >= one.plan().summary.arena_bytes);
  }
}
