#pragma once
// The matrix products of the host backend, on row-major raw pointers with leading dimensions,
// through the BLAS (OpenBLAS's cblas_sgemm / cblas_dgemm); the CUDA backend uses cuBLASLt below:
//   gemm        C[M, N] = alpha * op(A) op(B) + beta * C      (op: as stored, or transposed)
//   forward     y[n, m]  (+)= alpha * sum_k x[n, k] W[m, k] + bias[m]   (x W^T, W as nn.Linear [out, in])
//   input grad  dx[n, k]  += alpha * sum_m dy[n, m] W[m, k]             (dy W)
//   weight grad dW[m, k]  += alpha * sum_n dy[n, m] x[n, k]             (dy^T x)
//   matvec      y[m] = bias[m] + W[m, :] . x                             (generation's decode step)
//
// Threads (ops/parallel.hpp): the BLAS is told to run single-threaded, and a product big enough
// to pay for the team is split into one contiguous block of rows (or of columns, whichever side
// is longer) per thread, each a BLAS call of its own. The split depends only on the shape and
// the thread count, and each element of C is a whole reduction inside one call: for a fixed
// thread count a product gives the same bits every time. Inside a parallel region (attention's
// per-head products) a product is one call on the calling thread.
//
// OpenBLAS picks its kernels by the CPU's model number; a CPU newer than the library (0.3.21,
// Debian 12, on Sapphire / Emerald Rapids) falls back to the SSE3 "Prescott" kernels at a sixth
// of the AVX-512 rate. setup() moves such a fallback to the kernels the CPU's features allow
// (SkylakeX with AVX-512, Haswell with AVX2 + FMA), unless OPENBLAS_CORETYPE says otherwise.
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

#include "lvt/error.hpp"
#include "lvt/ops/parallel.hpp"

namespace lvt::ops::matmul {

// Multiply-adds below which a product runs on one thread (about 40 us at 100 GFLOP/s).
inline constexpr std::int64_t parallel_min_work = std::int64_t(1) << 22;
// Threads' blocks start at multiples of this many rows or columns (whole micro-kernel tiles).
inline constexpr std::int64_t split_align = 16;

template <class T>
inline T dot(const T* a, const T* b, std::int64_t n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const std::int64_t n8 = n - n % 8;
  for (std::int64_t k = 0; k < n8; k += 8)
    for (int u = 0; u < 8; u++) acc[u] += a[k + u] * b[k + u];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (std::int64_t k = n8; k < n; k++) s += a[k] * b[k];
  return s;
}

// ---- the BLAS ------------------------------------------------------------------------------
namespace blas {

struct Info {
  std::string library = "BLAS";  // "OpenBLAS 0.3.21", ...
  std::string core;              // OpenBLAS's kernel set ("SkylakeX")
  std::string moved_from;        // the kernel set OpenBLAS chose itself, when setup() moved it
  std::string build;             // "pthreads", "OpenMP", "serial"
};

namespace detail {
#if defined(OPENBLAS_VERSION) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
inline bool is_sse_only_core(const std::string& c) {
  static const char* const generic[] = {"Prescott", "Core2",  "Penryn",     "Dunnington",
                                        "Nehalem",  "Katmai", "Coppermine", "Northwood",
                                        "Banias",   "Atom",   "Nano"};
  for (const char* g : generic)
    if (c == g) return true;
  return false;
}
// The kernel set the CPU's features allow, when OpenBLAS fell back to an SSE-only one.
inline const char* better_core() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}
// A DYNAMIC_ARCH OpenBLAS re-reads OPENBLAS_CORETYPE when its kernel table is reset: both entry
// points are exported by such builds (looked up, so other builds simply keep their kernels).
inline void move_core(Info& info) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || !is_sse_only_core(info.core)) return;
  const char* want = better_core();
  if (!want) return;
  using Fn = void (*)();
  Fn quit = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  Fn init = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (!quit || !init) return;
  setenv("OPENBLAS_CORETYPE", want, 1);
  quit();
  init();
  unsetenv("OPENBLAS_CORETYPE");
  info.moved_from = info.core;
  info.core = openblas_get_corename();
}
#endif

inline Info make_info() {
  Info info;
#if defined(OPENBLAS_VERSION)
  info.library = "OpenBLAS";
  const std::string config = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH ..."
  const std::size_t sp = config.find(' ', 9);
  if (config.rfind("OpenBLAS ", 0) == 0) info.library = config.substr(0, sp);
  info.core = openblas_get_corename();
  const int par = openblas_get_parallel();
  info.build = par == 0 ? "serial" : par == 1 ? "pthreads" : "OpenMP";
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  move_core(info);
#endif
  // lvt splits products over its own threads: the BLAS never starts a team of its own.
  openblas_set_num_threads(1);
#endif
  return info;
}
}  // namespace detail

