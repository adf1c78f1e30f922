// cuBLASLt GEMMs (ops/matmul.hpp's CUDA part) against host double sums for every transposition
// the linear layers use, fp32 and bf16; and the QLoRA forward path: an NF4 (double-quantized)
// weight dequantized to bf16 on the device, then the GEMM, against the host linear over the
// host-dequantized weight. Part of the `kernels` GPU suite (its main is in gpu_test_kernels.cu).
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/quant/blockwise.hpp"
#include "../gpu_util.hpp"

using namespace lvt;
using namespace lvt::test;

namespace {

template <class S>
S* upload(const std::vector<float>& v) {
  std::vector<S> s(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) s[i] = lvt::from_float<S>(v[i]);
  S* p = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&p, s.size() * sizeof(S)));
  LVT_CUDA_CHECK(cudaMemcpy(p, s.data(), s.size() * sizeof(S), cudaMemcpyHostToDevice));
  return p;
}
template <class S>
std::vector<float> download(const S* p, std::size_t n) {
  std::vector<S> s(n);
  LVT_CUDA_CHECK(cudaDeviceSynchronize());
  LVT_CUDA_CHECK(cudaMemcpy(s.data(), p, n * sizeof(S), cudaMemcpyDeviceToHost));
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = lvt::to_float(s[i]);
  return v;
}


template <class S>
void gemm_case(bool ta, bool tb) {
  const std::int64_t M = 67, N = 130, K = 96;
  const auto A = rounded<S>(random_floats(std::size_t(M * K), 1)), B = rounded<S>(random_floats(std::size_t(K * N), 2));
  const auto C0 = rounded<S>(random_floats(std::size_t(M * N), 3));
  std::vector<double> want(std::size_t(M * N));
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        const double a = ta ? A[std::size_t(k * M + i)] : A[std::size_t(i * K + k)];
        const double b = tb ? B[std::size_t(j * K + k)] : B[std::size_t(k * N + j)];
        s += a * b;
      }
      want[std::size_t(i * N + j)] = 0.7 * s + C0[std::size_t(i * N + j)];
    }
  void* ws = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&ws, 4 << 20));
  ops::matmul::cuda::Gemm gemm(ws, 4 << 20);
  S *dA = upload<S>(A), *dB = upload<S>(B), *dC = upload<S>(C0);
  gemm.run(dC, dA, dB, M, N, K, ta, tb, 0.7f, 1.0f, nullptr);
  CAPTURE(ta);
  CAPTURE(tb);
  check_close(download(dC, want.size()), want, sizeof(S) == 4 ? 1e-5 : 1e-2, "gemm");
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  cudaFree(ws);
}

}  // namespace

TEST_CASE("cuBLASLt GEMM, row-major, every transposition, fp32 and bf16") {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      gemm_case<float>(ta, tb);
      gemm_case<lvt::bf16>(ta, tb);
    }
}

TEST_CASE("cuBLASLt bias epilogue: y = x W^T + bias (Qwen2's q/k/v), fp32 and bf16") {
  auto run_case = [](auto tag) {
    using S = decltype(tag);
    const std::int64_t rows = 37, in = 96, out = 130;
    const auto x = rounded<S>(random_floats(std::size_t(rows * in), 11));
    const auto W = rounded<S>(random_floats(std::size_t(out * in), 12));
    const auto bias = rounded<S>(random_floats(std::size_t(out), 13));
    std::vector<double> want(std::size_t(rows * out));
    for (std::int64_t n = 0; n < rows; ++n)
      for (std::int64_t j = 0; j < out; ++j) {
        double acc = bias[std::size_t(j)];
        for (std::int64_t k = 0; k < in; ++k)
          acc += double(x[std::size_t(n * in + k)]) * W[std::size_t(j * in + k)];
        want[std::size_t(n * out + j)] = acc;
      }
    void* ws = nullptr;
    LVT_CUDA_CHECK(cudaMalloc(&ws, 4 << 20));
    ops::matmul::cuda::Gemm gemm(ws, 4 << 20);
    S *dx = upload<S>(x), *dW = upload<S>(W), *db = upload<S>(bias), *dy = nullptr;
    LVT_CUDA_CHECK(cudaMalloc(&dy, std::size_t(rows * out) * sizeof(S)));
    gemm.run<S>(dy, dx, dW, rows, out, in, false, true, 1.0f, 0.0f, nullptr, db);
    check_close(download(dy, want.size()), want, sizeof(S) == 4 ? 1e-5 : 1e-2, "gemm + bias");
    for (void* p : {(void*)dx, (void*)dW, (void*)db, (void*)dy, ws}) cudaFree(p);
  };
  run_case(float{});
  run_case(lvt::bf16{});
}

