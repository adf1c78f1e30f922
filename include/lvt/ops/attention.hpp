#pragma once
// Causal self-attention with grouped-query heads, flash-style: forward keeps only the output and
// the log-sum-exp of each score row; backward recomputes the scores from q, k and lse. The
// T x T matrix never exists: the host reference works on blocks of `block_rows` query rows,
// whose scores [rows, keys] are one matrix product and whose output is another.
//
//   q [B, T, H, D], k and v [B, T, KV, D] (after RoPE), out [B, T, H, D], lse [B, H, T]
//   query head h reads kv head h / (H / KV); scale = 1 / sqrt(D)
//   s_j = scale * q_t . k_j (start_t <= j <= t),  lse_t = log sum_j exp(s_j),
//   out_t = sum_j exp(s_j - lse_t) v_j
//
// Packed rows: positions [B, T] (optional; null: 0..T-1 in every row) is each token's position
// within its example, a 0 starting a new one. Query t then sees only its own example's keys:
// start_t = t - positions[b, t] (0 without positions). The backends check positions on entry
// (each row starts at 0, then 0 or the previous + 1), so start_t never decreases along a row and
// a block of queries needs only the keys from its first row's start to its last row.
//
// Host threads (ops/parallel.hpp): forward runs one task per (batch, head, query block),
// backward one per (batch, head); each task's products are single-threaded BLAS calls on its
// thread's scratch. A task owns what it writes (out and lse rows; dq rows; with grouped heads
// its own dk / dv partials, added over the group's heads in head order at the end), so results
// do not depend on which thread ran which task, nor on the thread count.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>

#include "lvt/ops/common.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/parallel.hpp"
#include "lvt/ops/vmath.hpp"

