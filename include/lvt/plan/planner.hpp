#pragma once
// The planner: options are checked, the step program and buffers are built, buffers are packed
// into one device arena and one pinned pool, and the result is summarised. One planner, two
// clocks: `Trainer<...>::plan` evaluates `make_plan` at compile time, `lvt plan` at run time.
#include <array>
#include <vector>

#include "lvt/plan/pack.hpp"

namespace lvt::plan {

// Every invalid combination, with the message that says what to change. The same list gives the
// run-time error and the compile-time static_assert (trainer.hpp).
#define LVT_PLAN_ERRORS(X)                                                                       \
  X(model_invalid, "the model description is inconsistent (see lvt::validate(config))")          \
  X(sparse_exceeds_layers,                                                                       \
    "SparseLayers<First, Last>: First + Last exceeds the model's layers; lower them")            \
  X(sparse_empty, "SparseLayers<First, Last>: train at least one layer (First + Last > 0)")      \
  X(checkpoint_negative, "CheckpointEvery<N>: N must be >= 0 (0 keeps every activation)")        \
  X(checkpoint_exceeds_layers,                                                                   \
    "CheckpointEvery<N>: N exceeds the model's layers; use N <= layers or 0 for none")           \
  X(shape_invalid, "Shape<Batch, Seq>: batch and sequence length must be positive")              \
  X(seq_exceeds_positions,                                                                       \
    "Shape<Batch, Seq>: Seq exceeds the model's max_position_embeddings; shorten it")            \
  X(lora_rank_invalid,                                                                           \
    "Lora<Rank>: rank must be positive and at most the smallest projection dimension")           \
  X(lora_targets_invalid, "Lora<..., Targets>: pick at least one projection from lvt::targets")  \
  X(quant_block_invalid,                                                                         \
    "QuantPolicy<..., BlockSize>: block must be a power of two from 32 to 4096 (64 for QLoRA)")  \
  X(int8_double_quant,                                                                           \
    "QuantPolicy<Int8, true>: double quantization is for NF4/FP4; use QuantPolicy<Int8, false>") \
  X(slots_too_few, "OffloadPolicy<Pinned, Slots>: streaming needs at least 2 slots")             \
  X(gpu_too_old, "this GPU tier is older than sm_75 (Turing); lvt's kernels need sm_75 or newer") \
  X(bf16_needs_sm80,                                                                             \
    "BF16 needs compute capability 8.0 or newer: use lvt::Precision<lvt::FP16> on sm_75 tiers")   \
  X(generate_context_invalid,                                                                    \
    "Generate<Context>: the context must be >= 0 and at most max_position_embeddings")

enum class PlanError : std::uint8_t {
  ok,
#define LVT_X(name, msg) name,
  LVT_PLAN_ERRORS(LVT_X)
#undef LVT_X
};

constexpr const char* message(PlanError e) {
  switch (e) {
    case PlanError::ok: return "ok";
#define LVT_X(name, msg) \
  case PlanError::name: return msg;
      LVT_PLAN_ERRORS(LVT_X)
#undef LVT_X
  }
  return "?";
}

constexpr PlanError check(const ModelConfig& m, const PlanOptions& o) {
  if (validate(m) != nullptr) return PlanError::model_invalid;
  if (o.sparse_first >= 0 || o.sparse_last >= 0) {
    if (o.sparse_first < 0 || o.sparse_last < 0 || o.sparse_first + o.sparse_last == 0)
      return PlanError::sparse_empty;
    if (o.sparse_first + o.sparse_last > m.layers) return PlanError::sparse_exceeds_layers;
  }
  if (o.checkpoint_every < 0) return PlanError::checkpoint_negative;
  if (o.checkpoint_every > m.layers) return PlanError::checkpoint_exceeds_layers;
  if (o.batch <= 0 || o.seq <= 0) return PlanError::shape_invalid;
  if (m.max_position > 0 && o.seq > m.max_position) return PlanError::seq_exceeds_positions;
  const int smallest = std::min({m.hidden, int(m.kv_dim()), m.ffn});
  if (o.lora_rank <= 0 || o.lora_rank > smallest) return PlanError::lora_rank_invalid;
  if (o.lora_targets == 0 || (o.lora_targets & ~unsigned(targets::all)) != 0)
    return PlanError::lora_targets_invalid;
  if (o.quant != QuantKind::none &&
      (o.quant_block < 32 || o.quant_block > 4096 || (o.quant_block & (o.quant_block - 1)) != 0))
    return PlanError::quant_block_invalid;
  if (o.quant == QuantKind::int8 && o.double_quant) return PlanError::int8_double_quant;
  if (o.offload_weights && o.weight_slots < 2) return PlanError::slots_too_few;
  if (o.sm != 0 && o.sm < 75) return PlanError::gpu_too_old;
  if (o.sm != 0 && o.sm < 80 && o.precision == DType::bf16) return PlanError::bf16_needs_sm80;
  if (o.generate_context < 0 || (m.max_position > 0 && o.generate_context > m.max_position))
    return PlanError::generate_context_invalid;
  return PlanError::ok;
}

struct Summary {
  i64 arena_bytes = 0;        // packed device arena
  i64 live_lower_bound = 0;   // largest sum of live device bytes: no packing beats it
  i64 pinned_bytes = 0;       // packed pinned host pool
  i64 context_reserve_bytes = cuda_context_reserve_bytes;
  i64 budget_bytes = 0;       // 0: no budget given
  int peak_action = 0;        // when the live device bytes peak
  i64 kind_bytes[kind_count]{};     // device bytes per kind, summed over the step
  i64 kind_at_peak[kind_count]{};   // device bytes per kind live at the peak
  i64 kind_max_live[kind_count]{};  // most device bytes of each kind live at any one moment
  i64 pinned_kind_bytes[kind_count]{};
  i64 streamed_bytes = 0;     // bytes copied between host and device per step
  int recompute_layers = 0;   // layer forwards run twice per step
  int backward_layers = 0;
  i64 tokens = 0;
  i64 lora_params = 0;
  i64 base_weight_bytes = 0;  // all layers' frozen weights as stored
  int actions = 0;
  int buffers = 0;

