#pragma once
// Policy tags: tiny empty types carrying `static constexpr` members, with defaults, that a
// Trainer composes. Each tag writes its choices into PlanOptions (plain values), which is what
// the planner reads; `lvt plan` fills the same struct from command-line flags.
#include <cstdint>

namespace lvt {

enum class QuantKind : std::uint8_t { none, nf4, fp4, int8 };
enum class DType : std::uint8_t { bf16, fp16, fp32 };

constexpr const char* quant_name(QuantKind q) {
  switch (q) {
    case QuantKind::none: return "none";
    case QuantKind::nf4: return "nf4";
    case QuantKind::fp4: return "fp4";
    case QuantKind::int8: return "int8";
  }
  return "?";
}
constexpr const char* dtype_name(DType d) {
  switch (d) {
    case DType::bf16: return "bf16";
    case DType::fp16: return "fp16";
    case DType::fp32: return "fp32";
  }
  return "?";
}
constexpr int dtype_bytes(DType d) { return d == DType::fp32 ? 4 : 2; }

// LoRA target projections, as PEFT's target_modules names them.
namespace targets {
enum : unsigned {
  q_proj = 1u << 0, k_proj = 1u << 1, v_proj = 1u << 2, o_proj = 1u << 3,
  gate_proj = 1u << 4, up_proj = 1u << 5, down_proj = 1u << 6,
  attention = q_proj | k_proj | v_proj | o_proj,
  mlp = gate_proj | up_proj | down_proj,
  all = attention | mlp,
};
inline constexpr const char* names[7] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};
}  // namespace targets

// Every choice the planner reads, as plain values. Defaults are the QLoRA recipe: NF4 with
// double quantization at block 64, bf16, LoRA r=16 alpha=32 on all projections, no offload.
struct PlanOptions {
  QuantKind quant = QuantKind::nf4;
  bool double_quant = true;
  int quant_block = 64;
  bool offload_weights = false;      // base weights in pinned host memory, streamed per layer
  int weight_slots = 2;              // device ring slots for streamed layers
  bool offload_checkpoints = false;  // checkpoints parked in pinned host memory
  int checkpoint_every = 0;          // 0: keep every activation; N: checkpoint every N layers
  int sparse_first = -1;             // -1: LoRA in every layer; else LoRA in the first F ...
  int sparse_last = -1;              // ... and the last L layers only
  int lora_rank = 16;
  double lora_alpha = 32;
  unsigned lora_targets = targets::all;
  bool rslora = false;
  double lora_dropout = 0.0;
  DType precision = DType::bf16;
  int batch = 1;
  int seq = 512;
  bool offload_optimizer = false;    // AdamW states (fp32) in pinned host memory, step on host
  std::int64_t budget_bytes = 0;     // device memory of the target GPU; 0: no budget
  int sm = 0;                        // compute capability x10 of the target; 0: unknown
  int loss_chunk_tokens = 0;         // tokens per lm-head chunk; 0: planner picks
  int generate_context = 0;          // KV cache tokens per sequence (prompt + new); 0: none
  int host_threads = 1;              // host backend (fp32): threads whose scratch the plan sizes

  constexpr bool operator==(const PlanOptions&) const = default;
};

// ---- quantization -------------------------------------------------------------------------
struct None { static constexpr QuantKind quant = QuantKind::none; };
struct NF4 { static constexpr QuantKind quant = QuantKind::nf4; };
struct FP4 { static constexpr QuantKind quant = QuantKind::fp4; };
struct Int8 { static constexpr QuantKind quant = QuantKind::int8; };

template <class Kind, bool DoubleQuant = true, int BlockSize = 64>
struct QuantPolicy {
  static constexpr QuantKind kind = Kind::quant;
  static constexpr bool double_quant = DoubleQuant && kind != QuantKind::none;
  static constexpr int block = BlockSize;
  static_assert(BlockSize >= 32 && BlockSize <= 4096 && (BlockSize & (BlockSize - 1)) == 0,
                "QuantPolicy: BlockSize must be a power of two from 32 to 4096 (bitsandbytes' "
                "block sizes); 64 is the QLoRA default");
  static_assert(!(DoubleQuant && Kind::quant == QuantKind::int8),
                "QuantPolicy<Int8, true>: double quantization applies to 4-bit (NF4/FP4) absmax; "
                "use QuantPolicy<Int8, false>");
  static constexpr void apply(PlanOptions& o) {
    o.quant = kind;
    o.double_quant = double_quant;
    o.quant_block = block;
  }
};

// ---- offload ------------------------------------------------------------------------------
struct Pinned {};

template <class Where, int Slots = 2, bool Checkpoints = false>
struct OffloadPolicy;

template <>
struct OffloadPolicy<None> {
  static constexpr void apply(PlanOptions& o) { o.offload_weights = false; }
};

template <int Slots, bool Checkpoints>
struct OffloadPolicy<Pinned, Slots, Checkpoints> {
  static_assert(Slots >= 2, "OffloadPolicy<Pinned, Slots>: streaming needs at least 2 device slots "
                            "so the next layer's copy overlaps this layer's compute");
  static constexpr void apply(PlanOptions& o) {
    o.offload_weights = true;
    o.weight_slots = Slots;
    o.offload_checkpoints = Checkpoints;
  }
};