namespace lvt::ops::attention {

// Query rows per block of the host products.
inline constexpr std::int64_t block_rows = 64;

// One thread's scratch: two score blocks [block_rows, seq] (P and dP in backward).
constexpr std::int64_t thread_scratch_elems(std::int64_t seq) {
  return 2 * (seq < block_rows ? seq : block_rows) * seq;
}
// Scratch elements of forward and backward on `threads` threads: a block pair per thread and,
// with grouped heads (heads > kv_heads), backward's dk and dv per query head [B, H, T, D] each.
constexpr std::int64_t scratch_elems(std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                     std::int64_t kv_heads, std::int64_t head_dim, int threads) {
  return (threads > 0 ? threads : 1) * thread_scratch_elems(seq) +
         (heads > kv_heads ? 2 * batch * heads * seq * head_dim : 0);
}

namespace detail {
inline void check(const void* scratch, std::int64_t seq, std::int64_t heads,
                  std::int64_t kv_heads, std::int64_t head_dim, int threads) {
  require(scratch != nullptr, "attention", "scratch (scratch_elems(batch, seq, heads, kv_heads, "
          "head_dim, threads) elements) is null", seq);
  require(seq > 0, "attention", "seq must be positive", seq);
  require(head_dim > 0, "attention", "head_dim must be positive", head_dim);
  require(kv_heads > 0 && heads % kv_heads == 0, "attention",
          "heads must be a multiple of kv_heads (grouped-query attention)", kv_heads);
  require(threads > 0, "attention", "the scratch's thread count must be positive", threads);
}
// Tasks run on at most the threads the scratch was sized for.
inline int team(int scratch_threads) {
  const int t = parallel::threads();
  return t < scratch_threads ? t : scratch_threads;
}
using matmul::dot;
}  // namespace detail

// The first key query t of row b sees: the start of its example (0 without positions).
LVT_HD inline std::int64_t example_start(const std::int32_t* positions, std::int64_t b,
                                     std::int64_t seq, std::int64_t t) {
  return positions ? t - positions[b * seq + t] : 0;
}

namespace detail {
// A softmax row's max, exp(x - shift) in place (with its sum in double): vectorized for float
// (ops/vmath.hpp), libm in double (the gradient checks).
template <class T>
T softmax_max(const T* x, std::int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return vmath::max_of(x, n);
  } else {
    T m = x[0];
    for (std::int64_t j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
  }
}
template <class T>
double softmax_exp_sum(T* x, std::int64_t n, T shift) {
  if constexpr (std::is_same_v<T, float>) {
    return vmath::exp_shift_sum(x, n, shift);
  } else {
    double sum = 0;
    for (std::int64_t j = 0; j < n; j++) {
      x[j] = std::exp(x[j] - shift);
      sum += double(x[j]);
    }
    return sum;
  }
}
template <class T>
void softmax_exp(T* x, std::int64_t n, T shift) {
  if constexpr (std::is_same_v<T, float>)
    vmath::exp_shift(x, n, shift);
  else
    for (std::int64_t j = 0; j < n; j++) x[j] = std::exp(x[j] - shift);
}

// Scores of query rows [t0, t1) of (b, h) against keys [j0, t1): P[r, j - j0] = exp(s - m_r) /
// sum_r, lse_out written (forward), or exp(s - lse_in[t]) (backward); keys outside a row's
// [start_t, t] are 0.
template <class T>
void score_block(T* P, T* lse_out, const T* lse_in, const T* q, const T* k, std::int64_t b,
                 std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, std::int64_t D,
                 std::int64_t h, std::int64_t t0, std::int64_t t1, std::int64_t j0,
                 const std::int32_t* positions, T scale) {
  const std::int64_t g = h / (heads / kv_heads), nr = t1 - t0, nk = t1 - j0;
  matmul::gemm(false, true, nr, nk, D, scale, q + ((b * seq + t0) * heads + h) * D, heads * D,
               k + ((b * seq + j0) * kv_heads + g) * D, kv_heads * D, T(0), P, nk);
  for (std::int64_t r = 0; r < nr; r++) {
    const std::int64_t t = t0 + r, js = example_start(positions, b, seq, t) - j0, je = t - j0;
    T* s = P + r * nk;
    for (std::int64_t j = 0; j < js; j++) s[j] = 0;
    for (std::int64_t j = je + 1; j < nk; j++) s[j] = 0;
    if (lse_in) {
      softmax_exp(s + js, je + 1 - js, lse_in[t]);
      continue;
    }
    const T m = softmax_max(s + js, je + 1 - js);
    const double sum = softmax_exp_sum(s + js, je + 1 - js, m);  // exp in T, the sum in double
    const T inv = T(1.0 / sum);
    for (std::int64_t j = js; j <= je; j++) s[j] *= inv;
    lse_out[t] = m + T(std::log(sum));
  }
}
}  // namespace detail

// threads: the thread count scratch was sized for (scratch_elems); the op uses at most that many.
template <class T>
void forward(T* out, T* lse, T* scratch, const T* q, const T* k, const T* v, std::int64_t batch,
             std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
             const std::int32_t* positions = nullptr, int threads = 1) {
  detail::check(scratch, seq, heads, kv_heads, head_dim, threads);
  const std::int64_t D = head_dim, group = heads / kv_heads;
  const T scale = T(1.0 / std::sqrt(double(D)));
  const std::int64_t blocks = (seq + block_rows - 1) / block_rows, tasks = batch * heads * blocks;
  const int team = detail::team(threads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(team) schedule(dynamic) if(team > 1)
#endif
  for (std::int64_t task = 0; task < tasks; task++) {
    // the last (longest) query blocks first, so the short ones fill in at the end
    const std::int64_t qb = blocks - 1 - task % blocks, bh = task / blocks;
    const std::int64_t b = bh / heads, h = bh % heads, g = h / group;
    const std::int64_t t0 = qb * block_rows, t1 = t0 + block_rows < seq ? t0 + block_rows : seq;
    const std::int64_t j0 = example_start(positions, b, seq, t0), nk = t1 - j0;
    T* P = scratch + std::int64_t(parallel::thread_id()) * thread_scratch_elems(seq);
    detail::score_block(P, lse + (b * heads + h) * seq, (const T*)nullptr, q, k, b, seq, heads, kv_heads, D, h,
                        t0, t1, j0, positions, scale);
    matmul::gemm(false, false, t1 - t0, D, nk, T(1), (const T*)P, nk,
                 v + ((b * seq + j0) * kv_heads + g) * D, kv_heads * D, T(0),
                 out + ((b * seq + t0) * heads + h) * D, heads * D);
  }
}

// dq, dk, dv += (they are accumulated: dk and dv collect every query head of their group).
//   p_j = exp(s_j - lse_t), delta_t = dout_t . out_t, ds_j = p_j (dout_t . v_j - delta_t)
//   dq_t += scale sum_j ds_j k_j,  dk_j += scale ds_j q_t,  dv_j += p_j dout_t
// Per query block: P (recomputed), dP = dO V^T, dV += P^T dO, dS = P (dP - delta) scale,
// dQ += dS K, dK += dS^T Q: five products.
template <class T>
void backward(T* dq, T* dk, T* dv, T* scratch, const T* dout, const T* q, const T* k, const T* v,
              const T* out, const T* lse, std::int64_t batch, std::int64_t seq, std::int64_t heads,
              std::int64_t kv_heads, std::int64_t head_dim, const std::int32_t* positions = nullptr,
              int threads = 1) {
  detail::check(scratch, seq, heads, kv_heads, head_dim, threads);
  const std::int64_t D = head_dim, group = heads / kv_heads, HD = heads * D, KD = kv_heads * D;
  const T scale = T(1.0 / std::sqrt(double(D)));
  const std::int64_t tasks = batch * heads, per_thread = thread_scratch_elems(seq);
  T* partial = scratch + std::int64_t(threads) * per_thread;  // [2][B, H, T, D] when grouped
  const int team = detail::team(threads);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(team) schedule(dynamic) if(team > 1)
#endif
  for (std::int64_t task = 0; task < tasks; task++) {
    const std::int64_t b = task / heads, h = task % heads, g = h / group;
    T* P = scratch + std::int64_t(parallel::thread_id()) * per_thread;
    T* dP = P + per_thread / 2;
    // where this head's dk, dv go: straight into dk / dv, or its own partials
    T* dk_h = dk + (b * seq * kv_heads + g) * D;
    T* dv_h = dv + (b * seq * kv_heads + g) * D;
    std::int64_t ld = KD;
    if (group > 1) {
      dk_h = partial + task * seq * D;
      dv_h = partial + (tasks + task) * seq * D;
      ld = D;
      for (std::int64_t i = 0; i < seq * D; i++) dk_h[i] = dv_h[i] = 0;
    }
    for (std::int64_t t0 = 0; t0 < seq; t0 += block_rows) {
      const std::int64_t t1 = t0 + block_rows < seq ? t0 + block_rows : seq, nr = t1 - t0;
      const std::int64_t j0 = example_start(positions, b, seq, t0), nk = t1 - j0;
      const std::int64_t qo = (b * seq + t0) * HD + h * D, ko = (b * seq + j0) * KD + g * D;
      detail::score_block(P, (T*)nullptr, lse + (b * heads + h) * seq, q, k, b, seq,
                          heads, kv_heads, D, h, t0, t1, j0, positions, scale);
      matmul::gemm(false, true, nr, nk, D, T(1), dout + qo, HD, v + ko, KD, T(0), dP, nk);
      matmul::gemm(true, false, nk, D, nr, T(1), (const T*)P, nk, dout + qo, HD, T(1),
                   dv_h + j0 * ld, ld);
      for (std::int64_t r = 0; r < nr; r++) {
        const T delta = detail::dot(dout + qo + r * HD, out + qo + r * HD, D);
        T* p = P + r * nk;
        const T* dp = dP + r * nk;
        for (std::int64_t j = 0; j < nk; j++) p[j] = p[j] * (dp[j] - delta) * scale;
      }
      matmul::gemm(false, false, nr, D, nk, T(1), (const T*)P, nk, k + ko, KD, T(1), dq + qo, HD);
      matmul::gemm(true, false, nk, D, nr, T(1), (const T*)P, nk, q + qo, HD, T(1),
                   dk_h + j0 * ld, ld);
    }
  }
  if (group == 1) return;
  // dk, dv += the group's partials, head by head in order
  LVT_PARALLEL_FOR_IF(batch * seq * kv_heads * D >= parallel::min_elems)
  for (std::int64_t bt = 0; bt < batch * seq; bt++) {
    const std::int64_t b = bt / seq, t = bt % seq;
    for (std::int64_t g = 0; g < kv_heads; g++)
      for (std::int64_t h = g * group; h < (g + 1) * group; h++) {
        const T* pk = partial + ((b * heads + h) * seq + t) * D;
        const T* pv = partial + ((tasks + b * heads + h) * seq + t) * D;
        T* dkt = dk + (bt * kv_heads + g) * D;
        T* dvt = dv + (bt * kv_heads + g) * D;
        for (std::int64_t i = 0; i < D; i++) {
          dkt[i] += pk[i];
          dvt[i] += pv[i];
        }
      }
  }
}

// Why the CUDA launchers take the simple kernels for bf16 / fp16 storage, or nullptr when they
// take the tiled tensor-core ones: the simple kernels are one warp per query row in fp32, seconds
// per layer at sequence 4096, so a run says once (on stderr) that it got them and why.
inline const char* simple_attention_reason(std::int64_t head_dim, bool device_ok, bool aligned) {
  if (!(head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128))
    return "head_dim is not 64, 80, 96 or 128";
  if (!device_ok) return "this GPU (or the architectures this binary was built for) has no tiled "
                         "kernels for the storage type";
  if (!aligned) return "a q, k, v, out or gradient tensor is not 16-byte aligned";
  return nullptr;
}
inline std::string simple_attention_warning(const char* why, std::int64_t head_dim) {
  return "lvt: warning: attention runs the simple CUDA kernels (" + std::string(why) +
         "; head_dim " + std::to_string(head_dim) + "): one warp per query row, expect seconds "
         "per layer at sequence 4096; the tiled tensor-core kernels need head_dim 64/80/96/128 "
         "and 16-byte aligned tensors";
}
inline void warn_simple_attention_once(const char* why, std::int64_t head_dim) {
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  std::fprintf(stderr, "%s\n", simple_attention_warning(why, head_dim).c_str());
}

}  // namespace lvt::ops::attention

#if LVT_CUDA
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <atomic>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: two implementations behind one pair of launchers -----------------------------------
// tiled:  FlashAttention-2 on tensor cores (mma.sync, fp32 accumulators) for bf16 (sm_80+) and
//         fp16 (sm_75+) at head_dim 64, 80, 96, 128: blocks of 64 query rows or 64 keys, scores
//         only ever as 16 x 64 register tiles, online softmax in fp32.
// simple: one warp per row, fp32 math, any storage and head_dim <= 128; it runs what the tiled
//         kernels do not (fp32 storage, other head dims, bf16 below sm_80) and is the reference
//         the tiled kernels are tested against.
// Both: no atomics (deterministic), dq, dk, dv accumulated (+=) as on the host.
namespace lvt::ops::attention::cuda {
using ops::cuda::from_float;
using ops::cuda::to_float;

inline constexpr int max_head_dim = 128;

inline void check_dims(std::int64_t head_dim) {
  if (head_dim <= 0 || head_dim > max_head_dim)
    throw Error("attention (CUDA): head_dim " + std::to_string(head_dim) +
                " is outside 1.." + std::to_string(max_head_dim));
}

// ---- simple: one warp per row -----------------------------------------------------------------
// Forward: a warp per (query t, head h) walks keys j <= t with an online softmax (running max
// and sum), head_dim split over the 32 lanes (head_dim <= 128: 64, 80, 96, 128 all fit).
// Backward without atomics: one kernel per query row computes dq (loop over keys j <= t); one
// per key row computes dk and dv (loop over the group's query heads and queries t >= j).
// Packed rows (pos, device memory, or null): keys from the query's example_start only, and the
// dk/dv loop stops at the first query whose example starts after the key (starts never fall).
namespace simple {
inline constexpr int per_lane = max_head_dim / 32;
inline constexpr int warps_per_block = 4;

__device__ inline float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <class S>
__device__ inline void load_row(float (&r)[per_lane], const S* p, int D, int lane) {
  for (int c = 0; c < per_lane; ++c) {
    const int i = lane + 32 * c;
    r[c] = i < D ? to_float(p[i]) : 0.0f;
  }
}
template <class S>
__device__ inline float dot_row(const float (&r)[per_lane], const S* p, int D, int lane) {
  float s = 0;
  for (int c = 0; c < per_lane; ++c) {
    const int i = lane + 32 * c;
    if (i < D) s += r[c] * to_float(p[i]);
  }
  return warp_sum(s);
}

// grid: (ceil(T / warps), heads, batch); block: 32 * warps threads.
template <class S>
__global__ void row_forward_kernel(S* out, float* lse, const S* q, const S* k, const S* v,
                                   const std::int32_t* pos, int T, int H, int KV, int D, float scale) {
  const int lane = threadIdx.x % 32, t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int h = blockIdx.y, b = blockIdx.z, g = h / (H / KV);
  if (t >= T) return;
  float qr[per_lane], acc[per_lane] = {};
  load_row(qr, q + ((std::int64_t(b) * T + t) * H + h) * D, D, lane);
  float m = -INFINITY, l = 0;
  for (int j = int(example_start(pos, b, T, t)); j <= t; ++j) {
    const std::int64_t ko = ((std::int64_t(b) * T + j) * KV + g) * D;
    const float s = scale * dot_row(qr, k + ko, D, lane);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
    for (int c = 0; c < per_lane; ++c) {
      const int i = lane + 32 * c;
      acc[c] = acc[c] * corr + (i < D ? p * to_float(v[ko + i]) : 0.0f);
    }
    m = m_new;
  }
  S* o = out + ((std::int64_t(b) * T + t) * H + h) * D;
  for (int c = 0; c < per_lane; ++c) {
    const int i = lane + 32 * c;
    if (i < D) o[i] = from_float<S>(acc[c] / l);
  }
  if (lane == 0) lse[(std::int64_t(b) * H + h) * T + t] = m + logf(l);
}

// dq_t += scale sum_j p_j (dout_t . v_j - delta_t) k_j, per query row.
template <class S>
__global__ void row_backward_dq_kernel(S* dq, const S* dout, const S* q, const S* k, const S* v,
                                       const S* out, const float* lse, const std::int32_t* pos,
                                       int T, int H, int KV, int D, float scale) {
  const int lane = threadIdx.x % 32, t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int h = blockIdx.y, b = blockIdx.z, g = h / (H / KV);
  if (t >= T) return;
  const std::int64_t qo = ((std::int64_t(b) * T + t) * H + h) * D;
  float qr[per_lane], dor[per_lane], acc[per_lane] = {};
  load_row(qr, q + qo, D, lane);
  load_row(dor, dout + qo, D, lane);
  const float delta = dot_row(dor, out + qo, D, lane);
  const float l = lse[(std::int64_t(b) * H + h) * T + t];
  for (int j = int(example_start(pos, b, T, t)); j <= t; ++j) {
    const std::int64_t ko = ((std::int64_t(b) * T + j) * KV + g) * D;
    const float p = expf(scale * dot_row(qr, k + ko, D, lane) - l);
    const float ds = p * (dot_row(dor, v + ko, D, lane) - delta) * scale;
    for (int c = 0; c < per_lane; ++c) {
      const int i = lane + 32 * c;
      if (i < D) acc[c] += ds * to_float(k[ko + i]);
    }
  }
  for (int c = 0; c < per_lane; ++c) {
    const int i = lane + 32 * c;
    if (i < D) dq[qo + i] = from_float<S>(to_float(dq[qo + i]) + acc[c]);
  }
}

// dk_j += scale sum p (dout_t . v_j - delta_t) q_t, dv_j += sum p dout_t over the group's query
// heads and t >= j, per key row (grid.y = kv head). delta is recomputed per (t, h).
template <class S>
__global__ void row_backward_dkv_kernel(S* dk, S* dv, const S* dout, const S* q, const S* k,
                                        const S* v, const S* out, const float* lse,
                                        const std::int32_t* pos, int T, int H, int KV, int D,
                                        float scale) {
  const int lane = threadIdx.x % 32, j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int g = blockIdx.y, b = blockIdx.z, group = H / KV;
  if (j >= T) return;
  const std::int64_t ko = ((std::int64_t(b) * T + j) * KV + g) * D;
  float kr[per_lane], vr[per_lane], dk_acc[per_lane] = {}, dv_acc[per_lane] = {};
  load_row(kr, k + ko, D, lane);
  load_row(vr, v + ko, D, lane);
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int t = j; t < T && example_start(pos, b, T, t) <= j; ++t) {
      const std::int64_t qo = ((std::int64_t(b) * T + t) * H + h) * D;
      const float p = expf(scale * dot_row(kr, q + qo, D, lane) - lse[(std::int64_t(b) * H + h) * T + t]);
      float dor[per_lane];
      load_row(dor, dout + qo, D, lane);
      const float delta = dot_row(dor, out + qo, D, lane);
      float dp = 0;
      for (int c = 0; c < per_lane; ++c) dp += dor[c] * vr[c];
      dp = warp_sum(dp);
      const float ds = p * (dp - delta) * scale;
      for (int c = 0; c < per_lane; ++c) {
        const int i = lane + 32 * c;
        if (i < D) {
          dv_acc[c] += p * dor[c];
          dk_acc[c] += ds * to_float(q[qo + i]);
        }
      }
    }
  for (int c = 0; c < per_lane; ++c) {
    const int i = lane + 32 * c;
    if (i < D) {
      dk[ko + i] = from_float<S>(to_float(dk[ko + i]) + dk_acc[c]);
      dv[ko + i] = from_float<S>(to_float(dv[ko + i]) + dv_acc[c]);
    }
  }
}

// The simple kernels for any storage and head_dim <= 128.
template <class S>
void forward(S* out, float* lse, const S* q, const S* k, const S* v, std::int64_t batch,
             std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
             cudaStream_t stream, const std::int32_t* positions = nullptr) {
  check_dims(head_dim);
  const dim3 grid(unsigned((seq + warps_per_block - 1) / warps_per_block), unsigned(heads), unsigned(batch));
  row_forward_kernel<S><<<grid, 32 * warps_per_block, 0, stream>>>(
      out, lse, q, k, v, positions, int(seq), int(heads), int(kv_heads), int(head_dim),
      float(1.0 / std::sqrt(double(head_dim))));
  LVT_CUDA_LAUNCHED("attention::cuda::simple::row_forward_kernel");
}
template <class S>
void backward(S* dq, S* dk, S* dv, const S* dout, const S* q, const S* k, const S* v,
              const S* out, const float* lse, std::int64_t batch, std::int64_t seq,
              std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, cudaStream_t stream,
              const std::int32_t* positions = nullptr) {
  check_dims(head_dim);
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  const unsigned rows = unsigned((seq + warps_per_block - 1) / warps_per_block);
  row_backward_dq_kernel<S><<<dim3(rows, unsigned(heads), unsigned(batch)), 32 * warps_per_block, 0, stream>>>(
      dq, dout, q, k, v, out, lse, positions, int(seq), int(heads), int(kv_heads), int(head_dim), scale);
  LVT_CUDA_LAUNCHED("attention::cuda::simple::row_backward_dq_kernel");
  row_backward_dkv_kernel<S><<<dim3(rows, unsigned(kv_heads), unsigned(batch)), 32 * warps_per_block, 0, stream>>>(
      dk, dv, dout, q, k, v, out, lse, positions, int(seq), int(heads), int(kv_heads), int(head_dim), scale);
  LVT_CUDA_LAUNCHED("attention::cuda::simple::row_backward_dkv_kernel");
}
}  // namespace simple

// ---- tiled: FlashAttention-2 on tensor cores --------------------------------------------------
// mma.sync m16n8k16 (bf16 or fp16 in, fp32 accumulators) fed by ldmatrix from shared memory;
// each of a block's 4 warps owns 16 of its 64 rows, every score tile stays in registers.
//   forward  block = 64 query rows of one (batch, head); K and V tiles of 64 keys stream through
//            shared memory up to the causal diagonal (cp.async on sm_80+: the next K loads
//            during softmax and P V, the next V during Q K^T); S = Q K^T, online softmax in
//            fp32, O += P V with P rounded to S (as FlashAttention does), lse = m + log(l).
//   dq       block = 64 query rows; per key tile S and dP = dO V^T again, dS = P (dP - delta),
//            dQ += dS K (the next V loads meanwhile). delta = rowsum(dO o O) at the start.
//   dk, dv   block = 64 keys of one kv head; loops over the group's query heads and the query
//            tiles from the diagonal down: S^T = K Q^T, dP^T = V dO^T, dV += P^T dO,
//            dK += dS^T Q, delta recomputed per query tile while its Q and dO load. The block
//            owns its keys: no atomics, deterministic.
//   packed   rows (positions): keys before a query's example_start are masked like keys after
//            it. Starts never fall along a row, so forward and dq begin at the key tile of their
//            first query's start, warps skip key tiles (16-key chunks in dq) before their first
//            row's start, and dk/dv stops at the first query tile that starts after its keys.
// Shared memory (rows padded by 16 bytes): forward and dq 18, 22, 26, 34 KiB at head_dim 64, 80,
// 96, 128; dk/dv 36.8, 44.8, 52.8, 51.4 KiB (32-query tiles at 128) -- within the 64 KiB sm_75
// allows; past 48 KiB through cudaFuncAttributeMaxDynamicSharedMemorySize.
namespace tiled {
using u32 = std::uint32_t;

inline constexpr int warps = 4;
inline constexpr int threads = 32 * warps;
inline constexpr int block_rows = 16 * warps;  // query rows (forward, dq) or keys (dk/dv) of a block
inline constexpr int key_tile = 64;            // keys per step of the forward and dq loops
// Queries per step of the dk/dv loop: 32 at head_dim 128 keeps its shared memory within 64 KiB.
template <int D>
inline constexpr int query_tile = D <= 96 ? 64 : 32;

template <class S>
inline constexpr bool has = std::is_same_v<S, bf16> || std::is_same_v<S, fp16>;
// bf16 mma.sync needs sm_80; fp16 runs on sm_75 as two m16n8k8 per m16n8k16.
template <class S>
inline constexpr int min_arch = std::is_same_v<S, bf16> ? 800 : 750;

constexpr bool head_dim_ok(std::int64_t d) { return d == 64 || d == 80 || d == 96 || d == 128; }

template <int D>
struct Dims {
  static_assert(D % 16 == 0 && D <= max_head_dim,
                "tiled attention: head_dim must be a multiple of 16 (the mma k-step), at most 128");
  // Shared-memory row: D elements and 16 bytes of padding, so the 8 rows one ldmatrix reads lie
  // in 8 different 16-byte bank groups (no bank conflicts at D = 64, 80, 96, 128).
  static constexpr int stride = D + 8;
  static constexpr int k_steps = D / 16;  // mma k-steps along head_dim
  static constexpr int n_tiles = D / 8;   // 8-wide mma n-tiles along head_dim
};

// Q (then K) and dO (then V) share two tiles; the dk/dv kernel holds K, V, Q, dO, lse, delta
// and the queries' example starts.
template <int D>
inline constexpr int forward_smem_bytes = 2 * key_tile * Dims<D>::stride * 2;
template <int D>
inline constexpr int dq_smem_bytes = forward_smem_bytes<D>;
template <int D>
inline constexpr int dkv_smem_bytes =
    (2 * block_rows + 2 * query_tile<D>) * Dims<D>::stride * 2 + 3 * query_tile<D> * 4;
static_assert(dkv_smem_bytes<64> <= 64 * 1024 && dkv_smem_bytes<80> <= 64 * 1024 &&
                  dkv_smem_bytes<96> <= 64 * 1024 && dkv_smem_bytes<128> <= 64 * 1024,
              "tiled attention: shared memory past the 64 KiB sm_75 allows per block; lower query_tile");

inline constexpr float log2e = 1.4426950408889634f;
inline constexpr float ln2 = 0.6931471805599453f;

// -- tensor-core primitives (PTX) --------------------------------------------------------------

template <class S>
__device__ constexpr bool arch_ok() {
#if defined(__CUDA_ARCH__)
  return __CUDA_ARCH__ >= min_arch<S>;
#else
  return false;
#endif
}

__device__ __forceinline__ u32 shared_address(const void* p) {
  return static_cast<u32>(__cvta_generic_to_shared(p));
}

// ldmatrix .x4: four 8 x 8 matrices of 16-bit elements. Lanes 8i..8i+7 give the addresses of
// matrix i's rows; lane l receives row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i in r[i]
// (the lower column in the low half).
__device__ __forceinline__ void ldsm(u32 (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}
// The same, each matrix transposed: lane l receives rows 2(l%4) and 2(l%4)+1 of column l/4.
__device__ __forceinline__ void ldsm_trans(u32 (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// d += A B for a 16 x 8 tile, k = 16 (mma.sync m16n8k16, fp32 accumulators). With g = lane / 4
// and c = 2 (lane % 4): a = A pairs {(g, c), (g+8, c), (g, c+8), (g+8, c+8)}, each the element
// and its right neighbour; b0 = B(c, g), B(c+1, g); b1 = B(c+8, g), B(c+9, g);
// d = {(g, c), (g, c+1), (g+8, c), (g+8, c+1)}.
template <class S>
__device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<S, bf16>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
  // sm_75, fp16 only: columns 0..7 of A (a[0], a[1]) with rows 0..7 of B (b0), then 8..15.
  if constexpr (std::is_same_v<S, fp16>) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b0));
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[2]), "r"(a[3]), "r"(b1));
  }