// Once per process, before the first product (thread-safe).
inline const Info& setup() {
  static const Info info = detail::make_info();
  return info;
}

// One row-major BLAS call (sizes already checked, all positive).
inline void call(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void call(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemv(int M, int N, const float* A, int lda, const float* x, float beta, float* y) {
  cblas_sgemv(CblasRowMajor, CblasNoTrans, M, N, 1.0f, A, lda, x, 1, beta, y, 1);
}
inline void gemv(int M, int N, const double* A, int lda, const double* x, double beta, double* y) {
  cblas_dgemv(CblasRowMajor, CblasNoTrans, M, N, 1.0, A, lda, x, 1, beta, y, 1);
}

}  // namespace blas

namespace detail {
inline int blas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("matmul: ") + what + " " + std::to_string(v) +
                " is outside the BLAS's 32-bit range");
  return int(v);
}
// Block i of p over [0, n), starting at a multiple of split_align.
inline std::int64_t split_at(std::int64_t n, int i, int p) {
  if (i >= p) return n;
  return (n * i / p) / split_align * split_align;
}
}  // namespace detail

// C[M, N] = alpha * op(A) op(B) + beta * C, row-major. op(A) is [M, K]: A as stored [M, K]
// (lda >= K) or, with trans_a, A^T of A stored [K, M] (lda >= M); op(B) is [K, N]: B stored
// [K, N] (ldb >= N) or, with trans_b, B^T of B stored [N, K] (ldb >= K). With beta = 0, C is
// only written (NaN in it, as poison mode leaves, does not propagate).
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
          const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
          std::int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // no product: C = beta * C
    LVT_PARALLEL_FOR_IF(M * N >= parallel::min_elems)
    for (std::int64_t i = 0; i < M; i++)
      for (std::int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  blas::setup();
  const int m = detail::blas_int(M, "M"), n = detail::blas_int(N, "N"), k = detail::blas_int(K, "K");
  const int la = detail::blas_int(std::max<std::int64_t>(lda, 1), "lda");
  const int lb = detail::blas_int(std::max<std::int64_t>(ldb, 1), "ldb");
  const int lc = detail::blas_int(std::max<std::int64_t>(ldc, 1), "ldc");
  const int team = parallel::threads();
  const std::int64_t longer = M >= N ? M : N;
  int p = team;
  if (M * N * K < parallel_min_work) p = 1;
  if (p > 1 && (longer + split_align - 1) / split_align < p) p = int((longer + split_align - 1) / split_align);
  if (p <= 1) {
    blas::call(trans_a, trans_b, m, n, k, alpha, A, la, B, lb, beta, C, lc);
    return;
  }
  const bool rows = M >= N;  // split the longer side: the other operand is the one re-packed
#if defined(_OPENMP)
#pragma omp parallel num_threads(p)
#endif
  {
    const int i = parallel::thread_id();
    const std::int64_t a = detail::split_at(longer, i, p), b = detail::split_at(longer, i + 1, p);
    if (b > a) {
      if (rows)  // rows [a, b) of C and op(A)
        blas::call(trans_a, trans_b, int(b - a), n, k, alpha, trans_a ? A + a : A + a * lda, la, B,
                   lb, beta, C + a * ldc, lc);
      else  // columns [a, b) of C and op(B)
        blas::call(trans_a, trans_b, m, int(b - a), k, alpha, A, la, trans_b ? B + a * ldb : B + a,
                   lb, beta, C + a, lc);
    }
  }
}

// y[n, m] = (accumulate ? y[n, m] : 0) + bias[m] + alpha * (x[n, :] . W[m, :]); bias may be null.
template <class T>
void forward(T* y, std::int64_t ldy, const T* x, std::int64_t ldx, const T* W, std::int64_t ldw,
             const T* bias, std::int64_t rows, std::int64_t out, std::int64_t in, T alpha,
             bool accumulate) {
  if (bias) {
    LVT_PARALLEL_FOR_IF(rows * out >= parallel::min_elems)
    for (std::int64_t n = 0; n < rows; n++)
      for (std::int64_t m = 0; m < out; m++)
        y[n * ldy + m] = accumulate ? y[n * ldy + m] + bias[m] : bias[m];
  }
  gemm(false, true, rows, out, in, alpha, x, ldx, W, ldw, T(accumulate || bias ? 1 : 0), y, ldy);
}