// Checkpoints parked in pinned host memory without streaming the weights.
struct OffloadCheckpoints {
  static constexpr void apply(PlanOptions& o) { o.offload_checkpoints = true; }
};

// ---- generation ---------------------------------------------------------------------------
// A KV cache of Context tokens per sequence (prompt + generated) and the decode scratch, planned
// beside the step's buffers (run.hpp's generate, `lvt generate`).
template <int Context>
struct Generate {
  static_assert(Context > 0, "Generate<Context>: the KV cache needs at least one token");
  static constexpr void apply(PlanOptions& o) { o.generate_context = Context; }
};

// ---- activations ----------------------------------------------------------------------------
template <int N>
struct CheckpointEvery {
  static_assert(N >= 0, "CheckpointEvery<N>: N counts layers per checkpoint (0 disables)");
  static constexpr void apply(PlanOptions& o) { o.checkpoint_every = N; }
};
using NoCheckpointing = CheckpointEvery<0>;

// LoRA only in the first `First` and last `Last` layers; the backward pass stops at the lowest
// trainable layer.
template <int First, int Last>
struct SparseLayers {
  static_assert(First >= 0 && Last >= 0 && First + Last > 0,
                "SparseLayers<First, Last>: train at least one layer (First + Last > 0)");
  static constexpr void apply(PlanOptions& o) {
    o.sparse_first = First;
    o.sparse_last = Last;
  }
};

// ---- LoRA ---------------------------------------------------------------------------------
template <int Rank, int Alpha = 2 * Rank, unsigned Targets = targets::all, bool RsLora = false>
struct Lora {
  static_assert(Rank > 0, "Lora<Rank>: the rank must be positive");
  static_assert(Alpha > 0, "Lora<Rank, Alpha>: alpha must be positive");
  static_assert(Targets != 0 && (Targets & ~targets::all) == 0,
                "Lora<..., Targets>: pick projections from lvt::targets (q_proj ... down_proj)");
  static constexpr void apply(PlanOptions& o) {
    o.lora_rank = Rank;
    o.lora_alpha = Alpha;
    o.lora_targets = Targets;
    o.rslora = RsLora;
  }
};

// ---- precision, shape, optimizer ----------------------------------------------------------
struct BF16 { static constexpr DType dtype = DType::bf16; };
struct FP16 { static constexpr DType dtype = DType::fp16; };

template <class T>
struct Precision {
  static constexpr void apply(PlanOptions& o) { o.precision = T::dtype; }
};

template <int Batch, int Seq>
struct Shape {
  static_assert(Batch > 0 && Seq > 0, "Shape<Batch, Seq>: both must be positive");
  static constexpr void apply(PlanOptions& o) {
    o.batch = Batch;
    o.seq = Seq;
  }
};

template <bool OffloadStates = false>
struct AdamW {
  static constexpr void apply(PlanOptions& o) { o.offload_optimizer = OffloadStates; }
};

// ---- GPU tiers ------------------------------------------------------------------------------
namespace gpu {

template <int Gib, int Sm>
struct Tier {
  static constexpr int gib = Gib;
  static constexpr int sm = Sm;
  static constexpr std::int64_t bytes = std::int64_t(Gib) << 30;
  static constexpr void apply(PlanOptions& o) {
    o.budget_bytes = bytes;
    o.sm = Sm;
  }
};

using GTX1650 = Tier<4, 75>;        // 4 GiB laptop/desktop Turing
using RTX3050Laptop = Tier<4, 86>;
using RTX2060 = Tier<6, 75>;
using RTX3060Laptop = Tier<6, 86>;
using RTX4060 = Tier<8, 89>;
using RTX3060 = Tier<12, 86>;
using RTX4070 = Tier<12, 89>;
using T4 = Tier<16, 75>;
using RTX4080 = Tier<16, 89>;
using RTX3090 = Tier<24, 86>;
using RTX4090 = Tier<24, 89>;
using A100_40GB = Tier<40, 80>;
using L40S = Tier<48, 89>;
using RTXA6000 = Tier<48, 86>;
using A100_80GB = Tier<80, 80>;
using H100 = Tier<80, 90>;

struct NamedTier {
  const char* name;
  int gib;
  int sm;
};
// Names accepted by `lvt plan --budget NAME`.
inline constexpr NamedTier tiers[] = {
    {"gtx1650", 4, 75},  {"rtx3050-laptop", 4, 86}, {"rtx2060", 6, 75}, {"rtx3060-laptop", 6, 86},
    {"rtx4060", 8, 89},  {"rtx3060", 12, 86},       {"rtx4070", 12, 89}, {"t4", 16, 75},
    {"rtx4080", 16, 89}, {"rtx3090", 24, 86},       {"rtx4090", 24, 89}, {"a100-40gb", 40, 80},
    {"l40s", 48, 89},    {"rtxa6000", 48, 86},      {"a100-80gb", 80, 80}, {"h100", 80, 90},
};

}  // namespace gpu

}  // namespace lvt