#endif
}

// Two floats rounded to S (nearest even), lo in the low half: an mma operand pair.
template <class S>
__device__ __forceinline__ u32 pack(float lo, float hi) {
  if constexpr (std::is_same_v<S, bf16>) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const u32*>(&h);
  } else {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const u32*>(&h);
  }
}

// 16 bytes from global to shared memory: cp.async on sm_80+ (in flight until wait_async), a
// plain copy below. commit_async closes this thread's group of copies issued since the last;
// wait_async<N> waits until at most the N newest groups are still in flight. A __syncthreads
// after the wait makes every thread's copies visible to the block.
template <class S>
__device__ __forceinline__ void copy16(S* dst, const S* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(dst)), "l"(src));
#else
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}
__device__ __forceinline__ void commit_async() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void wait_async() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// The four lanes of a quad (same lane / 4) hold one row of an mma accumulator tile.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// -- the kernels' bodies -----------------------------------------------------------------------

template <class S>
__device__ __forceinline__ float lo_half(u32 w) { return to_float(S{std::uint16_t(w & 0xffffu)}); }
template <class S>
__device__ __forceinline__ float hi_half(u32 w) { return to_float(S{std::uint16_t(w >> 16)}); }

// p[0] += lo, p[1] += hi for a 4-byte aligned pair of S, each sum rounded once.
template <class S>
__device__ __forceinline__ void add_pair(S* p, float lo, float hi) {
  u32* w = reinterpret_cast<u32*>(p);
  const u32 old = *w;
  *w = pack<S>(lo_half<S>(old) + lo, hi_half<S>(old) + hi);
}