// y[m] = (bias[m] or 0) + x . W[m, :] for a single row x: generation's decode step (a BLAS
// matrix-vector product, W read once), split over the team by blocks of rows of W.
template <class T>
void matvec(T* y, const T* x, const T* W, std::int64_t ldw, const T* bias, std::int64_t out,
            std::int64_t in) {
  if (out <= 0) return;
  if (in <= 0) {
    for (std::int64_t m = 0; m < out; m++) y[m] = bias ? bias[m] : T(0);
    return;
  }
  blas::setup();
  const int n = detail::blas_int(in, "in"), lw = detail::blas_int(ldw, "ldw");
  detail::blas_int(out, "out");
  int p = out * in >= parallel_min_work / 4 ? parallel::threads() : 1;
  if (p > 1 && (out + split_align - 1) / split_align < p) p = int((out + split_align - 1) / split_align);
  auto piece = [&](std::int64_t a, std::int64_t b) {
    if (b <= a) return;
    if (bias)
      for (std::int64_t m = a; m < b; m++) y[m] = bias[m];
    blas::gemv(int(b - a), n, W + a * ldw, lw, x, T(bias ? 1 : 0), y + a);
  };
  if (p <= 1) return piece(0, out);
#if defined(_OPENMP)
#pragma omp parallel num_threads(p)
#endif
  {
    const int i = parallel::thread_id();
    piece(detail::split_at(out, i, p), detail::split_at(out, i + 1, p));
  }
}

// dx[n, k] += alpha * sum_m dy[n, m] W[m, k]
template <class T>
void backward_input(T* dx, std::int64_t lddx, const T* dy, std::int64_t lddy, const T* W,
                    std::int64_t ldw, std::int64_t rows, std::int64_t out, std::int64_t in,
                    T alpha) {
  gemm(false, false, rows, in, out, alpha, dy, lddy, W, ldw, T(1), dx, lddx);
}

// dW[m, k] += alpha * sum_n dy[n, m] x[n, k]
template <class T>
void backward_weight(T* dW, std::int64_t lddw, const T* dy, std::int64_t lddy, const T* x,
                     std::int64_t ldx, std::int64_t rows, std::int64_t out, std::int64_t in,
                     T alpha) {
  gemm(true, false, out, in, rows, alpha, dy, lddy, x, ldx, T(1), dW, lddw);
}

}  // namespace lvt::ops::matmul


namespace lvt::ops::matmul {
// The error when cuBLASLt has no algorithm for a GEMM (its heuristic returns none, or
// CUBLAS_STATUS_NOT_SUPPORTED): the shape as M x N x K, the transpositions, the storage types
// and each operand's alignment in bytes, which is what usually rules every algorithm out.
inline std::string no_algorithm_message(std::int64_t M, std::int64_t N, std::int64_t K, bool trans_a,
                                        bool trans_b, const char* types,
                                        const std::uint32_t (&align)[4]) {
  return "cuBLASLt: no algorithm for a " + std::to_string(M) + " x " + std::to_string(N) + " x " +
         std::to_string(K) + " GEMM (" + (trans_a ? "A^T" : "A") + " " + (trans_b ? "B^T" : "B") +
         ", " + types + ", operands aligned to " + std::to_string(align[1]) + " / " +
         std::to_string(align[0]) + " / " + std::to_string(align[2]) +
         " bytes (A / B / C)): an operand or row stride that is not 16-byte aligned is the usual cause";
}
}  // namespace lvt::ops::matmul

#if LVT_CUDA
#include <cublasLt.h>

#include <cstdint>

#include <type_traits>

#include <string>

#include "lvt/ops/cuda_common.hpp"

// ---- CUDA: GEMMs through cuBLASLt (fp32 accumulation) -----------------------------------------
// Row-major operands, as the host functions above: C[M, N] = alpha * op(A) op(B) + beta * C with
// op(A) = A [M, K] or A^T (A stored [K, M]), op(B) = B [K, N] or B^T (B stored [N, K]). cuBLASLt
// is column-major, so the product is computed as C^T = op(B)^T op(A)^T on the same memory.
//   linear forward:  y = x W^T        gemm(y, x, W, rows, out, in, false, true)
//   linear backward: dx += dy W        gemm(dx, dy, W, rows, in, out, false, false, 1, 1)
//   LoRA dA += dh^T x                  gemm(dA, dh, x, rank, in, rows, true, false, 1, 1)
namespace lvt::ops::matmul::cuda {

inline void check(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string(file) + ":" + std::to_string(line) + ": " + what + " failed: " +
                cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ")");
}
#define LVT_CUBLAS_CHECK(call) ::lvt::ops::matmul::cuda::check((call), #call, __FILE__, __LINE__)

