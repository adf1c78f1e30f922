// The CUDA backend against the host backend on whole steps: the same model (frozen weights
// rounded to bf16 first, so both start from the same values), the same LoRA, the same batch.
// Loss and LoRA gradients within bf16 tolerance; policies that must not change the math (layer
// streaming, checkpointing, offloaded checkpoints and optimizer) give bit-identical results on
// the GPU; a replayed CUDA graph gives what the eager step gave; the device memory a step uses is
// the plan's arena within 2%.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "lvt/backend/cuda.hpp"
#include "lvt/backend/host.hpp"
#include "step_fixtures.hpp"

using namespace lvt;

namespace {

constexpr ModelConfig tiny{.arch = Arch::qwen2, .layers = 4, .hidden = 256, .heads = 4,
                           .kv_heads = 2, .head_dim = 64, .ffn = 512, .vocab = 512,
                           .tied_embeddings = false, .rope_theta = 10000.0, .norm_eps = 1e-5,
                           .qkv_bias = true, .max_position = 128};

PlanOptions base_options() {
  PlanOptions o;
  o.batch = 2;
  o.seq = 64;
  o.quant = QuantKind::nf4;
  o.double_quant = true;
  o.lora_rank = 8;
  o.lora_alpha = 16;
  return o;
}

using test::Batch;
using test::init_lora;
using test::make_batch;
// bf16-exact weights (std 0.06): the host reference starts from the values the GPU stores.
template <class B>
void init_weights(B& b, std::uint64_t seed) {
  test::init_weights(b, seed, 0.06f, true);
}

struct Outcome {
  double loss = 0;
  std::vector<float> grads;
};

Outcome host_step(const PlanOptions& o, const Batch& x) {
  backend::HostBackend b(tiny, o);
  init_weights(b, 7);
  init_lora(b, 11);
  const backend::StepStats s = b.step(x.tokens.data(), x.targets.data(), nullptr, 1.0, 5, 0);
  const auto g = b.lora_grads();
  return {s.mean(), std::vector<float>(g.begin(), g.end())};
}

template <class S>
Outcome cuda_step(const PlanOptions& o, const Batch& x, int repeats = 1) {
  backend::CudaBackend<S> b(tiny, o);
  init_weights(b, 7);
  init_lora(b, 11);
  Outcome out;
  for (int r = 0; r < repeats; ++r) {
    b.zero_grads();
    const backend::StepStats s = b.step(x.tokens.data(), x.targets.data(), nullptr, 1.0, 5, 0);
    out.loss = s.mean();
    out.grads = b.lora_grads();
  }
  return out;
}

// Relative error of b against a, as ||a - b|| / ||a||.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("cuda step (bf16) matches the host backend: loss and LoRA gradients") {
  for (double dropout : {0.0, 0.1}) {
    PlanOptions o = base_options();
    o.lora_dropout = dropout;
    const Batch x = make_batch(o, 3, tiny.vocab);
    const Outcome h = host_step(o, x);
    const Outcome d = cuda_step<bf16>(o, x);
    INFO("dropout " << dropout << ": host loss " << h.loss << ", cuda loss " << d.loss);
    CHECK(std::abs(d.loss - h.loss) <= 1e-2 * std::abs(h.loss));
    const double e = rel_err(h.grads, d.grads);
    INFO("LoRA gradient relative error " << e);
    CHECK(e <= 3e-2);
  }
}

TEST_CASE("cuda step (fp16) matches the host backend") {
  PlanOptions o = base_options();
  const Batch x = make_batch(o, 4, tiny.vocab);
  const Outcome h = host_step(o, x);
  const Outcome d = cuda_step<fp16>(o, x);
  CHECK(std::abs(d.loss - h.loss) <= 1e-2 * std::abs(h.loss));
  // The loss scale (65536) multiplies d loss: the accumulated grads are scaled until the update.
  std::vector<float> g = d.grads;
  for (float& v : g) v /= 65536.0f;
  CHECK(rel_err(h.grads, g) <= 3e-2);
}

TEST_CASE("cuda step: streaming, checkpointing and offload give bit-identical gradients") {
  PlanOptions o = base_options();
  const Batch x = make_batch(o, 5, tiny.vocab);
  const Outcome ref = cuda_step<bf16>(o, x);
  for (int variant = 0; variant < 4; ++variant) {
    PlanOptions v = o;
    if (variant == 0) v.checkpoint_every = 2;
    if (variant == 1) { v.offload_weights = true; v.weight_slots = 2; }
    if (variant == 2) { v.offload_weights = true; v.weight_slots = 3; v.checkpoint_every = 2; v.offload_checkpoints = true; }
    if (variant == 3) v.offload_optimizer = true;
    const Outcome d = cuda_step<bf16>(v, x);
    INFO("variant " << variant);
    CHECK(d.loss == ref.loss);
    CHECK(d.grads == ref.grads);
  }
}