// Sum of products of 8 + 8 elements of S, each 16 bytes (delta = dO . O, 8 at a time).
template <class S>
__device__ __forceinline__ float dot8(const S* a, const S* b) {
  const uint4 x = *reinterpret_cast<const uint4*>(a), y = *reinterpret_cast<const uint4*>(b);
  const u32 xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
  float s = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    s += lo_half<S>(xs[i]) * lo_half<S>(ys[i]) + hi_half<S>(xs[i]) * hi_half<S>(ys[i]);
  return s;
}

// Issues the copy of Rows x D elements into shared memory (row stride Dims<D>::stride) from
// global rows src_step elements apart, 16 bytes per thread and step (copy16: asynchronous on
// sm_80+); rows from `valid` on are stored as zeros (a zero key or value row keeps 0 * garbage
// out of the products).
template <class S, int D, int Rows>
__device__ __forceinline__ void load_tile(S* dst, const S* src, std::int64_t src_step, int valid) {
  constexpr int chunks = D / 8;
  for (int i = int(threadIdx.x); i < Rows * chunks; i += threads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    S* d = dst + r * Dims<D>::stride + c;
    if (r < valid)
      copy16(d, src + r * src_step + c);
    else
      *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// ldmatrix row addresses (lane's) for a 16 x 16 block at (r0, c0) of a row-major tile. frag_a:
// matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15): with ldsm an A operand;
// with ldsm_trans the B operands of two n-tiles (cols 0-7, then 8-15) of a tile stored [k][n].
// frag_b: matrices (0-7, 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15): with ldsm the B operands
// of two n-tiles (rows 0-7, then 8-15) of a tile stored [n][k].
template <class S>
__device__ __forceinline__ const S* frag_a(const S* tile, int stride, int r0, int c0, int lane) {
  return tile + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + c0 + (lane >> 4) * 8;
}
template <class S>
__device__ __forceinline__ const S* frag_b(const S* tile, int stride, int r0, int c0, int lane) {
  return tile + (r0 + (lane & 7) + (lane >> 4) * 8) * stride + c0 + ((lane >> 3) & 1) * 8;
}

// Accumulator tiles of 16 rows x 16 columns (two n-tiles) as the A operand of the next product:
// the layouts agree pairwise, so rounding to S is all it takes.
template <class S>
__device__ __forceinline__ void to_a(u32 (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack<S>(c0[0], c0[1]);
  a[1] = pack<S>(c0[2], c0[3]);
  a[2] = pack<S>(c1[0], c1[1]);
  a[3] = pack<S>(c1[2], c1[3]);
}

// Forward, one block: 64 query rows (q0.. of grid row blockIdx.x, longest first) of head
// blockIdx.y, batch blockIdx.z. scale_log2 = log2(e) / sqrt(D): scores in base 2 for exp2f.
template <class S, int D>
__device__ void forward_block(unsigned char* smem, S* out, float* lse, const S* q, const S* k,
                              const S* v, const std::int32_t* pos, int T, int H, int KV,
                              float scale_log2) {
  constexpr int ST = Dims<D>::stride, KS = Dims<D>::k_steps, NT = Dims<D>::n_tiles;
  S* ks = reinterpret_cast<S*>(smem);
  S* vs = ks + key_tile * ST;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, tq = lane % 4;
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * block_rows;
  const int h = int(blockIdx.y), b = int(blockIdx.z), kvh = h / (H / KV);
  const std::int64_t q_step = std::int64_t(H) * D, k_step = std::int64_t(KV) * D;
  const S* kb = k + (std::int64_t(b) * T * KV + kvh) * D;
  const S* vb = v + (std::int64_t(b) * T * KV + kvh) * D;

  // The warp's 16 rows of Q, once, as A fragments (through the K tile's shared memory).
  load_tile<S, D, block_rows>(ks, q + ((std::int64_t(b) * T + q0) * H + h) * D, q_step,
                              min(block_rows, T - q0));
  commit_async();
  wait_async<0>();
  __syncthreads();
  u32 qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) ldsm(qf[kk], frag_a(ks, ST, warp * 16, kk * 16, lane));
  __syncthreads();  // every warp holds its Q: the tile is free for K

  float o[NT][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this lane's part of the row sum
  const int first_row = q0 + warp * 16, row[2] = {first_row + g, first_row + g + 8};
  const bool active = first_row < T;
  // Packed rows: each row's first key; the warp's smallest is its first row's (starts never fall).
  const int start[2] = {row[0] < T ? int(example_start(pos, b, T, row[0])) : 0,
                        row[1] < T ? int(example_start(pos, b, T, row[1])) : 0};
  const int warp_start = active ? int(example_start(pos, b, T, first_row)) : 0;
  const int key_end = min(q0 + block_rows, T);  // keys some valid row of the block sees
  const int key_begin = int(example_start(pos, b, T, q0)) / key_tile * key_tile;  // and the first
  // K and V stream through one buffer each, as in FlashAttention-2: K of the next tile loads
  // while this tile's softmax and P V run, V of the next tile while its S = Q K^T runs.
  load_tile<S, D, key_tile>(ks, kb + key_begin * k_step, k_step, min(key_tile, T - key_begin));
  commit_async();
  load_tile<S, D, key_tile>(vs, vb + key_begin * k_step, k_step, min(key_tile, T - key_begin));
  commit_async();
  for (int k0 = key_begin; k0 < key_end; k0 += key_tile) {
    const int next = k0 + key_tile;
    // else the tile is after all the warp's rows, or before all their examples
    const bool work = active && k0 <= first_row + 15 && next > warp_start;
    wait_async<1>();  // K_j is in (V_j may still be in flight)
    __syncthreads();
    float s[key_tile / 8][4] = {};
    if (work) {
#pragma unroll
      for (int kk = 0; kk < KS; ++kk)
#pragma unroll
        for (int n = 0; n < key_tile / 16; ++n) {
          u32 kf[4];
          ldsm(kf, frag_b(ks, ST, n * 16, kk * 16, lane));
          mma<S>(s[2 * n], qf[kk], kf[0], kf[1]);
          mma<S>(s[2 * n + 1], qf[kk], kf[2], kf[3]);
        }
    }
    __syncthreads();  // K_j is read by every warp
    if (next < key_end) load_tile<S, D, key_tile>(ks, kb + next * k_step, k_step, min(key_tile, T - next));
    commit_async();
    wait_async<1>();  // V_j is in (K_{j+1} may still be in flight)
    __syncthreads();
    if (work) {
      // Causal, example and sequence mask, then the online softmax (rows g and g+8 of the
      // warp's tile).
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int n = 0; n < key_tile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + n * 8 + 2 * tq + (e & 1), r = e >> 1;
          s[n][e] = key <= row[r] && key >= start[r] && key < T ? s[n][e] * scale_log2 : -INFINITY;
          mx[r] = fmaxf(mx[r], s[n][e]);
        }
      float base[2], corr[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = quad_max(mx[r]);
        base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];  // a row with no key yet: keep exp2f finite
        corr[r] = exp2f(m[r] - base[r]);
        m[r] = mx[r];
        l[r] *= corr[r];
      }
#pragma unroll
      for (int n = 0; n < key_tile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[n][e] = exp2f(s[n][e] - base[e >> 1]);
          l[e >> 1] += s[n][e];
        }
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        o[n][0] *= corr[0];
        o[n][1] *= corr[0];
        o[n][2] *= corr[1];
        o[n][3] *= corr[1];
      }
      // O += P V: P (16 x 64) as A fragments, V through ldmatrix.trans (stored [key][d]).
#pragma unroll
      for (int kc = 0; kc < key_tile / 16; ++kc) {
        u32 pa[4];
        to_a<S>(pa, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
        for (int n = 0; n < NT / 2; ++n) {
          u32 vf[4];
          ldsm_trans(vf, frag_a(vs, ST, kc * 16, n * 16, lane));
          mma<S>(o[2 * n], pa, vf[0], vf[1]);
          mma<S>(o[2 * n + 1], pa, vf[2], vf[3]);
        }
      }
    }
    __syncthreads();  // V_j is read by every warp
    if (next < key_end) load_tile<S, D, key_tile>(vs, vb + next * k_step, k_step, min(key_tile, T - next));
    commit_async();
  }

  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    if (row[r] >= T) continue;
    const float inv = 1.0f / l[r];
    S* orow = out + ((std::int64_t(b) * T + row[r]) * H + h) * D + 2 * tq;
#pragma unroll
    for (int n = 0; n < NT; ++n)
      *reinterpret_cast<u32*>(orow + n * 8) = pack<S>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    if (tq == 0) lse[(std::int64_t(b) * H + h) * T + row[r]] = (m[r] + log2f(l[r])) * ln2;
  }
}

