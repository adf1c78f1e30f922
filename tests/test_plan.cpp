// Planner invariants over the presets x policy matrix, hand-computed figures, and a property
// test of the packer on random buffer sets.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "lvt/model/presets.hpp"
#include "lvt/plan/planner.hpp"
#include "lvt/trainer.hpp"

using namespace lvt;
using namespace lvt::plan;

namespace {

std::vector<PlanOptions> policy_matrix() {
  std::vector<PlanOptions> out;
  for (QuantKind q : {QuantKind::nf4, QuantKind::int8, QuantKind::none})
    for (int off = 0; off < 2; ++off)
      for (int every : {0, 1, 3, 8})
        for (int sparse = 0; sparse < 3; ++sparse)
          for (int oo = 0; oo < 2; ++oo) {
            PlanOptions o;
            o.quant = q;
            o.double_quant = q != QuantKind::int8 && q != QuantKind::none;
            o.offload_weights = off;
            o.checkpoint_every = every;
            o.offload_checkpoints = every > 0 && off;
            o.offload_optimizer = oo;
            if (sparse == 1) o.sparse_first = 3, o.sparse_last = 5;
            if (sparse == 2) o.sparse_first = 0, o.sparse_last = 4;
            o.batch = 1 + (every % 3);
            o.seq = every == 8 ? 2048 : 512;
            o.sm = 89;
            out.push_back(o);
          }
  return out;
}

// Every action's waits point backwards; every buffer is used inside its lifetime.
void check_program(const Plan& p) {
  for (std::size_t i = 0; i < p.actions.size(); ++i)
    for (int s = 0; s < stream_count; ++s) {
      const int w = p.actions[i].wait[s];
      if (w < 0) continue;
      REQUIRE(w < int(i));
      REQUIRE(int(p.actions[std::size_t(w)].stream) == s);
      REQUIRE(p.actions[std::size_t(w)].stream != p.actions[i].stream);
    }
  for (const Buffer& b : p.buffers) {
    REQUIRE(b.first >= 0);
    REQUIRE(b.first <= b.last);
    REQUIRE(b.bytes % arena_alignment == 0);
    REQUIRE(b.offset % arena_alignment == 0);
  }
}

}  // namespace

TEST_CASE("packed arena is within 2% of the live lower bound, with no live overlap") {
  double worst = 1.0;
  int plans = 0;
  for (const auto& preset : presets::all)
    for (const PlanOptions& o : policy_matrix()) {
      const Plan p = make_plan(*preset.config, o);
      CAPTURE(preset.name);
      CAPTURE(o.offload_weights);
      CAPTURE(o.checkpoint_every);
      CAPTURE(o.sparse_first);
      REQUIRE(p.error == PlanError::ok);
      REQUIRE(p.summary.arena_bytes >= p.summary.live_lower_bound);
      CHECK(double(p.summary.arena_bytes) <= 1.02 * double(p.summary.live_lower_bound));
      CHECK(packing_is_valid(p.buffers, Memory::device));
      CHECK(packing_is_valid(p.buffers, Memory::pinned));
      check_program(p);
      worst = std::max(worst, p.summary.packing_ratio());
      ++plans;
    }
  MESSAGE("plans: " << plans << ", worst arena / lower bound: " << worst);
}

TEST_CASE("plans are deterministic") {
  PlanOptions o;
  o.offload_weights = true;
  o.checkpoint_every = 4;
  o.offload_checkpoints = true;
  const Plan a = make_plan(presets::llama_3_1_8b, o);
  const Plan b = make_plan(presets::llama_3_1_8b, o);
  CHECK(a.actions == b.actions);
  CHECK(a.buffers == b.buffers);
  CHECK(a.summary == b.summary);
}

