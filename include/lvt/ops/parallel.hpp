#pragma once
// The host backend's threads: one OpenMP team, nothing else. Matrix products are split over it
// by ops/matmul.hpp (each piece a single-threaded BLAS call), attention runs one (batch, head)
// task per thread, and the element ops, norms, RoPE, the loss, dequantization and AdamW run
// their rows or fixed-size chunks over it. The BLAS never starts threads of its own, so the
// two never compete for the cores.
//
// Determinism: every loop splits its work statically, the same way for a given thread count,
// and no reduction depends on which thread ran what (sums go per fixed chunk into partials that
// are added in chunk order). Built without OpenMP, everything runs on the calling thread.
//
// The thread count is the calling thread's OpenMP setting (omp_set_num_threads, which
// set_threads wraps); the host backend sets it at the start of every step.
#include <cstdint>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(_OPENMP)
#define LVT_PRAGMA(x) _Pragma(#x)
// A loop over independent iterations, statically split over the team when `cond` holds.
#define LVT_PARALLEL_FOR_IF(cond) LVT_PRAGMA(omp parallel for schedule(static) if(cond))
#else
#define LVT_PARALLEL_FOR_IF(cond)
#endif
#define LVT_PARALLEL_FOR LVT_PARALLEL_FOR_IF(true)

#include "lvt/error.hpp"

#if !defined(_OPENMP)
#include <thread>
#endif

namespace lvt::ops::parallel {

// Elements below which an element-wise loop stays on one thread (waking the team costs a few
// microseconds; 32 Ki floats take about that long).
inline constexpr std::int64_t min_elems = std::int64_t(1) << 15;

// Cores this process may run on (its CPU affinity; OMP_NUM_THREADS does not change it).
inline int available() {
#if defined(_OPENMP)
  return omp_get_num_procs();
#else
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? int(n) : 1;
#endif
}

// Threads the next parallel loop of the calling thread uses.
inline int threads() {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

// The thread's index in the current team (0 outside a parallel region).
inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline bool in_parallel() {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

// Checks a requested thread count (the --threads option, RunOptions::threads): 0 means every
// available core; a negative count, or more than the machine has, is an error that says both.
inline int resolve_threads(int requested, const char* what = "threads") {
  const int n = available();
  if (requested == 0) return n;
  if (requested < 0 || requested > n)
    throw Error(std::string(what) + " " + std::to_string(requested) + ": this machine has " +
                std::to_string(n) + " core" + (n == 1 ? "" : "s") + " available; use 1.." +
                std::to_string(n) + " (or 0 for all)");
  return requested;
}

// Sets the calling thread's team size (1 without OpenMP).
inline void set_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n > 0 ? n : 1);
#else
  (void)n;
#endif
}

// Whether this build runs anything on more than one thread.
inline constexpr bool has_threads() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

}  // namespace lvt::ops::parallel