// dq, one block: 64 query rows (longest first) of head blockIdx.y, batch blockIdx.z.
template <class S, int D>
__device__ void dq_block(unsigned char* smem, S* dq, const S* dout, const S* q, const S* k,
                         const S* v, const S* out, const float* lse, const std::int32_t* pos,
                         int T, int H, int KV, float scale, float scale_log2) {
  constexpr int ST = Dims<D>::stride, KS = Dims<D>::k_steps, NT = Dims<D>::n_tiles;
  S* ks = reinterpret_cast<S*>(smem);
  S* vs = ks + key_tile * ST;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, tq = lane % 4;
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * block_rows;
  const int h = int(blockIdx.y), b = int(blockIdx.z), kvh = h / (H / KV);
  const std::int64_t q_step = std::int64_t(H) * D, k_step = std::int64_t(KV) * D;
  const std::int64_t q_base = (std::int64_t(b) * T * H + h) * D;  // row t at q_base + t * q_step
  const S* kb = k + (std::int64_t(b) * T * KV + kvh) * D;
  const S* vb = v + (std::int64_t(b) * T * KV + kvh) * D;

  load_tile<S, D, block_rows>(ks, q + q_base + q0 * q_step, q_step, min(block_rows, T - q0));
  load_tile<S, D, block_rows>(vs, dout + q_base + q0 * q_step, q_step, min(block_rows, T - q0));
  commit_async();
  // delta = dO . O of row threadIdx.x / 2 (lanes 2i, 2i+1 of a warp: its row i), half each.
  float part = 0;
  if (const int t = q0 + int(threadIdx.x) / 2; t < T)
    for (int c = (lane & 1) * 8; c < D; c += 16)
      part += dot8(dout + q_base + t * q_step + c, out + q_base + t * q_step + c);
  part += __shfl_xor_sync(0xffffffffu, part, 1);
  const float delta[2] = {__shfl_sync(0xffffffffu, part, 2 * g), __shfl_sync(0xffffffffu, part, 2 * g + 16)};
  const int first_row = q0 + warp * 16, row[2] = {first_row + g, first_row + g + 8};
  float lse2[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) lse2[r] = row[r] < T ? lse[(std::int64_t(b) * H + h) * T + row[r]] * log2e : 0.0f;
  wait_async<0>();
  __syncthreads();
  u32 qf[KS][4], df[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    ldsm(qf[kk], frag_a(ks, ST, warp * 16, kk * 16, lane));
    ldsm(df[kk], frag_a(vs, ST, warp * 16, kk * 16, lane));
  }
  __syncthreads();  // every warp holds its Q and dO: the tiles are free for K and V

  float acc[NT][4] = {};
  const bool active = first_row < T;
  // Packed rows, as in forward: the rows' first keys, the warp's smallest, the block's first tile.
  const int start[2] = {row[0] < T ? int(example_start(pos, b, T, row[0])) : 0,
                        row[1] < T ? int(example_start(pos, b, T, row[1])) : 0};
  const int warp_start = active ? int(example_start(pos, b, T, first_row)) : 0;
  const int key_end = min(q0 + block_rows, T);
  const int key_begin = int(example_start(pos, b, T, q0)) / key_tile * key_tile;
  load_tile<S, D, key_tile>(ks, kb + key_begin * k_step, k_step, min(key_tile, T - key_begin));
  load_tile<S, D, key_tile>(vs, vb + key_begin * k_step, k_step, min(key_tile, T - key_begin));
  commit_async();
  for (int k0 = key_begin; k0 < key_end; k0 += key_tile) {
    const int next = k0 + key_tile;
    wait_async<0>();  // K and V of this tile are in
    __syncthreads();
    // S and dP, 16 keys at a time, into dS as A fragments; chunks after the warp's last row, or
    // before its first row's example, are skipped (the condition is the same in both loops).
    u32 da[key_tile / 16][4];
#pragma unroll
    for (int kc = 0; kc < key_tile / 16; ++kc) {
      const int c0 = k0 + kc * 16;
      if (!active || c0 > first_row + 15 || c0 + 15 < warp_start) continue;
      float s[2][4] = {}, dp[2][4] = {};
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        u32 kf[4], vf[4];
        ldsm(kf, frag_b(ks, ST, kc * 16, kk * 16, lane));
        mma<S>(s[0], qf[kk], kf[0], kf[1]);
        mma<S>(s[1], qf[kk], kf[2], kf[3]);
        ldsm(vf, frag_b(vs, ST, kc * 16, kk * 16, lane));
        mma<S>(dp[0], df[kk], vf[0], vf[1]);
        mma<S>(dp[1], df[kk], vf[2], vf[3]);
      }
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = c0 + n * 8 + 2 * tq + (e & 1), r = e >> 1;
          const float p = key <= row[r] && key >= start[r] && key < T
                              ? exp2f(s[n][e] * scale_log2 - lse2[r]) : 0.0f;
          s[n][e] = p * (dp[n][e] - delta[r]) * scale;  // dS, the 1/sqrt(D) of dQ folded in
        }
      to_a<S>(da[kc], s[0], s[1]);
    }
    __syncthreads();  // V is read by every warp: the next V loads while dQ += dS K runs
    if (next < key_end) load_tile<S, D, key_tile>(vs, vb + next * k_step, k_step, min(key_tile, T - next));
