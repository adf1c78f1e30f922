#pragma once
// The three products every linear layer needs, on row-major raw pointers with leading
// dimensions, host reference only (the CUDA backend uses cuBLASLt):
//   forward     y[n, m]  (+)= alpha * sum_k x[n, k] W[m, k] + bias[m]   (x W^T, W as nn.Linear [out, in])
//   input grad  dx[n, k]  += alpha * sum_m dy[n, m] W[m, k]             (dy W)
//   weight grad dW[m, k]  += alpha * sum_n dy[n, m] x[n, k]             (dy^T x)
// Blocked for registers and cache: a 4-row block of the result, two SIMD vectors wide, is
// accumulated in registers over the reduction (micro-kernel `detail::tile`), and a block of
// `row_block` rows reuses each packed panel of the weight, so the lm-head's 32000-row weight
// streams once per block of tokens, not once per token. Measured at 1024 x 256 x {256, 688}
// (GCC 12 -O3, one core, best of 15): forward / input grad ~35 GFLOP/s with the default SSE2,
// ~95 / ~85 with -march=x86-64-v3 (AVX2 + FMA), against ~21 for a dot product per output.
#include <cstdint>
#include <string>

// Blocks spread over threads when built with -fopenmp (as llm.c), for products big enough to
// pay for waking the threads (the LoRA rank-r products are not); serial otherwise.
#if defined(_OPENMP)
#define LVT_PRAGMA(x) _Pragma(#x)
#define LVT_OMP_FOR_IF(cond) LVT_PRAGMA(omp parallel for if(cond))
#else
#define LVT_OMP_FOR_IF(cond)
#endif

