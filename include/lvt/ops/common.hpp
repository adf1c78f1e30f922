#pragma once
// What every op header shares: the host/device marker for per-element math, the counter RNG
// behind LoRA dropout, and the size check that names the op and the argument.
//
// Conventions of every op (see docs/ops.md):
//  - row-major raw pointers and sizes; outputs go to caller-provided buffers; no op allocates.
//    An op that needs scratch takes a pointer and has a constexpr `scratch_elems(...)`.
//  - `forward` writes (=) its outputs; `backward` ACCUMULATES (+=) into every gradient it
//    produces, as llm.c does, so residual branches, grouped-query heads and micro-batches add up
//    in place; the caller zeroes a gradient buffer when its lifetime starts.
//  - T is float on the host backend and double in the finite-difference tests.
#include <cstdint>
#include <string>

#include "lvt/error.hpp"

// LVT_HD marks small per-element functions that CUDA kernels reuse; quant/numeric.hpp defines
// it (ops depend on quant).
#include "lvt/quant/numeric.hpp"

namespace lvt::ops {

// Label value that cross_entropy skips (PyTorch's and Hugging Face's ignore_index).
inline constexpr std::int32_t ignore_index = -100;

// Throws lvt::Error "OP: WHAT (got VALUE)" when `ok` is false. Used for sizes, not per element.
// require_failed is [[noreturn]] so the compiler knows a failed check ends the op (no bounds
// warnings on the paths after it).
[[noreturn]] inline void require_failed(const char* op, const char* what, std::int64_t got) {
  throw Error(std::string(op) + ": " + what + " (got " + std::to_string(got) + ")");
}
inline void require(bool ok, const char* op, const char* what, std::int64_t got) {
  if (!ok) require_failed(op, what, got);
}

// ---- counter-based RNG: the value at (seed, index) is a pure function, so a backward pass
// regenerates a dropout mask instead of storing it. SplitMix64: its finalizer on a Weyl
// sequence, so counter_uniform(seed, i) is the i-th SplitMix64 output from state `seed`.
LVT_HD inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits (exact in float and double). `seed` should come from
// dropout_seed (already mixed), so nearby seeds give unrelated streams.
LVT_HD inline float counter_uniform(std::uint64_t seed, std::uint64_t index) {
  const std::uint64_t r = mix64(seed + (index + 1) * 0x9e3779b97f4a7c15ull);
  return float(r >> 40) * (1.0f / 16777216.0f);
}

// A seed per (step, layer, projection) so every dropout site draws an independent mask.
LVT_HD inline std::uint64_t dropout_seed(std::uint64_t run_seed, std::uint64_t step,
                                         std::uint64_t layer, std::uint64_t site) {
  return mix64(mix64(mix64(run_seed) ^ step) ^ (layer << 8 | site));
}

}  // namespace lvt::ops