TEST_CASE("QLoRA linear forward: NF4 + DQ dequantized to bf16 on the device, then cuBLASLt") {
  const std::int64_t rows = 64, in = 512, out = 384;
  const auto W = random_floats(std::size_t(out * in), 4);
  const auto x = rounded<lvt::bf16>(random_floats(std::size_t(rows * in), 5));
  const quant::Quant4 q = quant::quantize4(quant::Code4::nf4, W.data(), out * in, 64, true, "W");
  std::vector<float> Wd(W.size());
  quant::dequantize4(q, Wd.data());
  const auto Wb = rounded<lvt::bf16>(Wd);  // the device dequantizes to bf16
  std::vector<float> yh(std::size_t(rows * out));
  ops::linear::forward(yh.data(), static_cast<float*>(nullptr), x.data(), Wb.data(),
                       static_cast<const float*>(nullptr), ops::linear::Lora<float>{}, rows, in, out);
  std::vector<double> want(yh.begin(), yh.end());

  std::uint8_t *packed = nullptr, *codes = nullptr;
  float* nested = nullptr;
  lvt::bf16* wbuf = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&packed, q.packed.size()));
  LVT_CUDA_CHECK(cudaMalloc(&codes, q.absmax_codes.size()));
  LVT_CUDA_CHECK(cudaMalloc(&nested, q.nested_absmax.size() * 4));
  LVT_CUDA_CHECK(cudaMalloc(&wbuf, std::size_t(out * in) * 2));
  LVT_CUDA_CHECK(cudaMemcpy(packed, q.packed.data(), q.packed.size(), cudaMemcpyHostToDevice));
  LVT_CUDA_CHECK(cudaMemcpy(codes, q.absmax_codes.data(), q.absmax_codes.size(), cudaMemcpyHostToDevice));
  LVT_CUDA_CHECK(cudaMemcpy(nested, q.nested_absmax.data(), q.nested_absmax.size() * 4, cudaMemcpyHostToDevice));
  quant::launch_dequantize_4bit(quant::Code4::nf4, packed, nullptr, codes, nested, q.offset, out * in,
                                64, wbuf, nullptr);
  CHECK(download(wbuf, Wb.size()) == Wb);  // device dequantization is the host's, bit for bit
  void* ws = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&ws, 4 << 20));
  ops::matmul::cuda::Gemm gemm(ws, 4 << 20);
  lvt::bf16* dx = upload<lvt::bf16>(x);
  lvt::bf16* dy = upload<lvt::bf16>(std::vector<float>(yh.size()));
  gemm.run(dy, dx, static_cast<const lvt::bf16*>(wbuf), rows, out, in, false, true, 1.0f, 0.0f, nullptr);
  check_close(download(dy, yh.size()), want, 1e-2, "nf4 linear");
  for (void* p : {(void*)packed, (void*)codes, (void*)nested, (void*)wbuf, ws, (void*)dx, (void*)dy}) cudaFree(p);
}