namespace lvt::ops::matmul {

inline constexpr std::int64_t row_block = 32;
// Multiply-adds below which a product runs on one thread.
inline constexpr std::int64_t parallel_min_work = std::int64_t(1) << 22;

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

namespace detail {

// The micro-kernel: a tile_rows x cols<T> block of C, held in registers, += alpha * sum_p
// A(i, p) B(p, j), with A(i, p) = A[i * sa_i + p * sa_p] and B(p, j) = B[p * ldb + j] (cols<T>
// contiguous j). A row of the block is two SIMD vectors (GCC/Clang vector extension, sized for
// the target: SSE2 by default, AVX/AVX-512 when the build enables them), so 4 rows use 8
// registers and nothing spills. Plain loops here were vectorized differently from one inlining
// context to the next (over p, with shuffles), at a fifth of the speed: the vector type pins it.
inline constexpr int tile_rows = 4;
#if defined(__AVX__)  // AVX-512 targets too: 512-bit vectors measured slower here
inline constexpr int simd_bytes = 32;
#else
inline constexpr int simd_bytes = 16;
#endif
template <class T>
inline constexpr int lanes = simd_bytes / int(sizeof(T));
template <class T>
inline constexpr int cols = 2 * lanes<T>;

template <class T>
inline void tile(T* C, std::int64_t ldc, const T* A, std::int64_t sa_i, std::int64_t sa_p,
                 const T* B, std::int64_t ldb, std::int64_t P, T alpha) {
#if defined(__GNUC__)
  typedef T vec_t __attribute__((vector_size(simd_bytes)));
  typedef T unaligned_vec_t __attribute__((vector_size(simd_bytes), aligned(alignof(T))));
  vec_t acc[tile_rows][2] = {};
  for (std::int64_t p = 0; p < P; p++) {
    const unaligned_vec_t* b = reinterpret_cast<const unaligned_vec_t*>(B + p * ldb);
    const vec_t b0 = b[0], b1 = b[1];
    for (int i = 0; i < tile_rows; i++) {
      const T a = A[i * sa_i + p * sa_p];
      acc[i][0] += a * b0;
      acc[i][1] += a * b1;
    }
  }
  for (int i = 0; i < tile_rows; i++) {
    T row[cols<T>];
    __builtin_memcpy(row, acc[i], sizeof(row));
    for (int j = 0; j < cols<T>; j++) C[i * ldc + j] += alpha * row[j];
  }
#else
  T acc[tile_rows][cols<T>] = {};
  for (std::int64_t p = 0; p < P; p++) {
    const T* b = B + p * ldb;
    for (int i = 0; i < tile_rows; i++) {
      const T a = A[i * sa_i + p * sa_p];
      for (int j = 0; j < cols<T>; j++) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < tile_rows; i++)
    for (int j = 0; j < cols<T>; j++) C[i * ldc + j] += alpha * acc[i][j];
#endif
}

// The same on a partial block (fewer rows or columns), at the edges.
template <class T>
inline void tile_edge(T* C, std::int64_t ldc, const T* A, std::int64_t sa_i, std::int64_t sa_p,
                      const T* B, std::int64_t ldb, std::int64_t P, T alpha, std::int64_t rows,
                      std::int64_t ncols) {
  for (std::int64_t i = 0; i < rows; i++)
    for (std::int64_t j = 0; j < ncols; j++) {
      T s = 0;
      for (std::int64_t p = 0; p < P; p++) s += A[i * sa_i + p * sa_p] * B[p * ldb + j];
      C[i * ldc + j] += alpha * s;
    }
}

// C[rows, ncols] += alpha * A B over P, in tiles (B as above: row p holds contiguous j).
template <class T>
inline void tiles(T* C, std::int64_t ldc, const T* A, std::int64_t sa_i, std::int64_t sa_p,
                  const T* B, std::int64_t ldb, std::int64_t P, T alpha, std::int64_t rows,
                  std::int64_t ncols) {
  for (std::int64_t i = 0; i < rows; i += tile_rows) {
    const std::int64_t ri = rows - i < tile_rows ? rows - i : tile_rows;
    for (std::int64_t j = 0; j < ncols; j += cols<T>) {
      const std::int64_t cj = ncols - j < cols<T> ? ncols - j : cols<T>;
      if (ri == tile_rows && cj == cols<T>)
        tile(C + i * ldc + j, ldc, A + i * sa_i, sa_i, sa_p, B + j, ldb, P, alpha);
      else
        tile_edge(C + i * ldc + j, ldc, A + i * sa_i, sa_i, sa_p, B + j, ldb, P, alpha, ri, cj);
    }
  }
}

// Reduction depth per packed block: the packed panel (cols<T> * depth_block T) lives on the
// stack, 8 KiB with SSE2 (32 KiB with AVX-512).
inline constexpr std::int64_t depth_block = 256;

}  // namespace detail

// y[n, m] = (accumulate ? y[n, m] : bias[m] or 0) + alpha * (x[n, :] . W[m, :])
// W's rows are packed cols<T> at a time into a transposed panel on the stack, so the micro-kernel
// reads 16 output columns contiguously; each panel is used by a block of `row_block` rows.
template <class T>
void forward(T* y, std::int64_t ldy, const T* x, std::int64_t ldx, const T* W, std::int64_t ldw,
             const T* bias, std::int64_t rows, std::int64_t out, std::int64_t in, T alpha,
             bool accumulate) {
  using namespace detail;
  if (!accumulate)
    for (std::int64_t n = 0; n < rows; n++)
      for (std::int64_t m = 0; m < out; m++) y[n * ldy + m] = bias ? bias[m] : T(0);
  else if (bias)
    for (std::int64_t n = 0; n < rows; n++)
      for (std::int64_t m = 0; m < out; m++) y[n * ldy + m] += bias[m];
  LVT_OMP_FOR_IF(rows * out * in >= parallel_min_work)
  for (std::int64_t m0 = 0; m0 < out; m0 += cols<T>) {
    const std::int64_t mc = out - m0 < cols<T> ? out - m0 : cols<T>;
    T panel[depth_block * cols<T>];  // panel[k][j] = W[m0 + j][k0 + k]
    for (std::int64_t k0 = 0; k0 < in; k0 += depth_block) {
      const std::int64_t kc = in - k0 < depth_block ? in - k0 : depth_block;
      for (std::int64_t k = 0; k < kc; k++)
        for (std::int64_t j = 0; j < cols<T>; j++)
          panel[k * cols<T> + j] = j < mc ? W[(m0 + j) * ldw + k0 + k] : T(0);
      for (std::int64_t n0 = 0; n0 < rows; n0 += row_block) {
        const std::int64_t nr = rows - n0 < row_block ? rows - n0 : row_block;
        tiles(y + n0 * ldy + m0, ldy, x + n0 * ldx + k0, ldx, std::int64_t(1), (const T*)panel,
              std::int64_t(cols<T>), kc, alpha, nr, mc);
      }
    }
  }
}

// y[m] = (bias[m] or 0) + x . W[m, :] for a single row x: generation's decode step, where
// forward's packing of W into panels (a strided gather, once per row block) costs more than the
// product itself. Reads W once, row by row.
template <class T>
void matvec(T* y, const T* x, const T* W, std::int64_t ldw, const T* bias, std::int64_t out,
            std::int64_t in) {
  LVT_OMP_FOR_IF(out * in >= parallel_min_work)
  for (std::int64_t m = 0; m < out; m++) y[m] = (bias ? bias[m] : T(0)) + dot(x, W + m * ldw, in);
}

// dx[n, k] += alpha * sum_m dy[n, m] W[m, k]   (W's rows are already contiguous in k)
template <class T>
void backward_input(T* dx, std::int64_t lddx, const T* dy, std::int64_t lddy, const T* W,
                    std::int64_t ldw, std::int64_t rows, std::int64_t out, std::int64_t in,
                    T alpha) {
  using namespace detail;
  constexpr std::int64_t out_block = 128;  // rows of W kept in L2 while every row block uses them
  for (std::int64_t m0 = 0; m0 < out; m0 += out_block) {
    const std::int64_t mc = out - m0 < out_block ? out - m0 : out_block;
    LVT_OMP_FOR_IF(rows * mc * in >= parallel_min_work)
    for (std::int64_t n0 = 0; n0 < rows; n0 += row_block) {
      const std::int64_t nr = rows - n0 < row_block ? rows - n0 : row_block;
      tiles(dx + n0 * lddx, lddx, dy + n0 * lddy + m0, lddy, std::int64_t(1), W + m0 * ldw, ldw,
            mc, alpha, nr, in);
    }
  }
}

// dW[m, k] += alpha * sum_n dy[n, m] x[n, k]
template <class T>
void backward_weight(T* dW, std::int64_t lddw, const T* dy, std::int64_t lddy, const T* x,
                     std::int64_t ldx, std::int64_t rows, std::int64_t out, std::int64_t in,
                     T alpha) {
  LVT_OMP_FOR_IF(rows * out * in >= parallel_min_work)
  for (std::int64_t m = 0; m < out; m++) {
    T* d = dW + m * lddw;
    for (std::int64_t n = 0; n < rows; n++) {
      const T a = alpha * dy[n * lddy + m];
      const T* xr = x + n * ldx;
      for (std::int64_t k = 0; k < in; k++) d[k] += a * xr[k];
    }
  }
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