TEST_CASE("the packer never overlaps live buffers on random buffer sets") {
  std::mt19937 rng(20261125);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<Buffer> bufs;
    const int n = 1 + int(rng() % 120), horizon = 1 + int(rng() % 60);
    for (int i = 0; i < n; ++i) {
      Buffer b;
      b.memory = Memory::device;
      b.first = int(rng() % horizon);
      b.last = b.first + int(rng() % (horizon - b.first + 1) % 1000);
      b.bytes = align_up(1 + i64(rng() % (1 << 20)), arena_alignment);
      bufs.push_back(b);
    }
    const i64 arena = pack(bufs, Memory::device);
    CAPTURE(trial);
    REQUIRE(packing_is_valid(bufs, Memory::device));
    REQUIRE(arena >= live_lower_bound(bufs, Memory::device));
    for (const Buffer& b : bufs) REQUIRE(b.offset + b.bytes <= arena);
  }
}

TEST_CASE("NF4 with double quantization at block 64 costs 4.127 bits per parameter") {
  CHECK(bits_per_param(QuantKind::nf4, true, 64, DType::bf16) ==
        doctest::Approx(4.0 + 8.0 / 64 + 32.0 / (64 * 256)));
  CHECK(bits_per_param(QuantKind::nf4, true, 64, DType::bf16) == doctest::Approx(4.127).epsilon(1e-4));
  CHECK(bits_per_param(QuantKind::nf4, false, 64, DType::bf16) == doctest::Approx(4.5));
  CHECK(bits_per_param(QuantKind::int8, false, 64, DType::bf16) == doctest::Approx(8.5));
  // One 4096 x 4096 NF4 tensor with DQ, each part on a 64-byte boundary: 8 MiB codes,
  // 262144 absmax codes, 1024 nested fp32, the mean, the 256-entry nested map, the NF4 table.
  CHECK(quantized_tensor_bytes(4096 * 4096, QuantKind::nf4, true, 64, DType::bf16) ==
        8388608 + 262144 + 1024 * 4 + 64 + 1024 + 64);
  // Without DQ: fp32 absmax per block.
  CHECK(quantized_tensor_bytes(4096 * 4096, QuantKind::nf4, false, 64, DType::bf16) ==
        8388608 + 262144 * 4 + 64);
  CHECK(quantized_tensor_bytes(4096 * 4096, QuantKind::int8, false, 64, DType::bf16) ==
        16777216 + 262144 * 4);
}

TEST_CASE("Llama-3.1-8B: quantized linear weights and the resident 8B plan") {
  const ModelConfig& m = presets::llama_3_1_8b;
  // Per layer: q 4096x4096, k/v 1024x4096, o 4096x4096, gate/up 14336x4096, down 4096x14336.
  CHECK(m.layer_linear_params() == 218103808);
  const PlanOptions o;  // NF4 + DQ, block 64
  i64 expect_layer = 0;
  for (i64 n : {4096ll * 4096, 1024ll * 4096, 1024ll * 4096, 4096ll * 4096, 14336ll * 4096,
                14336ll * 4096, 4096ll * 14336}) {
    const i64 blocks = n / 64;  // every tensor is a whole number of blocks
    expect_layer += n / 2 + blocks + align_up(ceil_div(blocks, 256) * 4, 64) + 64 + 1024 + 64;
  }
  expect_layer += 2 * 4096 * 2;  // two RMSNorm weights in bf16
  CHECK(layer_weight_bytes(m, o) == expect_layer);
  const double gib_linear = double(expect_layer * 32) / double(gib);
  CHECK(gib_linear == doctest::Approx(3.37).epsilon(0.01));  // 7.0e9 params * 4.127 bits
  const Plan p = make_plan(m, o);
  CHECK(p.summary.base_weight_bytes == expect_layer * 32);
  CHECK(p.summary.kind_bytes[int(Kind::weights)] == align_up(expect_layer, arena_alignment) * 32);
  // Embedding table and lm head: 128256 x 4096 bf16 each (+ final norm on the head).
  CHECK(p.summary.kind_bytes[int(Kind::embeddings)] ==
        align_up(128256ll * 4096 * 2, 256) + align_up((128256ll * 4096 + 4096) * 2, 256));
  // LoRA r=16 on all 7 projections of 32 layers: PEFT reports 41,943,040 trainable params.
  CHECK(p.summary.lora_params == 41943040);
}

