// The host backend executing planned step programs: policies that must not change the math give
// bit-identical LoRA gradients; poison mode (freed buffers filled with NaN) passes for all of them.
#include <doctest/doctest.h>

#include <random>
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
