// Quantization and transfer benchmarks (Google Benchmark; --benchmark_format=json works).
//
//   h2d/pageable, h2d/pinned, h2d/pinned_double_buffered   host -> device, 1 MiB .. 1 GiB
//   h2d_layer/...                 one Llama-3.1-8B decoder layer in NF4+DQ (the streaming step)
//   dequant/nf4_bf16              dequantize kernel GB/s, with a device-to-device cudaMemcpy of the
//                                 same output size timed in the same run (counter vs_d2d = ratio)
//   quantize/host_*, quantize/gpu_*   quantize throughput
//
// Built as CUDA (bench_quant_cuda.cu includes this file) when nvcc is available; without it, or
// without a GPU at run time, the GPU benchmarks report "needs a GPU: ..." and the host ones run.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lvt/quant/blockwise.hpp"

using namespace lvt;
using namespace lvt::quant;

namespace {

// Llama-3.1-8B, one decoder layer: q,o 4096x4096; k,v 1024x4096; gate,up,down 14336x4096.
constexpr std::int64_t llama8b_layer_params =
    2LL * 4096 * 4096 + 2LL * 1024 * 4096 + 3LL * 14336 * 4096;
constexpr std::int64_t nf4dq_bytes(std::int64_t params) {
  const std::int64_t blocks = blocks_of(params, 64);
  return packed_bytes(params) + blocks + blocks_of(blocks, 256) * 4 + 4;
}

std::vector<float> random_weights(std::size_t n) {
  std::mt19937 rng(42);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

void BM_host_quantize(benchmark::State& state, Code4 code, bool bf16_input, bool dq) {
  const std::int64_t n = state.range(0);
  const std::vector<float> xf = random_weights(std::size_t(n));
  std::vector<bf16> xb(xf.size());
  for (std::size_t i = 0; i < xf.size(); ++i) xb[i] = to_bf16(xf[i]);
  for (auto _ : state) {
    Quant4 q = bf16_input ? quantize4(code, xb.data(), n, 64, dq, "bench")
                          : quantize4(code, xf.data(), n, 64, dq, "bench");
    benchmark::DoNotOptimize(q.packed.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * (bf16_input ? 2 : 4));
}
BENCHMARK_CAPTURE(BM_host_quantize, nf4_fp32_dq, Code4::nf4, false, true)->Arg(1 << 22);
BENCHMARK_CAPTURE(BM_host_quantize, nf4_bf16_dq, Code4::nf4, true, true)->Arg(1 << 22);
BENCHMARK_CAPTURE(BM_host_quantize, fp4_bf16, Code4::fp4, true, false)->Arg(1 << 22);

void BM_host_dequantize(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const std::vector<float> x = random_weights(std::size_t(n));
  const Quant4 q = quantize4(Code4::nf4, x.data(), n, 64, true, "bench");
  std::vector<bf16> out(static_cast<std::size_t>(n));
  for (auto _ : state) {
    dequantize4(q, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * (n * 2 + q.storage_bytes()));
}
BENCHMARK(BM_host_dequantize)->Arg(1 << 22);

#if LVT_CUDA

void size_args(benchmark::internal::Benchmark* b) {
  for (std::int64_t mib : {1, 4, 16, 64, 256, 1024}) b->Arg(mib << 20);
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

bool have_gpu(benchmark::State& state) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    state.SkipWithError((std::string("needs a GPU: ") +
                         (e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device")).c_str());
    return false;
  }
  return true;
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  void start(cudaStream_t s = nullptr) { cudaEventRecord(a, s); }
  double stop_s(cudaStream_t s = nullptr) {
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms * 1e-3;
  }
};

enum class Src { pageable, pinned, pinned_double_buffered };

// Host -> device copy of `bytes`. double-buffered: the source is pageable memory staged through
// two pinned chunks, the CPU memcpy of chunk k+1 overlapping the DMA of chunk k (what a loader
// does with weights that live in pageable memory).
void h2d(benchmark::State& state, Src src, std::int64_t bytes) {
  if (!have_gpu(state)) return;
  void* dev = nullptr;
  cuda_check(cudaMalloc(&dev, std::size_t(bytes)), "cudaMalloc");
  std::vector<char> pageable;
  void* pinned = nullptr;
  constexpr std::int64_t chunk = 8 << 20;
  void* stage[2] = {nullptr, nullptr};
  cudaStream_t stream;
  cuda_check(cudaStreamCreate(&stream), "stream");
  cudaEvent_t done[2];
  cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming);
  cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming);
  if (src == Src::pinned) {
    cuda_check(cudaMallocHost(&pinned, std::size_t(bytes)), "cudaMallocHost");
    std::memset(pinned, 1, std::size_t(bytes));
  } else {
    pageable.assign(std::size_t(bytes), 1);
    if (src == Src::pinned_double_buffered)
      for (auto& s : stage) cuda_check(cudaMallocHost(&s, chunk), "cudaMallocHost");
  }
  Timer t;
  for (auto _ : state) {
    t.start(stream);
    if (src == Src::pageable) {
      cudaMemcpyAsync(dev, pageable.data(), std::size_t(bytes), cudaMemcpyHostToDevice, stream);
    } else if (src == Src::pinned) {
      cudaMemcpyAsync(dev, pinned, std::size_t(bytes), cudaMemcpyHostToDevice, stream);
    } else {
      int k = 0;
      for (std::int64_t off = 0; off < bytes; off += chunk, k ^= 1) {
        const std::int64_t len = bytes - off < chunk ? bytes - off : chunk;
        cudaEventSynchronize(done[k]);  // the DMA that last read this stage buffer has finished
        std::memcpy(stage[k], pageable.data() + off, std::size_t(len));
        cudaMemcpyAsync(static_cast<char*>(dev) + off, stage[k], std::size_t(len),
                        cudaMemcpyHostToDevice, stream);
        cudaEventRecord(done[k], stream);
      }
    }
    state.SetIterationTime(t.stop_s(stream));
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["GB/s"] = benchmark::Counter(double(bytes) * state.iterations() * 1e-9,
                                              benchmark::Counter::kIsRate);
  cudaFree(dev);
  if (pinned) cudaFreeHost(pinned);
  for (auto& s : stage)
    if (s) cudaFreeHost(s);
  cudaEventDestroy(done[0]);
  cudaEventDestroy(done[1]);
  cudaStreamDestroy(stream);
}

void BM_h2d_pageable(benchmark::State& s) { h2d(s, Src::pageable, s.range(0)); }
void BM_h2d_pinned(benchmark::State& s) { h2d(s, Src::pinned, s.range(0)); }
void BM_h2d_pinned_double_buffered(benchmark::State& s) {
  h2d(s, Src::pinned_double_buffered, s.range(0));
}
BENCHMARK(BM_h2d_pageable)->Apply(size_args);
BENCHMARK(BM_h2d_pinned)->Apply(size_args);
BENCHMARK(BM_h2d_pinned_double_buffered)->Apply(size_args);

void BM_h2d_layer_llama8b_nf4(benchmark::State& s, Src src) {
  h2d(s, src, nf4dq_bytes(llama8b_layer_params));
}
BENCHMARK_CAPTURE(BM_h2d_layer_llama8b_nf4, pinned, Src::pinned)
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_h2d_layer_llama8b_nf4, pageable, Src::pageable)
    ->UseManualTime()->Unit(benchmark::kMillisecond);

// Dequantize n NF4+DQ weights to TOut, and a cudaMemcpy D2D of the output's size in the same
// run. Bytes counted: packed + absmax codes read, output written; for the copy, read + write.
template <class TOut>
void dequant_bench(benchmark::State& state, bool nested) {
  if (!have_gpu(state)) return;
  const std::int64_t n = state.range(0);
  const std::int64_t blocks = blocks_of(n, 64);
  std::uint8_t *packed, *codes;
  float *absmax, *nested_absmax;
  TOut* out;
  void* copy_dst;
  cuda_check(cudaMalloc(&packed, std::size_t(packed_bytes(n))), "cudaMalloc");
  cuda_check(cudaMalloc(&codes, std::size_t(blocks)), "cudaMalloc");
  cuda_check(cudaMalloc(&absmax, std::size_t(blocks) * 4), "cudaMalloc");
  cuda_check(cudaMalloc(&nested_absmax, std::size_t(blocks_of(blocks, 256)) * 4), "cudaMalloc");
  cuda_check(cudaMalloc(&out, std::size_t(n) * sizeof(TOut)), "cudaMalloc");
  cuda_check(cudaMalloc(&copy_dst, std::size_t(n) * sizeof(TOut)), "cudaMalloc");
  {  // real codes: quantize random weights on the device
    const std::vector<float> x = random_weights(std::size_t(n));
    float* dx;
    cuda_check(cudaMalloc(&dx, std::size_t(n) * 4), "cudaMalloc");
    cudaMemcpy(dx, x.data(), std::size_t(n) * 4, cudaMemcpyHostToDevice);
    launch_quantize_4bit(Code4::nf4, dx, n, 64, packed, absmax, nullptr, nullptr);
    float* mean;
    cudaMalloc(&mean, 4);
    launch_absmax_mean(absmax, blocks, mean, nullptr);
    launch_double_quantize(absmax, blocks, mean, codes, nested_absmax, nullptr);
    cudaDeviceSynchronize();
    cudaFree(dx);
    cudaFree(mean);
  }
  Timer t;
  double deq_s = 0, copy_s = 0;
  for (auto _ : state) {
    t.start();
    if (nested)
      launch_dequantize_4bit(Code4::nf4, packed, nullptr, codes, nested_absmax, 0.01f, n, 64, out, nullptr);
    else
      launch_dequantize_4bit(Code4::nf4, packed, absmax, nullptr, nullptr, 0.0f, n, 64, out, nullptr);
    const double d = t.stop_s();
    t.start();
    cudaMemcpyAsync(copy_dst, out, std::size_t(n) * sizeof(TOut), cudaMemcpyDeviceToDevice);
    copy_s += t.stop_s();
    deq_s += d;
    state.SetIterationTime(d);
  }
  const double deq_bytes = double(packed_bytes(n) + (nested ? blocks : 4 * blocks) +
                                  n * std::int64_t(sizeof(TOut)));
  const double copy_bytes = 2.0 * double(n) * sizeof(TOut);
  const double deq_gbs = deq_bytes * state.iterations() / deq_s * 1e-9;
  const double copy_gbs = copy_bytes * state.iterations() / copy_s * 1e-9;
  state.counters["dequant_GB/s"] = deq_gbs;
  state.counters["d2d_copy_GB/s"] = copy_gbs;
  state.counters["vs_d2d"] = deq_gbs / copy_gbs;
  state.SetItemsProcessed(state.iterations() * n);
  cudaFree(packed);
  cudaFree(codes);
  cudaFree(absmax);
  cudaFree(nested_absmax);
  cudaFree(out);
  cudaFree(copy_dst);
}
void BM_dequant_bf16(benchmark::State& s, bool nested) { dequant_bench<bf16>(s, nested); }
void BM_dequant_fp16(benchmark::State& s, bool nested) { dequant_bench<fp16>(s, nested); }
void BM_dequant_fp32(benchmark::State& s, bool nested) { dequant_bench<float>(s, nested); }
BENCHMARK_CAPTURE(BM_dequant_bf16, nf4dq, true)->Arg(llama8b_layer_params)->UseManualTime();
BENCHMARK_CAPTURE(BM_dequant_bf16, nf4, false)->Arg(llama8b_layer_params)->UseManualTime();
BENCHMARK_CAPTURE(BM_dequant_fp16, nf4dq, true)->Arg(llama8b_layer_params)->UseManualTime();
BENCHMARK_CAPTURE(BM_dequant_fp32, nf4dq, true)->Arg(1 << 26)->UseManualTime();

void BM_gpu_quantize(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const std::int64_t n = state.range(0), blocks = blocks_of(n, 64);
  const std::vector<float> xf = random_weights(std::size_t(n));
  std::vector<bf16> xb(xf.size());
  for (std::size_t i = 0; i < xf.size(); ++i) xb[i] = to_bf16(xf[i]);
  bf16* dx;
  std::uint8_t *packed, *codes;
  float *absmax, *nested, *mean;
  cudaMalloc(&dx, std::size_t(n) * 2);
  cudaMemcpy(dx, xb.data(), std::size_t(n) * 2, cudaMemcpyHostToDevice);
  cudaMalloc(&packed, std::size_t(packed_bytes(n)));
  cudaMalloc(&codes, std::size_t(blocks));
  cudaMalloc(&absmax, std::size_t(blocks) * 4);
  cudaMalloc(&nested, std::size_t(blocks_of(blocks, 256)) * 4);
  cudaMalloc(&mean, 4);
  Timer t;
  for (auto _ : state) {
    t.start();
    launch_quantize_4bit(Code4::nf4, dx, n, 64, packed, absmax, nullptr, nullptr);
    launch_absmax_mean(absmax, blocks, mean, nullptr);
    launch_double_quantize(absmax, blocks, mean, codes, nested, nullptr);
    state.SetIterationTime(t.stop_s());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * 2);
  cudaFree(dx);
  cudaFree(packed);
  cudaFree(codes);
  cudaFree(absmax);
  cudaFree(nested);
  cudaFree(mean);
}
BENCHMARK(BM_gpu_quantize)->Arg(llama8b_layer_params)->UseManualTime();

#else  // no CUDA in this build: the GPU benchmarks say so instead of vanishing

void needs_gpu(benchmark::State& state) {
  state.SkipWithError("needs a GPU: this build has no CUDA (configure with nvcc on PATH)");
  for (auto _ : state) {
  }
}
BENCHMARK(needs_gpu)->Name("BM_h2d_pageable");
BENCHMARK(needs_gpu)->Name("BM_h2d_pinned");
BENCHMARK(needs_gpu)->Name("BM_h2d_pinned_double_buffered");
BENCHMARK(needs_gpu)->Name("BM_h2d_layer_llama8b_nf4");
BENCHMARK(needs_gpu)->Name("BM_dequant_bf16");
BENCHMARK(needs_gpu)->Name("BM_gpu_quantize");

#endif

}  // namespace

BENCHMARK_MAIN();