TEST_CASE("70B NF4: resident needs more than 24 GiB, streamed it fits an RTX 4090") {
  PlanOptions o;
  o.batch = 1;
  o.seq = 512;
  o.checkpoint_every = 1;
  o.budget_bytes = 24 * gib;
  o.sm = 89;
  const Plan resident = make_plan(presets::llama_3_1_70b, o);
  CHECK(resident.summary.device_bytes() > 24 * gib);
  CHECK_FALSE(resident.fits());
  CHECK(resident.summary.missing_bytes() > 10 * gib);
  o.offload_weights = true;
  const Plan streamed = make_plan(presets::llama_3_1_70b, o);
  CHECK(streamed.fits());
  // The NF4 layers (80 x 441 MB) and the input embeddings live in pinned host memory.
  CHECK(streamed.summary.pinned_bytes > 34 * gib);
  // Every layer is fetched for forward and again for recompute+backward (one shared fetch);
  // the top layer stays in its slot from its forward, across the loss, to its backward.
  int fetches = 0;
  for (const Action& a : streamed.actions) fetches += a.op == Op::fetch_weights;
  CHECK(fetches == 80 + 79);
}

TEST_CASE("checkpointing trades activation memory for recompute; the top segment is not recomputed") {
  PlanOptions o;
  o.batch = 4;
  o.seq = 1024;
  const ModelConfig& m = presets::llama_3_1_8b;
  const Plan none = make_plan(m, o);
  o.checkpoint_every = 1;
  const Plan every1 = make_plan(m, o);
  o.checkpoint_every = 8;
  const Plan every8 = make_plan(m, o);
  CHECK(none.summary.recompute_layers == 0);
  CHECK(every1.summary.recompute_layers == 31);
  CHECK(every8.summary.recompute_layers == 24);  // layers 24..31 save in forward
  CHECK(every1.summary.arena_bytes < none.summary.arena_bytes / 2);
  CHECK(every8.summary.arena_bytes < none.summary.arena_bytes);
  CHECK(every1.summary.backward_layers == 32);
}

TEST_CASE("SparseLayers<0, L>: backward stops at the lowest trainable layer") {
  PlanOptions o;
  o.sparse_first = 0;
  o.sparse_last = 4;
  const Plan p = make_plan(presets::llama_3_1_8b, o);
  int lowest = 99;
  for (const Action& a : p.actions)
    if (a.op == Op::backward || a.op == Op::recompute) lowest = std::min(lowest, a.layer);
  CHECK(lowest == 28);
  CHECK(p.summary.backward_layers == 4);
  CHECK(p.summary.lora_params == 4 * layer_lora_params(presets::llama_3_1_8b, o));
  o.sparse_first = 3;
  o.sparse_last = 5;
  const Plan q = make_plan(presets::llama_3_1_8b, o);
  CHECK(q.summary.backward_layers == 32);  // layer 0 is trainable: backward runs through all
  CHECK(q.summary.lora_params == 8 * layer_lora_params(presets::llama_3_1_8b, o));
  CHECK(q.summary.arena_bytes > p.summary.arena_bytes);
}

TEST_CASE("streamed weights wait for their fetch; a fetch waits for the slot's last reader") {
  PlanOptions o;
  o.offload_weights = true;
  o.weight_slots = 2;
  o.checkpoint_every = 1;
  const Plan p = make_plan(presets::tinyllama_1_1b, o);
  int compute_with_slot = 0;
  for (std::size_t i = 0; i < p.actions.size(); ++i) {
    const Action& a = p.actions[i];
    if (a.op == Op::forward || a.op == Op::recompute || a.op == Op::backward) {
      REQUIRE(a.slot >= 0);
      // The latest fetch into its slot before it, for its layer, is what it waits for (or
      // an earlier action of the same use did).
      int fetch = -1;
      for (std::size_t j = 0; j < i; ++j)
        if (p.actions[j].op == Op::fetch_weights && p.actions[j].slot == a.slot) fetch = int(j);
      REQUIRE(fetch >= 0);
      CHECK(p.actions[std::size_t(fetch)].layer == a.layer);
      ++compute_with_slot;
    }
    if (a.op == Op::fetch_weights && i > 2) CHECK(a.wait[int(Stream::compute)] >= 0);
  }
  CHECK(compute_with_slot > 0);
}