#pragma unroll
    for (int kc = 0; kc < key_tile / 16; ++kc) {
      if (!active || k0 + kc * 16 > first_row + 15 || k0 + kc * 16 + 15 < warp_start) continue;
#pragma unroll
      for (int n = 0; n < NT / 2; ++n) {  // K through ldmatrix.trans
        u32 kf[4];
        ldsm_trans(kf, frag_a(ks, ST, kc * 16, n * 16, lane));
        mma<S>(acc[2 * n], da[kc], kf[0], kf[1]);
        mma<S>(acc[2 * n + 1], da[kc], kf[2], kf[3]);
      }
    }
    __syncthreads();  // K is read by every warp
    if (next < key_end) load_tile<S, D, key_tile>(ks, kb + next * k_step, k_step, min(key_tile, T - next));
    commit_async();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= T) continue;
    S* drow = dq + q_base + row[r] * q_step + 2 * tq;
#pragma unroll
    for (int n = 0; n < NT; ++n) add_pair(drow + n * 8, acc[n][2 * r], acc[n][2 * r + 1]);
  }
}

// dk, dv, one block: 64 keys (k0 = 64 blockIdx.x) of kv head blockIdx.y, batch blockIdx.z, over
// the group's query heads and the query tiles from the diagonal to the end.
template <class S, int D>
__device__ void dkv_block(unsigned char* smem, S* dk, S* dv, const S* dout, const S* q, const S* k,
                          const S* v, const S* out, const float* lse, const std::int32_t* pos,
                          int T, int H, int KV, float scale, float scale_log2) {
  constexpr int ST = Dims<D>::stride, KS = Dims<D>::k_steps, NT = Dims<D>::n_tiles;
  constexpr int BQ = query_tile<D>, per_row = threads / BQ;  // threads per query row for delta
  S* ks = reinterpret_cast<S*>(smem);
  S* vs = ks + block_rows * ST;
  S* qs = vs + block_rows * ST;
  S* dos = qs + BQ * ST;
  float* lse2_s = reinterpret_cast<float*>(dos + BQ * ST);
  float* delta_s = lse2_s + BQ;
  int* start_s = reinterpret_cast<int*>(delta_s + BQ);  // the queries' example starts
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, tq = lane % 4;
  const int k0 = int(blockIdx.x) * block_rows, kvh = int(blockIdx.y), b = int(blockIdx.z);
  const int group = H / KV;
  const std::int64_t q_step = std::int64_t(H) * D, k_step = std::int64_t(KV) * D;
  const std::int64_t k_base = (std::int64_t(b) * T * KV + kvh) * D;  // key j at k_base + j * k_step

  load_tile<S, D, block_rows>(ks, k + k_base + k0 * k_step, k_step, min(block_rows, T - k0));
  load_tile<S, D, block_rows>(vs, v + k_base + k0 * k_step, k_step, min(block_rows, T - k0));
  commit_async();  // waited for with the first Q and dO tiles
  const int first_key = k0 + warp * 16, key[2] = {first_key + g, first_key + g + 8};
  const bool active = first_key < T;
  float dka[NT][4] = {}, dva[NT][4] = {};
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const std::int64_t q_base = (std::int64_t(b) * T * H + h) * D;
    const float* lse_h = lse + (std::int64_t(b) * H + h) * T;
    for (int q0 = k0; q0 < T; q0 += BQ) {  // BQ divides 64: the first tile starts at the diagonal
      // Packed rows: from the first query whose example starts after the block's last key on,
      // no query sees any of its keys (starts never fall). The same for every thread.
      if (example_start(pos, b, T, q0) > k0 + block_rows - 1) break;
      __syncthreads();  // the previous Q, dO, lse, delta and starts are read by every warp
      load_tile<S, D, BQ>(qs, q + q_base + q0 * q_step, q_step, min(BQ, T - q0));
      load_tile<S, D, BQ>(dos, dout + q_base + q0 * q_step, q_step, min(BQ, T - q0));
      commit_async();
      {  // while they load: lse (base 2) and delta = dO . O of the tile's rows, per_row threads
         // (adjacent lanes) a row
        const int r = int(threadIdx.x) / per_row, part = int(threadIdx.x) % per_row, t = q0 + r;
        float sum = 0;
        if (t < T)
          for (int c = part * 8; c < D; c += 8 * per_row)
            sum += dot8(dout + q_base + t * q_step + c, out + q_base + t * q_step + c);
#pragma unroll
        for (int o = 1; o < per_row; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (part == 0) {
          delta_s[r] = sum;
          lse2_s[r] = t < T ? lse_h[t] * log2e : 0.0f;
          start_s[r] = t < T ? int(example_start(pos, b, T, t)) : T;
        }
      }
      wait_async<0>();
      __syncthreads();
      if (!active || q0 + BQ - 1 < first_key) continue;  // every query before every key of the warp
      for (int qc = 0; qc < BQ; qc += 16) {  // 16 queries at a time
        const int c0 = q0 + qc;
        if (c0 >= T) break;
        if (c0 + 15 < first_key) continue;
        if (start_s[qc] > first_key + 15) break;  // these queries' examples start after the keys
        float st[2][4] = {}, dpt[2][4] = {};  // S^T and dP^T: the warp's 16 keys x 16 queries
#pragma unroll
        for (int kk = 0; kk < KS; ++kk) {
          u32 ka[4], qf[4], va[4], df[4];
          ldsm(ka, frag_a(ks, ST, warp * 16, kk * 16, lane));
          ldsm(qf, frag_b(qs, ST, qc, kk * 16, lane));
          mma<S>(st[0], ka, qf[0], qf[1]);
          mma<S>(st[1], ka, qf[2], qf[3]);
          ldsm(va, frag_a(vs, ST, warp * 16, kk * 16, lane));
          ldsm(df, frag_b(dos, ST, qc, kk * 16, lane));
          mma<S>(dpt[0], va, df[0], df[1]);
          mma<S>(dpt[1], va, df[2], df[3]);
        }
        float p[2][4];
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = qc + n * 8 + 2 * tq + (e & 1), t = q0 + i;
            p[n][e] = t < T && key[e >> 1] <= t && key[e >> 1] >= start_s[i]
                          ? exp2f(st[n][e] * scale_log2 - lse2_s[i]) : 0.0f;
            st[n][e] = p[n][e] * (dpt[n][e] - delta_s[i]) * scale;  // dS^T, 1/sqrt(D) folded in
          }
        u32 pa[4], da[4];
        to_a<S>(pa, p[0], p[1]);
        to_a<S>(da, st[0], st[1]);
#pragma unroll
        for (int n = 0; n < NT / 2; ++n) {  // dV += P^T dO, dK += dS^T Q (ldmatrix.trans)
          u32 df[4], qf[4];
          ldsm_trans(df, frag_a(dos, ST, qc, n * 16, lane));
          mma<S>(dva[2 * n], pa, df[0], df[1]);
          mma<S>(dva[2 * n + 1], pa, df[2], df[3]);
          ldsm_trans(qf, frag_a(qs, ST, qc, n * 16, lane));
          mma<S>(dka[2 * n], da, qf[0], qf[1]);
          mma<S>(dka[2 * n + 1], da, qf[2], qf[3]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= T) continue;
    const std::int64_t at = k_base + key[r] * k_step + 2 * tq;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      add_pair(dk + at + n * 8, dka[n][2 * r], dka[n][2 * r + 1]);
      add_pair(dv + at + n * 8, dva[n][2 * r], dva[n][2 * r + 1]);
    }
  }
}

// -- kernels and launchers ---------------------------------------------------------------------
// The bodies only where the architecture has the instructions (bf16: sm_80+); elsewhere an
// empty kernel that supported() keeps the launchers from choosing.

template <class S, int D>
__global__ void __launch_bounds__(threads)
    forward_kernel(S* out, float* lse, const S* q, const S* k, const S* v, const std::int32_t* pos,
                   int T, int H, int KV, float scale_log2) {
  extern __shared__ __align__(16) unsigned char attention_smem[];
  if constexpr (arch_ok<S>())
    forward_block<S, D>(attention_smem, out, lse, q, k, v, pos, T, H, KV, scale_log2);
}
template <class S, int D>
__global__ void __launch_bounds__(threads)
    dq_kernel(S* dq, const S* dout, const S* q, const S* k, const S* v, const S* out,
              const float* lse, const std::int32_t* pos, int T, int H, int KV, float scale,
              float scale_log2) {
  extern __shared__ __align__(16) unsigned char attention_smem[];
  if constexpr (arch_ok<S>())
    dq_block<S, D>(attention_smem, dq, dout, q, k, v, out, lse, pos, T, H, KV, scale, scale_log2);
}
template <class S, int D>
__global__ void __launch_bounds__(threads)
    dkv_kernel(S* dk, S* dv, const S* dout, const S* q, const S* k, const S* v, const S* out,
               const float* lse, const std::int32_t* pos, int T, int H, int KV, float scale,
               float scale_log2) {
  extern __shared__ __align__(16) unsigned char attention_smem[];
  if constexpr (arch_ok<S>())
    dkv_block<S, D>(attention_smem, dk, dv, dout, q, k, v, out, lse, pos, T, H, KV, scale, scale_log2);
}

inline constexpr int max_devices = 64;

// Whether the current device runs the tiled kernels for S: compute capability, and the
// architecture this binary's kernels were compiled for (a PTX-only sm_75 build JIT-compiled on
// sm_80 still has the empty bf16 bodies). Asked once per device, then cached.
template <class S>
bool supported() {
  if constexpr (!has<S>) {
    return false;
  } else {
    static std::array<std::atomic<int>, max_devices> known{};  // 0 unknown, 1 yes, 2 no
    int dev = 0;
    LVT_CUDA_CHECK(cudaGetDevice(&dev));
    if (dev >= 0 && dev < max_devices) {
      if (const int c = known[std::size_t(dev)].load(std::memory_order_relaxed); c != 0) return c == 1;
    }
    int major = 0, minor = 0;
    LVT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    LVT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    cudaFuncAttributes attr{};
    const cudaError_t e = cudaFuncGetAttributes(&attr, forward_kernel<S, 64>);
    if (e != cudaSuccess) (void)cudaGetLastError();  // no image for this device: not an error here
    const int built = attr.ptxVersion > 0 ? attr.ptxVersion : attr.binaryVersion;  // e.g. 80
    const bool ok = e == cudaSuccess && (major * 10 + minor) * 10 >= min_arch<S> &&
                    built * 10 >= min_arch<S>;
    if (dev >= 0 && dev < max_devices) known[std::size_t(dev)].store(ok ? 1 : 2, std::memory_order_relaxed);
    return ok;
  }
}

// Dynamic shared memory past 48 KiB must be allowed per kernel (and device), once.
template <class Kernel>
void allow_smem(Kernel* kernel, int bytes, std::array<std::atomic<bool>, max_devices>& done) {
  if (bytes <= 48 * 1024) return;
  int dev = 0;
  LVT_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < max_devices && done[std::size_t(dev)].load(std::memory_order_relaxed)) return;
  LVT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (dev >= 0 && dev < max_devices) done[std::size_t(dev)].store(true, std::memory_order_relaxed);
}

inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <class S, int D>
void forward(S* out, float* lse, const S* q, const S* k, const S* v, std::int64_t batch,
             std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, cudaStream_t stream,
             const std::int32_t* positions = nullptr) {
  static std::array<std::atomic<bool>, max_devices> smem_set{};
  allow_smem(forward_kernel<S, D>, forward_smem_bytes<D>, smem_set);
  const dim3 grid(unsigned((seq + block_rows - 1) / block_rows), unsigned(heads), unsigned(batch));
  forward_kernel<S, D><<<grid, threads, forward_smem_bytes<D>, stream>>>(
      out, lse, q, k, v, positions, int(seq), int(heads), int(kv_heads),
      float(1.0 / std::sqrt(double(D))) * log2e);
  LVT_CUDA_LAUNCHED("attention::cuda::tiled::forward_kernel");
}
template <class S, int D>
void backward(S* dq, S* dk, S* dv, const S* dout, const S* q, const S* k, const S* v,
              const S* out, const float* lse, std::int64_t batch, std::int64_t seq,
              std::int64_t heads, std::int64_t kv_heads, cudaStream_t stream,
              const std::int32_t* positions = nullptr) {
  static std::array<std::atomic<bool>, max_devices> dq_set{}, dkv_set{};
  allow_smem(dq_kernel<S, D>, dq_smem_bytes<D>, dq_set);
  allow_smem(dkv_kernel<S, D>, dkv_smem_bytes<D>, dkv_set);
  const float scale = float(1.0 / std::sqrt(double(D)));
  const unsigned tiles = unsigned((seq + block_rows - 1) / block_rows);
  dq_kernel<S, D><<<dim3(tiles, unsigned(heads), unsigned(batch)), threads, dq_smem_bytes<D>, stream>>>(
      dq, dout, q, k, v, out, lse, positions, int(seq), int(heads), int(kv_heads), scale, scale * log2e);
  LVT_CUDA_LAUNCHED("attention::cuda::tiled::dq_kernel");
  dkv_kernel<S, D><<<dim3(tiles, unsigned(kv_heads), unsigned(batch)), threads, dkv_smem_bytes<D>, stream>>>(
      dk, dv, dout, q, k, v, out, lse, positions, int(seq), int(heads), int(kv_heads), scale, scale * log2e);
  LVT_CUDA_LAUNCHED("attention::cuda::tiled::dkv_kernel");
}
}  // namespace tiled