  constexpr i64 device_bytes() const { return arena_bytes + context_reserve_bytes; }
  constexpr bool fits() const { return budget_bytes == 0 || device_bytes() <= budget_bytes; }
  constexpr i64 missing_bytes() const { return fits() ? 0 : device_bytes() - budget_bytes; }
  constexpr double packing_ratio() const {
    return live_lower_bound ? double(arena_bytes) / double(live_lower_bound) : 1.0;
  }
  constexpr bool operator==(const Summary&) const = default;
};

// A run-time plan: vectors. The compile-time plan (FixedPlan) holds the same data in arrays.
struct Plan {
  ModelConfig model{};
  PlanOptions options{};
  PlanError error = PlanError::ok;
  std::vector<Action> actions;
  std::vector<Buffer> buffers;
  std::vector<Use> uses;  // in action order
  Summary summary{};
  constexpr bool fits() const { return error == PlanError::ok && summary.fits(); }
};

constexpr Summary summarize(const ModelConfig& m, const PlanOptions& o, const ProgramBuilder& P,
                            i64 arena, i64 pinned) {
  Summary s;
  s.arena_bytes = arena;
  s.pinned_bytes = pinned;
  s.budget_bytes = o.budget_bytes;
  s.tokens = tokens(o);
  s.lora_params = lora_param_count(m, o);
  s.base_weight_bytes = layer_weight_bytes(m, o) * m.layers;
  s.actions = int(P.actions.size());
  s.buffers = int(P.buffers.size());
  for (const Buffer& b : P.buffers) {
    if (b.memory == Memory::device) s.kind_bytes[int(b.kind)] += b.bytes;
    else s.pinned_kind_bytes[int(b.kind)] += b.bytes;
  }
  // The moment of the peak, and what is live then.
  const LivePeak peak = live_peak(P.buffers, Memory::device);
  s.live_lower_bound = peak.bytes;
  s.peak_action = peak.action;
  for (const Buffer& b : P.buffers)
    if (b.memory == Memory::device && b.live_at(s.peak_action)) s.kind_at_peak[int(b.kind)] += b.bytes;
  {  // per kind, a difference array over time
    const std::size_t horizon = P.actions.size() + 1;
    std::vector<i64> delta(horizon * kind_count, 0);
    for (const Buffer& b : P.buffers)
      if (b.memory == Memory::device && b.first >= 0) {
        delta[std::size_t(b.first) * kind_count + std::size_t(b.kind)] += b.bytes;
        delta[(std::size_t(b.last) + 1) * kind_count + std::size_t(b.kind)] -= b.bytes;
      }
    i64 live[kind_count]{};
    for (std::size_t t = 0; t + 1 < horizon; ++t)
      for (int k = 0; k < kind_count; ++k) {
        live[k] += delta[t * kind_count + std::size_t(k)];
        if (live[k] > s.kind_max_live[k]) s.kind_max_live[k] = live[k];
      }
  }
  for (const Action& a : P.actions) {
    if (a.stream == Stream::h2d || a.stream == Stream::d2h) s.streamed_bytes += a.bytes;
    if (a.op == Op::recompute) ++s.recompute_layers;
    if (a.op == Op::backward) ++s.backward_layers;
  }
  return s;
}

// The whole planner. `pack_arena = false` stops after the lower bound (a quick fit test used
// when searching many option sets; its arena_bytes is then the lower bound).
constexpr Plan make_plan(const ModelConfig& m, const PlanOptions& o, bool pack_arena = true) {
  Plan p;
  p.model = m;
  p.options = o;
  p.error = check(m, o);
  if (p.error != PlanError::ok) return p;
  ProgramBuilder P = build_program(m, o);
  i64 arena = 0, pinned = 0;
  if (pack_arena) {
    arena = pack(P.buffers, Memory::device);
    pinned = pack(P.buffers, Memory::pinned);
    add_reuse_waits(P);
  } else {
    arena = live_lower_bound(P.buffers, Memory::device);
    pinned = live_lower_bound(P.buffers, Memory::pinned);
  }
  p.summary = summarize(m, o, P, arena, pinned);
  p.actions = std::move(P.actions);
  p.buffers = std::move(P.buffers);
  p.uses = std::move(P.uses);
  return p;
}

// ---- what to change when a plan does not fit ------------------------------------------------

// Speed order of two plans that fit: less streaming, then less recompute, then more tokens.
constexpr bool faster(const Summary& a, const Summary& b) {
  if (a.streamed_bytes != b.streamed_bytes) return a.streamed_bytes < b.streamed_bytes;
  if (a.recompute_layers != b.recompute_layers) return a.recompute_layers < b.recompute_layers;
  if (a.tokens != b.tokens) return a.tokens > b.tokens;
  return a.device_bytes() < b.device_bytes();
}

struct SearchLimits {
  bool vary_batch = true;   // search batch sizes up to max_batch (else keep options.batch)
  int max_batch = 64;
  bool vary_seq = false;    // halve the sequence when even batch 1 does not fit
  bool pack = true;         // pack the winner (false: lower bounds only, for compile time)
};

// The policy sets the search walks: memory savers in increasing order of cost.
constexpr std::vector<PlanOptions> policy_candidates(const ModelConfig& m, const PlanOptions& base) {
  std::vector<PlanOptions> out;
  std::vector<int> every = {0};
  for (int n = 1; n < m.layers; n *= 2) every.push_back(n);
  for (int w = 0; w < 2; ++w)
    for (int oo = 0; oo < 2; ++oo)
      for (int e : every)
        for (int oc = 0; oc < (e > 0 ? 2 : 1); ++oc) {
          PlanOptions o = base;
          o.offload_weights = base.offload_weights || w;
          o.offload_optimizer = base.offload_optimizer || oo;
          o.checkpoint_every = e;
          o.offload_checkpoints = oc;
          out.push_back(o);
        }
  return out;
}

// Largest batch in [1, hi] whose plan fits (lower-bound test), or 0.
constexpr int largest_fitting_batch(const ModelConfig& m, PlanOptions o, int hi) {
  int lo = 0;  // fits at lo (0 = none known)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    o.batch = mid;
    if (make_plan(m, o, false).fits()) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The fastest option set that fits the budget, searching offload, checkpointing and batch
// (and sequence length when asked). Returns a plan with error != ok or !fits() when none does.
constexpr Plan search(const ModelConfig& m, const PlanOptions& base, SearchLimits lim = {}) {
  if (check(m, base) != PlanError::ok) return make_plan(m, base, false);
  Plan best;
  bool found = false;
  for (int seq = base.seq; seq >= 1 && !found; seq = lim.vary_seq ? seq / 2 : 0) {
    PlanOptions with_seq = base;
    with_seq.seq = seq;
    for (PlanOptions o : policy_candidates(m, with_seq)) {
      if (lim.vary_batch) {
        const int b = largest_fitting_batch(m, o, lim.max_batch);
        if (b == 0) continue;
        o.batch = b;
      }
      // Lower bounds choose; the packed arena (<= 1.02 x the bound) confirms below.
      Plan p = make_plan(m, o, false);
      if (!p.fits()) continue;
      if (!found || faster(p.summary, best.summary)) {
        best = std::move(p);
        found = true;
      }
    }
    if (!lim.vary_seq) break;
  }
  if (!found) return make_plan(m, base, lim.pack);
  if (!lim.pack) return best;
  Plan packed = make_plan(m, best.options, true);
  // Packing can cost up to 2% over the bound: step the batch down until the packed arena fits.
  while (!packed.fits() && packed.options.batch > 1) {
    PlanOptions o = packed.options;
    --o.batch;
    packed = make_plan(m, o, true);
  }
  return packed;
}

// ---- the compile-time suggestion -----------------------------------------------------------
// At compile time a full search is too slow, so candidates are tried one by one in a fixed
// order of increasing cost (no streaming before streaming; fewer recomputed layers first; the
// user's batch and sequence before smaller ones) and the first whose lower bound fits wins.

// Device bytes of a plan from its lower bound alone (no packing, no summary).
constexpr i64 quick_device_bytes(const ModelConfig& m, const PlanOptions& o) {
  return live_lower_bound(build_program(m, o).buffers, Memory::device) + cuda_context_reserve_bytes;
}

struct Candidate {
  bool valid = false;  // false past the end of the sequence
  PlanOptions options{};
};

constexpr Candidate suggestion_candidate(const ModelConfig& m, const PlanOptions& base, int i) {
  int every[8]{};
  int n_every = 0;
  every[n_every++] = 0;
  for (int e = 64; e >= 1; e /= 2)
    if (e < m.layers) every[n_every++] = e;
  Candidate c;
  c.options = base;
  // Part 1: savers at the user's shape.
  constexpr int savers = 3;  // (optimizer offload, checkpoint offload): (0,0) (1,0) (1,1)
  const int part1 = 2 * savers * n_every;
  if (i < part1) {
    const int w = i / (savers * n_every), sv = (i / n_every) % savers, e = every[i % n_every];
    c.options.offload_weights = base.offload_weights || w;
    c.options.offload_optimizer = base.offload_optimizer || sv >= 1;
    c.options.checkpoint_every = e;
    c.options.offload_checkpoints = sv == 2 && e > 0;
    c.valid = !(sv == 2 && e == 0);  // checkpoint offload needs checkpoints
    if (!c.valid) {  // skip: reuse the same options (harmless duplicate of a valid one)
      c.options.offload_checkpoints = false;
      c.valid = true;
    }
    return c;
  }
  // Part 2: every saver on, smaller batches, then shorter sequences.
  i -= part1;
  c.options.offload_weights = true;
  c.options.offload_optimizer = true;
  c.options.checkpoint_every = 1;
  c.options.offload_checkpoints = true;
  for (int b = base.batch / 2; b >= 1; b /= 2, --i)
    if (i == 0) {
      c.options.batch = b;
      c.valid = true;
      return c;
    }
  c.options.batch = 1;
  for (int t = base.seq / 2; t >= 1; t /= 2, --i)
    if (i == 0) {
      c.options.seq = t;
      c.valid = true;
      return c;
    }
  return Candidate{};
}

// ---- the compile-time plan --------------------------------------------------------------------

template <int NActions, int NBuffers, int NUses>
struct FixedPlan {
  ModelConfig model{};
  PlanOptions options{};
  PlanError error = PlanError::ok;
  std::array<Action, NActions> actions{};
  std::array<Buffer, NBuffers> buffers{};
  std::array<Use, NUses> uses{};
  Summary summary{};
  constexpr bool fits() const { return error == PlanError::ok && summary.fits(); }
  constexpr i64 arena_bytes() const { return summary.arena_bytes; }
  constexpr i64 missing_bytes() const { return summary.missing_bytes(); }
};

template <ModelConfig M, PlanOptions O>
constexpr auto fixed_plan() {
  constexpr bool ok = check(M, O) == PlanError::ok;
  constexpr int na = ok ? int(build_program(M, O).actions.size()) : 0;
  constexpr int nb = ok ? int(build_program(M, O).buffers.size()) : 0;
  constexpr int nu = ok ? int(build_program(M, O).uses.size()) : 0;
  FixedPlan<na, nb, nu> f;
  const Plan p = make_plan(M, O);
  f.model = p.model;
  f.options = p.options;
  f.error = p.error;
  for (int i = 0; i < na; ++i) f.actions[std::size_t(i)] = p.actions[std::size_t(i)];
  for (int i = 0; i < nb; ++i) f.buffers[std::size_t(i)] = p.buffers[std::size_t(i)];
  for (int i = 0; i < nu; ++i) f.uses[std::size_t(i)] = p.uses[std::size_t(i)];
  f.summary = p.summary;
  return f;
}

}  // namespace lvt::plan