TEST_CASE("cuda step: a replayed graph gives the eager step's results") {
  PlanOptions o = base_options();
  o.offload_weights = true;
  o.checkpoint_every = 2;
  const Batch x = make_batch(o, 6, tiny.vocab);
  backend::CudaBackend<bf16> b(tiny, o);
  init_weights(b, 7);
  init_lora(b, 11);
  std::vector<std::vector<float>> grads;
  std::vector<double> losses;
  for (int r = 0; r < 3; ++r) {  // eager, capture + launch, replay
    b.zero_grads();
    losses.push_back(b.step(x.tokens.data(), x.targets.data(), nullptr, 1.0, 5, 0).mean());
    grads.push_back(b.lora_grads());
  }
  CHECK(b.graph_ready(true, false));
  CHECK(losses[1] == losses[0]);
  CHECK(losses[2] == losses[0]);
  CHECK(grads[1] == grads[0]);
  CHECK(grads[2] == grads[0]);
}

TEST_CASE("cuda optimizer steps follow the host backend's AdamW (graphs replayed)") {
  PlanOptions o = base_options();
  backend::HostBackend h(tiny, o);
  backend::CudaBackend<bf16> d(tiny, o);
  init_weights(h, 7);
  init_lora(h, 11);
  init_weights(d, 7);
  init_lora(d, 11);
  backend::OptimizerSettings os;
  os.adamw.lr = 1e-3;
  os.clip = 1.0;
  for (int s = 1; s <= 4; ++s) {
    const Batch x = make_batch(o, 100 + s, tiny.vocab);
    os.step = s;
    const auto hs = h.step(x.tokens.data(), x.targets.data(), &os, 1.0, 5, std::uint64_t(s));
    const auto ds = d.step(x.tokens.data(), x.targets.data(), &os, 1.0, 5, std::uint64_t(s));
    INFO("step " << s);
    CHECK(std::abs(ds.mean() - hs.mean()) <= 1e-2 * hs.mean());
    CHECK(std::abs(ds.grad_norm - hs.grad_norm) <= 5e-2 * hs.grad_norm);
  }
  d.sync_lora_from_device();
  const auto hp = h.lora_params(), dp = d.lora_params();
  CHECK(rel_err(std::vector<float>(hp.begin(), hp.end()), std::vector<float>(dp.begin(), dp.end())) <= 1e-2);
}

TEST_CASE("evaluate on the GPU gives the host's loss") {
  PlanOptions o = base_options();
  const Batch x = make_batch(o, 9, tiny.vocab);
  backend::HostBackend h(tiny, o);
  backend::CudaBackend<bf16> d(tiny, o);
  init_weights(h, 7);
  init_lora(h, 11);
  init_weights(d, 7);
  init_lora(d, 11);
  const double hl = h.evaluate(x.tokens.data(), x.targets.data()).mean();
  for (int r = 0; r < 3; ++r)
    CHECK(std::abs(d.evaluate(x.tokens.data(), x.targets.data()).mean() - hl) <= 1e-2 * hl);
}

TEST_CASE("predicted peak device memory matches cudaMemGetInfo around a real step (2%)") {
  // Large enough that the arena dominates what cuBLASLt and graphs keep beside it.
  constexpr ModelConfig mid{.arch = Arch::llama, .layers = 8, .hidden = 2048, .heads = 16,
                            .kv_heads = 8, .head_dim = 128, .ffn = 5632, .vocab = 32000,
                            .tied_embeddings = false, .rope_theta = 500000.0, .norm_eps = 1e-5,
                            .qkv_bias = false, .max_position = 4096};
  PlanOptions o = base_options();
  o.batch = 4;
  o.seq = 1024;
  o.lora_rank = 16;
  lvt::cuda::select_device(0);
  LVT_CUDA_CHECK(cudaFree(nullptr));  // the context exists before the first measurement
  const std::int64_t before = backend::CudaBackend<bf16>::device_used_bytes();
  backend::CudaBackend<bf16> b(mid, o);
  const Batch x = make_batch(o, 1, mid.vocab);
  backend::OptimizerSettings os;
  b.step(x.tokens.data(), x.targets.data(), &os, 1.0, 5, 0);
  b.step(x.tokens.data(), x.targets.data(), &os, 1.0, 5, 1);  // captured as a graph
  const std::int64_t used = backend::CudaBackend<bf16>::device_used_bytes() - before;
  const std::int64_t predicted = b.plan().summary.arena_bytes;
  INFO("predicted " << predicted << " bytes, measured " << used << " bytes");
  CHECK(double(used) >= 0.98 * double(predicted));
  CHECK(double(used) <= 1.02 * double(predicted));
}

#include "../gpu_main.hpp"