template <class S>
constexpr cudaDataType_t data_type() {
  if constexpr (sizeof(S) == 4) return CUDA_R_32F;
  else if constexpr (std::is_same_v<S, lvt::bf16>) return CUDA_R_16BF;
  else return CUDA_R_16F;
}

template <class S, class SC>
constexpr const char* type_names() {
  if constexpr (sizeof(S) == 4) return "fp32";
  else if constexpr (std::is_same_v<S, lvt::bf16>) return sizeof(SC) == 4 ? "bf16 -> fp32" : "bf16";
  else return sizeof(SC) == 4 ? "fp16 -> fp32" : "fp16";
}

// One cuBLASLt handle and the plan's workspace (the `cublas` buffer of the arena).
class Gemm {
 public:
  Gemm(void* workspace, std::size_t workspace_bytes)
      : workspace_(workspace), workspace_bytes_(workspace_bytes) {
    LVT_CUBLAS_CHECK(cublasLtCreate(&handle_));
  }
  ~Gemm() { cublasLtDestroy(handle_); }
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // A and B in S; C in SC (S, or fp32: the fp32 logits of the fused loss). `bias` (N values of
  // SC, may be null) is added to every row of C by cuBLASLt's bias epilogue.
  template <class S, class SC = S>
  void run(SC* C, const S* A, const S* B, std::int64_t M, std::int64_t N, std::int64_t K,
           bool trans_a, bool trans_b, float alpha, float beta, cudaStream_t stream,
           const SC* bias = nullptr) {
    if (M == 0 || N == 0) return;
    const cudaDataType_t t = data_type<S>(), tc = data_type<SC>();
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    struct Cleanup {
      cublasLtMatmulDesc_t& d;
      cublasLtMatrixLayout_t &a, &b, &c;
      cublasLtMatmulPreference_t& p;
      ~Cleanup() {
        if (p) cublasLtMatmulPreferenceDestroy(p);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (d) cublasLtMatmulDescDestroy(d);
      }
    } cleanup{desc, la, lb, lc, pref};
    // cuBLASLt's A is our op(B)^T, its B our op(A)^T (see the comment above).
    const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    LVT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LVT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    LVT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (bias) {
      // Column-major D is our C^T: its rows are C's columns, so the bias vector runs along N.
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      LVT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
      LVT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
      const cudaDataType_t bt = data_type<SC>();
      LVT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    // Stored shapes, column-major: B is [K, N] row-major = N x K col-major (or K x N if B^T).
    if (trans_b) LVT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, t, K, N, K));
    else LVT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, t, N, K, N));
    if (trans_a) LVT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, t, M, K, M));
    else LVT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, t, K, M, K));
    LVT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, tc, N, M, N));
    LVT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LVT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof workspace_bytes_));
    // The heuristic assumes 256-byte aligned operands unless told: LoRA slices and chunked
    // operands are only as aligned as their offsets, so say what each pointer really is.
    auto alignment = [](const void* p) {
      std::uint32_t a = 256;
      while (a > 1 && reinterpret_cast<std::uintptr_t>(p) % a != 0) a >>= 1;
      return a;
    };
    const std::uint32_t align[4] = {alignment(B), alignment(A), alignment(C), alignment(C)};
    const cublasLtMatmulPreferenceAttributes_t which[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; ++i)
      LVT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &align[i], sizeof align[i]));
    cublasLtMatmulHeuristicResult_t h{};
    int found = 0;
    // No algorithm comes back either as found == 0 or as CUBLAS_STATUS_NOT_SUPPORTED.
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle_, desc, la, lb, lc, lc, pref, 1, &h, &found);
    if (hs == CUBLAS_STATUS_NOT_SUPPORTED || (hs == CUBLAS_STATUS_SUCCESS && found == 0))
      throw Error(no_algorithm_message(M, N, K, trans_a, trans_b, type_names<S, SC>(), align));
    LVT_CUBLAS_CHECK(hs);
    LVT_CUBLAS_CHECK(cublasLtMatmul(handle_, desc, &alpha, B, la, A, lb, &beta, C, lc, C, lc,
                                    &h.algo, workspace_, workspace_bytes_, stream));
  }

 private:
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  std::size_t workspace_bytes_;
};

}  // namespace lvt::ops::matmul::cuda
#endif