TEST_CASE("invalid options are errors with what to change") {
  PlanOptions o;
  o.sparse_first = 30;
  o.sparse_last = 30;
  CHECK(check(presets::llama_3_1_8b, o) == PlanError::sparse_exceeds_layers);
  CHECK(std::string(message(PlanError::sparse_exceeds_layers)).find("lower them") != std::string::npos);
  o = {};
  o.sm = 75;
  CHECK(check(presets::llama_3_1_8b, o) == PlanError::bf16_needs_sm80);
  CHECK(std::string(message(PlanError::bf16_needs_sm80)).find("FP16") != std::string::npos);
  o.precision = DType::fp16;
  CHECK(check(presets::llama_3_1_8b, o) == PlanError::ok);
  o = {};
  o.seq = 4096;
  CHECK(check(presets::tinyllama_1_1b, o) == PlanError::seq_exceeds_positions);
  o = {};
  o.checkpoint_every = 33;
  CHECK(check(presets::llama_3_1_8b, o) == PlanError::checkpoint_exceeds_layers);
  o = {};
  o.quant = QuantKind::int8;
  CHECK(check(presets::llama_3_1_8b, o) == PlanError::int8_double_quant);
  o.double_quant = false;
  o.quant_block = 48;
  CHECK(check(presets::llama_3_1_8b, o) == PlanError::quant_block_invalid);
  o = {};
  o.lora_rank = 2048;
  CHECK(check(presets::llama_3_2_1b, o) == PlanError::lora_rank_invalid);  // kv_dim is 512
}

TEST_CASE("search finds the fastest fitting option set, and says when nothing fits") {
  PlanOptions o;
  o.seq = 512;
  o.budget_bytes = 8 * gib;
  o.sm = 89;
  const Plan p = search(presets::llama_3_1_8b, o);
  REQUIRE(p.fits());
  // 8B NF4 is ~5.4 GiB of weights + embeddings: it fits 8 GiB without streaming.
  CHECK_FALSE(p.options.offload_weights);
  CHECK(p.options.batch >= 1);
  // One more sequence of batch would not fit with the same policies.
  PlanOptions bigger = p.options;
  bigger.batch += 1;
  if (bigger.batch <= 64) CHECK_FALSE(make_plan(presets::llama_3_1_8b, bigger).fits());

  o.budget_bytes = 4 * gib;
  o.sm = 75;
  o.precision = DType::fp16;
  const Plan q = search(presets::phi_4, o);  // 14B on a 4 GiB card: streaming
  REQUIRE(q.fits());
  CHECK(q.options.offload_weights);

  o.budget_bytes = 1 * gib;  // below the context reserve + lm head
  const Plan r = search(presets::llama_3_1_70b, o);
  CHECK_FALSE(r.fits());
}

// ---- compile time -------------------------------------------------------------------------

using Fits8B = Trainer<Llama<presets::llama_3_1_8b>, QuantPolicy<NF4>, OffloadPolicy<Pinned>,
                       CheckpointEvery<8>, SparseLayers<3, 5>, Lora<16, 32>, Shape<1, 512>,
                       gpu::RTX4060>;
static_assert(Fits8B::plan.fits(), "8B streamed, sparse, fits an 8 GiB card");
static_assert(fits<Fits8B>);
static_assert(Fits8B::options.sparse_first == 3 && Fits8B::options.weight_slots == 2);

TEST_CASE("the compile-time plan equals the run-time plan") {
  const Plan p = make_plan(Fits8B::model, Fits8B::options);
  CHECK(p.summary == Fits8B::plan.summary);
  REQUIRE(p.actions.size() == Fits8B::plan.actions.size());
  REQUIRE(p.buffers.size() == Fits8B::plan.buffers.size());
  for (std::size_t i = 0; i < p.buffers.size(); ++i) CHECK(p.buffers[i] == Fits8B::plan.buffers[i]);
  for (std::size_t i = 0; i < p.actions.size(); ++i) CHECK(p.actions[i] == Fits8B::plan.actions[i]);
}