template <class S>
void loss_case() {
  const std::int64_t n = 45, dim = 96, vocab = 1000, chunk = 16;
  const auto h = rounded<S>(random_floats(std::size_t(n * dim), 30)), W = rounded<S>(random_floats(std::size_t(vocab * dim), 31));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  std::mt19937_64 rng(32);
  for (auto& l : labels) l = std::int32_t(rng() % vocab);
  labels[7] = -100;
  labels[20] = -100;
  std::vector<float> dh(h.size()), scratch(std::size_t(ops::cross_entropy::scratch_elems(chunk, vocab, dim)));
  const auto want = ops::cross_entropy::forward_backward(dh.data(), scratch.data(), h.data(), W.data(),
                                                         labels.data(), n, dim, vocab, chunk, 0.5);
  S *dH = upload<S>(h), *dW = upload<S>(W), *dD = upload<S>(std::vector<float>(h.size()));
  std::int32_t* dl = nullptr;
  float* rows = nullptr;
  void* sc = nullptr;
  void* ws = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&dl, std::size_t(n) * 4));
  LVT_CUDA_CHECK(cudaMemcpy(dl, labels.data(), std::size_t(n) * 4, cudaMemcpyHostToDevice));
  LVT_CUDA_CHECK(cudaMalloc(&rows, std::size_t(n) * 4));
  LVT_CUDA_CHECK(cudaMalloc(&sc, std::size_t(ops::cross_entropy::cuda::scratch_bytes<S>(chunk, vocab))));
  LVT_CUDA_CHECK(cudaMalloc(&ws, 4 << 20));
  ops::matmul::cuda::Gemm gemm(ws, 4 << 20);
  const auto got = ops::cross_entropy::cuda::forward_backward<S>(dD, sc, rows, dH, dW, dl, n, dim, vocab,
                                                                 chunk, want.count, 0.5, gemm, nullptr);
  CHECK(got.count == want.count);
  CHECK(got.loss_sum == doctest::Approx(want.loss_sum).epsilon(sizeof(S) == 4 ? 1e-5 : 1e-3));
  check_close(download(dD, dh.size()), std::vector<double>(dh.begin(), dh.end()), sizeof(S) == 4 ? 1e-5 : 1e-2,
        "d hidden");
  for (void* p : {(void*)dH, (void*)dW, (void*)dD, (void*)dl, (void*)rows, sc, ws}) cudaFree(p);
}

TEST_CASE("fused chunked lm-head + cross-entropy on the device vs host (ignore index, fp32 and bf16)") {
  loss_case<float>();
  loss_case<lvt::bf16>();
}

// Generation's LoRA on the fp32 master adapters: y0 + scale * (x A^T) B^T for a decode row and a
// prefill chunk, against the host's lora_forward (fp32) on the same S-rounded x and y0.
template <class S>
void lora_fp32_case(std::int64_t rows) {
  const std::int64_t in = 200, out = 136, rank = 8;
  const float scale = 2.0f;
  const auto x = rounded<S>(random_floats(std::size_t(rows * in), 40));
  const auto y0 = rounded<S>(random_floats(std::size_t(rows * out), 41));
  const auto A = random_floats(std::size_t(rank * in), 42), B = random_floats(std::size_t(out * rank), 43);
  std::vector<float> want = y0;
  std::vector<float> scratch(std::size_t(ops::linear::scratch_elems(rows, in, rank)));
  ops::linear::Lora<float> lo;
  lo.A = A.data();
  lo.B = B.data();
  lo.rank = rank;
  lo.scale = scale;
  ops::linear::detail::lora_forward(want.data(), scratch.data(), x.data(), lo, rows, in, out);
  S *dx = upload<S>(x), *dy = upload<S>(y0);
  float *dA = upload<float>(A), *dB = upload<float>(B), *h = nullptr;
  LVT_CUDA_CHECK(cudaMalloc(&h, std::size_t(rows * rank) * 4));
  ops::linear::cuda::lora_forward_fp32(dy, h, dx, dA, dB, rows, in, out, rank, scale, nullptr);
  CAPTURE(rows);
  check_close(download(dy, want.size()), want, sizeof(S) == 4 ? 1e-5 : 1e-2, "LoRA on fp32 adapters");
  for (void* p : {(void*)dx, (void*)dy, (void*)dA, (void*)dB, (void*)h}) cudaFree(p);
}

TEST_CASE("LoRA on the fp32 adapters (generation) vs the host's lora_forward, fp32, bf16, fp16") {
  for (std::int64_t rows : {1, 64, 37}) {
    lora_fp32_case<float>(rows);
    lora_fp32_case<lvt::bf16>(rows);
    lora_fp32_case<lvt::fp16>(rows);
  }
}