// Whether forward and backward run the tiled kernels for storage S at this head_dim on the
// current device (given 16-byte aligned tensors; misaligned ones take the simple kernels).
template <class S>
bool uses_tiled(std::int64_t head_dim) {
  return tiled::has<S> && tiled::head_dim_ok(head_dim) && tiled::supported<S>();
}

// Same shapes and semantics as the host forward/backward above (dq, dk, dv +=); positions in
// device memory (null: 0..seq-1 in every row), checked by the caller.
template <class S>
void forward(S* out, float* lse, const S* q, const S* k, const S* v, std::int64_t batch,
             std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
             cudaStream_t stream, const std::int32_t* positions = nullptr) {
  check_dims(head_dim);
  if constexpr (tiled::has<S>) {
    const char* why = simple_attention_reason(head_dim, tiled::supported<S>(),
                                              tiled::aligned16({out, q, k, v}));
    if (why) warn_simple_attention_once(why, head_dim);
    else {
      switch (head_dim) {
        case 64: return tiled::forward<S, 64>(out, lse, q, k, v, batch, seq, heads, kv_heads, stream, positions);
        case 80: return tiled::forward<S, 80>(out, lse, q, k, v, batch, seq, heads, kv_heads, stream, positions);
        case 96: return tiled::forward<S, 96>(out, lse, q, k, v, batch, seq, heads, kv_heads, stream, positions);
        case 128: return tiled::forward<S, 128>(out, lse, q, k, v, batch, seq, heads, kv_heads, stream, positions);
        default: break;
      }
    }
  }
  simple::forward(out, lse, q, k, v, batch, seq, heads, kv_heads, head_dim, stream, positions);
}
template <class S>
void backward(S* dq, S* dk, S* dv, const S* dout, const S* q, const S* k, const S* v,
              const S* out, const float* lse, std::int64_t batch, std::int64_t seq,
              std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, cudaStream_t stream,
              const std::int32_t* positions = nullptr) {
  check_dims(head_dim);
  if constexpr (tiled::has<S>) {
    const char* why = simple_attention_reason(head_dim, tiled::supported<S>(),
                                              tiled::aligned16({dq, dk, dv, dout, q, k, v, out}));
    if (why) warn_simple_attention_once(why, head_dim);
    else {
      switch (head_dim) {
        case 64: return tiled::backward<S, 64>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, kv_heads, stream, positions);
        case 80: return tiled::backward<S, 80>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, kv_heads, stream, positions);
        case 96: return tiled::backward<S, 96>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, kv_heads, stream, positions);
        case 128: return tiled::backward<S, 128>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, kv_heads, stream, positions);
        default: break;
      }
    }
  }
  simple::backward(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, kv_heads, head_dim, stream,
                   positions);
}
}  // namespace lvt::ops::attention::cuda
#endif
