// GPU kernel benchmarks (Google Benchmark): every CUDA kernel of the training step, each against
// a floor measured by the same binary in the same run, so each row says what fraction of the
// hardware the kernel gets.
//
//   BM_floor_*          d2d copy of 1 GiB (GBps = bytes read + written / time), a bf16 cuBLASLt
//                       GEMM 8192^3 through matmul::cuda::Gemm (TFLOPs), pinned h2d and d2h of
//                       1 GiB (GBps, one direction: the PCIe floor for streamed layers)
//   memory-bound        rmsnorm fwd/bwd, rope fwd/bwd, swiglu fwd/bwd, residual add, embedding
//                       gather, AdamW, dequantize NF4 / NF4+DQ / FP4 / int8 -> bf16:
//                       GBps = (bytes read + written, each tensor once) / time,
//                       of_copy = GBps / BM_floor_d2d_copy's GBps
//   compute-bound       linear (bf16 weight, and NF4 / NF4+DQ dequantized to a bf16 scratch then
//                       the same GEMM), attention fwd and fwd+bwd, fused lm-head + cross-entropy:
//                       TFLOPs, of_gemm = TFLOPs / BM_floor_gemm_bf16's TFLOPs; the quantized
//                       linear also of_plain = its rate / the bf16-weight GEMM's (same loop)
//
// Shapes: Llama-3.1-8B (hidden 4096, 32 heads, 8 kv, head_dim 128, ffn 14336, vocab 128256) and
// Llama-3.2-1B (hidden 2048, 32 heads, 8 kv, head_dim 64, ffn 8192) at batch 1 x seq 4096 =
// 4096 tokens, bf16 storage, inputs random (never zeros). Buffers are allocated once per
// benchmark, outside the timed loop; the cuBLASLt workspace (32 MiB) once per process.
//
// Timing: cudaEvents around one launch, SetIterationTime + UseManualTime. Before every timed
// launch a kernel reads a buffer of 4x the L2 size (at least 256 MiB): the L2 starts cold and
// clean (a read leaves no dirty lines to write back, a memset would), so a working set smaller
// than the L2 is not served from the previous iteration's cache, and the GPU is busy while the
// host enqueues the launch, so launch latency is not in the time.
//
// Without a GPU the binary prints why and exits 77 (meson's "skipped");
// --benchmark_list_tests still lists the benchmarks.
//   ninja -C build bench/ops/bench_kernels_cuda && ./build/bench/ops/bench_kernels_cuda
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "lvt/cuda_check.hpp"
#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/common.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/matmul.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/swiglu.hpp"
#include "lvt/quant/blockwise.hpp"
#include "../gpu_bench_main.hpp"
#include "lvt/quant/numeric.hpp"

namespace {

using lvt::bf16;
using i64 = std::int64_t;
using lvt::ops::matmul::cuda::Gemm;

// ---- shapes -----------------------------------------------------------------------------------
struct Dims {
  const char* name;
  i64 hidden, heads, kv_heads, head_dim, ffn, vocab;
};
constexpr Dims llama8b{"llama3_8b", 4096, 32, 8, 128, 14336, 128256};
constexpr Dims llama1b{"llama3_1b", 2048, 32, 8, 64, 8192, 128256};
constexpr i64 tokens = 4096;  // batch 1 x seq 4096
constexpr i64 gib = i64(1) << 30;
constexpr i64 floor_gemm_dim = 8192;
constexpr std::size_t cublas_workspace_bytes = std::size_t(32) << 20;
constexpr int quant_block = 64;  // the QLoRA default (policies.hpp)

// ---- device memory ----------------------------------------------------------------------------
// One allocation, freed on scope exit (a benchmark that throws still frees it). A failed
// cudaMalloc clears the error it leaves behind, so the next benchmark's launch checks do not
// report it again.
template <class T>
struct Buffer {
  T* p = nullptr;
  i64 n = 0;
  Buffer(i64 count, const char* what) : n(count) {
    const cudaError_t e = cudaMalloc(&p, bytes());
    if (e != cudaSuccess) {
      p = nullptr;
      (void)cudaGetLastError();
      throw lvt::Error(std::string("cudaMalloc of ") + std::to_string(bytes() >> 20) + " MiB for " +
                       what + " failed: " + cudaGetErrorString(e));
    }
  }
  ~Buffer() {
    if (p) cudaFree(p);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::size_t bytes() const { return std::size_t(n) * sizeof(T); }
};

struct PinnedBuffer {
  void* p = nullptr;
  std::size_t bytes;
  explicit PinnedBuffer(std::size_t b) : bytes(b) {
    const cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
      p = nullptr;
      (void)cudaGetLastError();
      throw lvt::Error(std::string("cudaHostAlloc of ") + std::to_string(bytes >> 20) +
                       " MiB failed: " + cudaGetErrorString(e));
    }
  }
  ~PinnedBuffer() {
    if (p) cudaFreeHost(p);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
};

// ---- what every benchmark shares: stream, events, L2 flush buffer, cuBLASLt --------------------
__global__ void flush_l2_kernel(const uint4* p, i64 n, unsigned* sink) {
  unsigned acc = 0;
  for (i64 i = blockIdx.x * i64(blockDim.x) + threadIdx.x; i < n; i += i64(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // keeps the loads; a store this rare costs nothing
}

template <class S>
__global__ void fill_uniform_kernel(S* p, i64 n, std::uint64_t seed, float lo, float hi) {
  for (i64 i = blockIdx.x * i64(blockDim.x) + threadIdx.x; i < n; i += i64(gridDim.x) * blockDim.x)
    p[i] = lvt::from_float<S>(lo + (hi - lo) * lvt::ops::counter_uniform(seed, std::uint64_t(i)));
}
__global__ void fill_ids_kernel(std::int32_t* p, i64 n, std::uint64_t seed, i64 vocab) {
  for (i64 i = blockIdx.x * i64(blockDim.x) + threadIdx.x; i < n; i += i64(gridDim.x) * blockDim.x) {
    const i64 id = i64(lvt::ops::counter_uniform(seed, std::uint64_t(i)) * float(vocab));
    p[i] = std::int32_t(id < vocab ? id : vocab - 1);
  }
}

struct Gpu {
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  std::unique_ptr<Buffer<uint4>> flush;
  std::unique_ptr<Buffer<unsigned>> sink;
  std::unique_ptr<Buffer<std::uint8_t>> workspace;
  std::unique_ptr<Gemm> gemm;
  std::uint64_t fills = 0;

  Gpu() {
    LVT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    LVT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    LVT_CUDA_CHECK(cudaEventCreate(&start));
    LVT_CUDA_CHECK(cudaEventCreate(&stop));
    const i64 flush_bytes = std::max<i64>(4 * i64(prop.l2CacheSize), i64(256) << 20);
    flush = std::make_unique<Buffer<uint4>>(flush_bytes / 16, "the L2 flush buffer");
    sink = std::make_unique<Buffer<unsigned>>(1, "the L2 flush sink");
    workspace = std::make_unique<Buffer<std::uint8_t>>(i64(cublas_workspace_bytes), "cuBLASLt workspace");
    gemm = std::make_unique<Gemm>(workspace->p, cublas_workspace_bytes);
    fill(reinterpret_cast<float*>(flush->p), flush_bytes / 4, -1.0f, 1.0f);
    LVT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  ~Gpu() {
    gemm.reset();
    workspace.reset();
    sink.reset();
    flush.reset();
    if (stop) cudaEventDestroy(stop);
    if (start) cudaEventDestroy(start);
    if (stream) cudaStreamDestroy(stream);
  }
  Gpu(const Gpu&) = delete;
  Gpu& operator=(const Gpu&) = delete;

  // Uniform in [lo, hi), a fresh seed per call so no two buffers hold the same values.
  template <class S>
  void fill(S* p, i64 n, float lo, float hi) {
    fill_uniform_kernel<S><<<lvt::ops::cuda::grid_for(n), lvt::ops::cuda::threads, 0, stream>>>(
        p, n, lvt::ops::mix64(++fills), lo, hi);
    LVT_CUDA_LAUNCHED("fill_uniform_kernel");
  }
  void fill_ids(std::int32_t* p, i64 n, i64 vocab) {
    fill_ids_kernel<<<lvt::ops::cuda::grid_for(n), lvt::ops::cuda::threads, 0, stream>>>(
        p, n, lvt::ops::mix64(++fills), vocab);
    LVT_CUDA_LAUNCHED("fill_ids_kernel");
  }

  void flush_l2() {
    flush_l2_kernel<<<unsigned(4 * prop.multiProcessorCount), 512, 0, stream>>>(flush->p, flush->n, sink->p);
    LVT_CUDA_LAUNCHED("flush_l2_kernel");
  }

  // Seconds of one launch on the GPU, L2 cold (see the top of the file).
  template <class F>
  double time_once_s(F& launch) {
    flush_l2();
    LVT_CUDA_CHECK(cudaEventRecord(start, stream));
    launch(stream);
    LVT_CUDA_CHECK(cudaEventRecord(stop, stream));
    LVT_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LVT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return double(ms) * 1e-3;
  }
};

Gpu* the_gpu = nullptr;  // made in main once a device is known to exist
Gpu& gpu() { return *the_gpu; }

// Mean seconds per launch: over the benchmark's iterations (state), or over `reps` launches when
// a floor is measured outside its own benchmark (state == nullptr). One untimed warm-up launch
// first (cuBLASLt heuristics, first-touch of the pages).
template <class F>
double mean_s(benchmark::State* state, int reps, F&& launch) {
  Gpu& g = gpu();
  launch(g.stream);
  LVT_CUDA_CHECK(cudaStreamSynchronize(g.stream));
  double total = 0;
  i64 n = 0;
  if (state) {
    for (auto _ : *state) {
      const double s = g.time_once_s(launch);
      state->SetIterationTime(s);
      total += s;
      ++n;
    }
  } else {
    for (; n < reps; ++n) total += g.time_once_s(launch);
  }
  return n > 0 ? total / double(n) : 0.0;
}

// ---- floors -----------------------------------------------------------------------------------
// A floor is the latest measurement of its benchmark. A kernel benchmark run without it (a
// --benchmark_filter that leaves the floor out) measures it first, with the same code.
struct Floors {
  double copy_GBps = 0, gemm_TFLOPs = 0;
};
Floors floors;

double measure_copy_GBps(benchmark::State* state) {
  Buffer<float> src(gib / 4, "copy source"), dst(gib / 4, "copy destination");
  gpu().fill(src.p, src.n, -1.0f, 1.0f);
  const double s = mean_s(state, 20, [&](cudaStream_t st) {
    LVT_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, std::size_t(gib), cudaMemcpyDeviceToDevice, st));
  });
  return 2.0 * double(gib) / s * 1e-9;  // read + written
}
double measure_gemm_TFLOPs(benchmark::State* state) {
  const i64 d = floor_gemm_dim;
  Buffer<bf16> a(d * d, "GEMM A"), b(d * d, "GEMM B"), c(d * d, "GEMM C");
  gpu().fill(a.p, a.n, -1.0f, 1.0f);
  gpu().fill(b.p, b.n, -1.0f, 1.0f);
  const double s = mean_s(state, 10, [&](cudaStream_t st) {
    gpu().gemm->run<bf16>(c.p, a.p, b.p, d, d, d, false, true, 1.0f, 0.0f, st);
  });
  return 2.0 * double(d) * double(d) * double(d) / s * 1e-12;
}
double copy_floor_GBps() {
  if (floors.copy_GBps == 0) floors.copy_GBps = measure_copy_GBps(nullptr);
  return floors.copy_GBps;
}
double gemm_floor_TFLOPs() {
  if (floors.gemm_TFLOPs == 0) floors.gemm_TFLOPs = measure_gemm_TFLOPs(nullptr);
  return floors.gemm_TFLOPs;
}

void BM_floor_d2d_copy(benchmark::State& state) {
  floors.copy_GBps = measure_copy_GBps(&state);
  state.counters["GBps"] = floors.copy_GBps;
}
void BM_floor_gemm_bf16(benchmark::State& state) {
  floors.gemm_TFLOPs = measure_gemm_TFLOPs(&state);
  state.counters["TFLOPs"] = floors.gemm_TFLOPs;
}
// Pinned host memory <-> device, 1 GiB, one direction: GBps = bytes / time.
void BM_floor_pinned(benchmark::State& state, cudaMemcpyKind kind) {
  PinnedBuffer host{std::size_t(gib)};
  Buffer<std::uint8_t> dev(gib, "device side of the pinned copy");
  std::uint64_t x = 0x243f6a8885a308d3ull;  // random bytes: splitmix64 over the buffer
  auto* w = static_cast<std::uint64_t*>(host.p);
  for (std::size_t i = 0; i < host.bytes / 8; ++i) w[i] = lvt::ops::mix64(x += 0x9e3779b97f4a7c15ull);
  gpu().fill(reinterpret_cast<float*>(dev.p), gib / 4, -1.0f, 1.0f);
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    if (kind == cudaMemcpyHostToDevice)
      LVT_CUDA_CHECK(cudaMemcpyAsync(dev.p, host.p, std::size_t(gib), kind, st));
    else
      LVT_CUDA_CHECK(cudaMemcpyAsync(host.p, dev.p, std::size_t(gib), kind, st));
  });
  state.counters["GBps"] = double(gib) / s * 1e-9;
}

// ---- counters ---------------------------------------------------------------------------------
void report_memory(benchmark::State& state, double bytes, double s, double copy_GBps) {
  const double gbps = bytes / s * 1e-9;
  state.counters["GBps"] = gbps;
  state.counters["of_copy"] = gbps / copy_GBps;
}
void report_compute(benchmark::State& state, double flops, double s, double gemm_TFLOPs) {
  const double tflops = flops / s * 1e-12;
  state.counters["TFLOPs"] = tflops;
  state.counters["of_gemm"] = tflops / gemm_TFLOPs;
}

constexpr double bf16_bytes = 2.0;

// ---- memory-bound kernels ---------------------------------------------------------------------
// Bytes counted: every tensor read once and every output written once (the least traffic the
// op can have); an accumulated gradient (dx += ...) is read and written.

void BM_rmsnorm_fwd(benchmark::State& state, Dims d) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = tokens, c = d.hidden;
  Buffer<bf16> x(n * c, "x"), w(c, "weight"), out(n * c, "out");
  Buffer<float> rstd(n, "rstd");
  gpu().fill(x.p, x.n, -1.0f, 1.0f);
  gpu().fill(w.p, w.n, 0.5f, 1.5f);
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::rmsnorm::cuda::forward(out.p, rstd.p, x.p, w.p, n, c, 1e-5, st);
  });
  report_memory(state, bf16_bytes * double(2 * n * c + c) + 4.0 * double(n), s, floor_GBps);
}

void BM_rmsnorm_bwd(benchmark::State& state, Dims d) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = tokens, c = d.hidden;
  Buffer<bf16> x(n * c, "x"), w(c, "weight"), out(n * c, "out"), dout(n * c, "dout"), dx(n * c, "dx");
  Buffer<float> rstd(n, "rstd");
  gpu().fill(x.p, x.n, -1.0f, 1.0f);
  gpu().fill(w.p, w.n, 0.5f, 1.5f);
  gpu().fill(dout.p, dout.n, -1.0f, 1.0f);
  gpu().fill(dx.p, dx.n, -1.0f, 1.0f);
  lvt::ops::rmsnorm::cuda::forward(out.p, rstd.p, x.p, w.p, n, c, 1e-5, gpu().stream);  // rstd
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::rmsnorm::cuda::backward(dx.p, dout.p, x.p, w.p, rstd.p, n, c, st);
  });
  // dout, x, dx read; dx written; weight and rstd read
  report_memory(state, bf16_bytes * double(4 * n * c + c) + 4.0 * double(n), s, floor_GBps);
}

// RoPE on q [1, 4096, heads, head_dim] (k is the same kernel on kv_heads); fp32 cos/sin tables.
struct RopeTables {
  Buffer<float> cos, sin;
  RopeTables(i64 seq, i64 head_dim) : cos(seq * head_dim / 2, "rope cos"), sin(seq * head_dim / 2, "rope sin") {
    const int half = int(head_dim / 2);
    std::vector<float> inv(std::size_t(half), 0.0f), c(std::size_t(seq * half)), s(c.size());
    for (int i = 0; i < half; ++i) inv[std::size_t(i)] = float(std::pow(500000.0, -2.0 * i / double(head_dim)));
    lvt::ops::rope::tables(c.data(), s.data(), inv.data(), seq, half);
    LVT_CUDA_CHECK(cudaMemcpy(cos.p, c.data(), cos.bytes(), cudaMemcpyHostToDevice));
    LVT_CUDA_CHECK(cudaMemcpy(sin.p, s.data(), sin.bytes(), cudaMemcpyHostToDevice));
  }
};

void BM_rope(benchmark::State& state, Dims d, bool backward) {
  const double floor_GBps = copy_floor_GBps();
  const i64 seq = tokens, n = seq * d.heads * d.head_dim;
  RopeTables tab(seq, d.head_dim);
  Buffer<bf16> x(n, "x"), out(n, "out");
  gpu().fill(x.p, x.n, -1.0f, 1.0f);
  gpu().fill(out.p, out.n, -1.0f, 1.0f);
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    if (backward)  // dx (out) += R(-angle) dout (x)
      lvt::ops::rope::cuda::backward(out.p, x.p, tab.cos.p, tab.sin.p, 1, seq, d.heads, d.head_dim,
                                     d.head_dim, st);
    else
      lvt::ops::rope::cuda::forward(out.p, x.p, tab.cos.p, tab.sin.p, 1, seq, d.heads, d.head_dim,
                                    d.head_dim, st);
  });
  const double tables = 2.0 * 4.0 * double(seq * d.head_dim / 2);
  report_memory(state, bf16_bytes * double((backward ? 3 : 2) * n) + tables, s, floor_GBps);
}

void BM_swiglu(benchmark::State& state, Dims d, bool backward) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = tokens * d.ffn;
  Buffer<bf16> gate(n, "gate"), up(n, "up"), out(n, "out / dout");
  gpu().fill(gate.p, n, -4.0f, 4.0f);
  gpu().fill(up.p, n, -1.0f, 1.0f);
  gpu().fill(out.p, n, -1.0f, 1.0f);
  std::unique_ptr<Buffer<bf16>> dgate, dup;
  if (backward) {
    dgate = std::make_unique<Buffer<bf16>>(n, "dgate");
    dup = std::make_unique<Buffer<bf16>>(n, "dup");
    gpu().fill(dgate->p, n, -1.0f, 1.0f);
    gpu().fill(dup->p, n, -1.0f, 1.0f);
  }
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    if (backward)
      lvt::ops::swiglu::cuda::backward(dgate->p, dup->p, out.p, gate.p, up.p, n, st);
    else
      lvt::ops::swiglu::cuda::forward(out.p, gate.p, up.p, n, st);
  });
  // forward: gate, up read, out written; backward: dout, gate, up, dgate, dup read, dgate, dup written
  report_memory(state, bf16_bytes * double((backward ? 7 : 3) * n), s, floor_GBps);
}

void BM_residual_add(benchmark::State& state, Dims d) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = tokens * d.hidden;
  Buffer<bf16> a(n, "a"), b(n, "b"), out(n, "out");
  gpu().fill(a.p, n, -1.0f, 1.0f);
  gpu().fill(b.p, n, -1.0f, 1.0f);
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::residual::cuda::forward(out.p, a.p, b.p, n, st);
  });
  report_memory(state, bf16_bytes * double(3 * n), s, floor_GBps);
}

void BM_embedding(benchmark::State& state, Dims d) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = tokens, c = d.hidden;
  Buffer<bf16> table(d.vocab * c, "embedding table"), out(n * c, "out");
  Buffer<std::int32_t> ids(n, "token ids");
  gpu().fill(table.p, table.n, -0.05f, 0.05f);
  gpu().fill_ids(ids.p, n, d.vocab);
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::embedding::cuda::forward(out.p, ids.p, table.p, n, c, st);
  });
  // the gathered rows read, out written, the ids read
  report_memory(state, bf16_bytes * double(2 * n * c) + 4.0 * double(n), s, floor_GBps);
}

// AdamW over the fp32 LoRA parameters of Llama-3.1-8B, r 16 on all seven projections:
// 32 layers x 16 x (q 4096+4096, k 4096+1024, v 4096+1024, o 4096+4096, gate/up/down 3 x
// (4096+14336)) = 41,943,040 floats (40 Mi).
constexpr i64 adamw_params = 32 * 16 * (8192 + 5120 + 5120 + 8192 + 3 * 18432);
static_assert(adamw_params == 40 * (i64(1) << 20));

void BM_adamw(benchmark::State& state) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = adamw_params;
  Buffer<float> p(n, "params"), m(n, "exp_avg"), v(n, "exp_avg_sq"), g(n, "grads");
  gpu().fill(p.p, n, -0.02f, 0.02f);
  gpu().fill(m.p, n, -1e-3f, 1e-3f);
  gpu().fill(v.p, n, 1e-8f, 1e-6f);
  gpu().fill(g.p, n, -1e-2f, 1e-2f);
  const lvt::ops::adamw::Hyper h{2e-4, 0.9, 0.999, 1e-8, 0.0};
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::adamw::cuda::step(p.p, m.p, v.p, g.p, n, h, 10, st);
  });
  report_memory(state, 4.0 * double(7 * n), s, floor_GBps);  // p, m, v, g read; p, m, v written
}

// ---- quantized weights ------------------------------------------------------------------------
enum class QKind { nf4, nf4dq, fp4, int8 };
const char* qkind_name(QKind k) {
  switch (k) {
    case QKind::nf4: return "nf4";
    case QKind::nf4dq: return "nf4dq";
    case QKind::fp4: return "fp4";
    case QKind::int8: return "int8";
  }
  return "?";
}

// A weight of n elements quantized on the device from random normal-ish values (the kernels of
// blockwise_cuda.hpp), block 64; dequantize() writes it to bf16.
struct QuantWeight {
  QKind kind;
  i64 n, blocks;
  Buffer<std::uint8_t> data;     // packed 4-bit codes, or int8 values
  Buffer<float> absmax;          // per block (plain 4-bit and int8)
  Buffer<std::uint8_t> codes;    // NF4+DQ: one 8-bit absmax code per block
  Buffer<float> nested;          // NF4+DQ: one fp32 per 256 blocks
  float offset = 0;

  QuantWeight(QKind k, i64 count)
      : kind(k), n(count), blocks(lvt::quant::blocks_of(count, quant_block)),
        data(k == QKind::int8 ? count : lvt::quant::packed_bytes(count), "quantized weight"),
        absmax(blocks, "absmax"), codes(blocks, "absmax codes"),
        nested(lvt::quant::blocks_of(blocks, lvt::quant::nested_block), "nested absmax") {
    Gpu& g = gpu();
    Buffer<float> w(n, "fp32 weight to quantize");
    Buffer<float> mean(1, "absmax mean");
    g.fill(w.p, n, -0.05f, 0.05f);
    if (kind == QKind::int8) {
      lvt::quant::launch_quantize_int8(w.p, n, quant_block, reinterpret_cast<std::int8_t*>(data.p),
                                       absmax.p, nullptr, g.stream);
    } else {
      const lvt::quant::Code4 code = kind == QKind::fp4 ? lvt::quant::Code4::fp4 : lvt::quant::Code4::nf4;
      lvt::quant::launch_quantize_4bit(code, w.p, n, quant_block, data.p, absmax.p, nullptr, g.stream);
      if (kind == QKind::nf4dq) {
        lvt::quant::launch_absmax_mean(absmax.p, blocks, mean.p, g.stream);
        lvt::quant::launch_double_quantize(absmax.p, blocks, mean.p, codes.p, nested.p, g.stream);
        LVT_CUDA_CHECK(cudaMemcpyAsync(&offset, mean.p, 4, cudaMemcpyDeviceToHost, g.stream));
      }
    }
    LVT_CUDA_CHECK(cudaStreamSynchronize(g.stream));
  }

  void dequantize(bf16* out, cudaStream_t st) const {
    using lvt::quant::Code4;
    switch (kind) {
      case QKind::nf4:
        lvt::quant::launch_dequantize_4bit(Code4::nf4, data.p, absmax.p, nullptr, nullptr, 0.0f, n,
                                           quant_block, out, st);
        break;
      case QKind::fp4:
        lvt::quant::launch_dequantize_4bit(Code4::fp4, data.p, absmax.p, nullptr, nullptr, 0.0f, n,
                                           quant_block, out, st);
        break;
      case QKind::nf4dq:
        lvt::quant::launch_dequantize_4bit(Code4::nf4, data.p, nullptr, codes.p, nested.p, offset,
                                           n, quant_block, out, st);
        break;
      case QKind::int8:
        lvt::quant::launch_dequantize_int8(reinterpret_cast<const std::int8_t*>(data.p), absmax.p, n,
                                           quant_block, out, st);
        break;
    }
  }

  // Bytes a dequantization reads: the codes and the absmax (or its codes and nested absmax).
  double read_bytes() const {
    const double values = kind == QKind::int8 ? double(n) : double(lvt::quant::packed_bytes(n));
    if (kind == QKind::nf4dq) return values + double(blocks) + 4.0 * double(nested.n);
    return values + 4.0 * double(blocks);
  }
};

// Dequantize Llama-3.1-8B's gate_proj weight [14336 x 4096] to bf16.
void BM_dequantize(benchmark::State& state, QKind kind) {
  const double floor_GBps = copy_floor_GBps();
  const i64 n = llama8b.ffn * llama8b.hidden;
  QuantWeight q(kind, n);
  Buffer<bf16> out(n, "dequantized weight");
  const double s = mean_s(&state, 0, [&](cudaStream_t st) { q.dequantize(out.p, st); });
  report_memory(state, q.read_bytes() + bf16_bytes * double(n), s, floor_GBps);
}

// ---- compute-bound pieces ---------------------------------------------------------------------

// The linear layer's forward y [4096, out] = x [4096, in] W^T, W [out, in] (nn.Linear layout).
// bf16: the GEMM alone. nf4 / nf4dq: W dequantized to a bf16 scratch of the whole weight, then the
// same GEMM on it, timed together; the plain GEMM is timed in the same loop for of_plain.
// FLOPs: 2 * 4096 * out * in (the dequantization does none that count).
void BM_linear(benchmark::State& state, i64 out, i64 in, bool quantized, QKind kind) {
  const double floor_TFLOPs = gemm_floor_TFLOPs();
  Gpu& g = gpu();
  Buffer<bf16> x(tokens * in, "x"), w(out * in, "bf16 weight / dequantized scratch"), y(tokens * out, "y");
  g.fill(x.p, x.n, -1.0f, 1.0f);
  g.fill(w.p, w.n, -0.05f, 0.05f);
  auto plain = [&](cudaStream_t st) {
    g.gemm->run<bf16>(y.p, x.p, w.p, tokens, out, in, false, true, 1.0f, 0.0f, st);
  };
  const double flops = 2.0 * double(tokens) * double(out) * double(in);
  if (!quantized) {
    report_compute(state, flops, mean_s(&state, 0, plain), floor_TFLOPs);
    return;
  }
  QuantWeight q(kind, out * in);
  auto dequant_gemm = [&](cudaStream_t st) {
    q.dequantize(w.p, st);
    plain(st);
  };
  dequant_gemm(g.stream);  // warm-up of both
  plain(g.stream);
  LVT_CUDA_CHECK(cudaStreamSynchronize(g.stream));
  double quant_s = 0, plain_s = 0;
  for (auto _ : state) {
    const double s = g.time_once_s(dequant_gemm);
    state.SetIterationTime(s);
    quant_s += s;
    plain_s += g.time_once_s(plain);  // not the benchmark's time: only for of_plain
  }
  if (state.iterations() == 0) return;
  report_compute(state, flops, quant_s / double(state.iterations()), floor_TFLOPs);
  state.counters["of_plain"] = plain_s / quant_s;
}

// Causal attention, batch 1, grouped-query (heads / kv_heads), the kernels of ops/attention.hpp.
// FLOPs (FlashAttention's convention): forward = 4 * B * H * T^2 * D / 2 (QK^T and PV, 2 FLOPs
// per multiply-add, halved for the causal mask); backward = 2.5x forward (five products:
// QK^T recomputed, dV, dP, dQ, dK); forward + backward = 3.5x forward.
void BM_attention(benchmark::State& state, Dims d, i64 seq, bool with_backward) {
  const double floor_TFLOPs = gemm_floor_TFLOPs();
  Gpu& g = gpu();
  const i64 H = d.heads, KV = d.kv_heads, D = d.head_dim;
  Buffer<bf16> q(seq * H * D, "q"), k(seq * KV * D, "k"), v(seq * KV * D, "v"), out(seq * H * D, "out");
  Buffer<float> lse(H * seq, "lse");
  g.fill(q.p, q.n, -1.0f, 1.0f);
  g.fill(k.p, k.n, -1.0f, 1.0f);
  g.fill(v.p, v.n, -1.0f, 1.0f);
  std::unique_ptr<Buffer<bf16>> dq, dk, dv, dout;
  if (with_backward) {
    dq = std::make_unique<Buffer<bf16>>(q.n, "dq");
    dk = std::make_unique<Buffer<bf16>>(k.n, "dk");
    dv = std::make_unique<Buffer<bf16>>(v.n, "dv");
    dout = std::make_unique<Buffer<bf16>>(out.n, "dout");
    for (auto* b : {dq.get(), dk.get(), dv.get(), dout.get()}) g.fill(b->p, b->n, -1.0f, 1.0f);
  }
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::attention::cuda::forward(out.p, lse.p, q.p, k.p, v.p, 1, seq, H, KV, D, st);
    if (with_backward)
      lvt::ops::attention::cuda::backward(dq->p, dk->p, dv->p, dout->p, q.p, k.p, v.p, out.p, lse.p,
                                          1, seq, H, KV, D, st);
  });
  const double fwd_flops = 4.0 * double(H) * double(seq) * double(seq) * double(D) / 2.0;
  report_compute(state, (with_backward ? 3.5 : 1.0) * fwd_flops, s, floor_TFLOPs);
}

// Tokens per lm-head chunk as plan/layout.hpp's loss_chunk_tokens picks them: a chunk's fp32
// logits within 64 MiB (130 tokens at vocab 128256).
constexpr i64 planner_chunk_tokens(i64 vocab) {
  const i64 c = (i64(64) << 20) / (vocab * 4);
  return c < 1 ? 1 : c > tokens ? tokens : c;
}

// The fused, chunked lm-head + cross-entropy forward and backward (cross_entropy::cuda::
// forward_backward): per chunk the fp32 logits GEMM, the row kernel, the dhidden GEMM; then the
// per-row losses copied back (it synchronizes, as the step does). FLOPs = 4 * tokens * hidden *
// vocab: the two GEMMs that run. The lm-head is frozen, so no weight gradient is computed; the
// 6 * tokens * hidden * vocab of a trained head would overstate the rate by 1.5x.
void BM_cross_entropy(benchmark::State& state, Dims d, i64 chunk) {
  const double floor_TFLOPs = gemm_floor_TFLOPs();
  Gpu& g = gpu();
  const i64 n = tokens, c = d.hidden, V = d.vocab;
  Buffer<bf16> hidden(n * c, "hidden"), w(V * c, "lm_head weight"), dhidden(n * c, "dhidden");
  Buffer<std::int32_t> labels(n, "labels");
  Buffer<float> row_loss(n, "row losses");
  Buffer<std::uint8_t> scratch(lvt::ops::cross_entropy::cuda::scratch_bytes<bf16>(chunk, V), "logits chunk");
  g.fill(hidden.p, hidden.n, -1.0f, 1.0f);
  g.fill(w.p, w.n, -0.05f, 0.05f);
  g.fill_ids(labels.p, n, V);
  const double s = mean_s(&state, 0, [&](cudaStream_t st) {
    lvt::ops::cross_entropy::cuda::forward_backward<bf16>(dhidden.p, scratch.p, row_loss.p, hidden.p,
                                                          w.p, labels.p, n, c, V, chunk, n, 1.0,
                                                          *g.gemm, st);
  });
  report_compute(state, 4.0 * double(n) * double(c) * double(V), s, floor_TFLOPs);
}

// ---- registration -----------------------------------------------------------------------------
// A benchmark that throws (out of memory on a smaller GPU, a CUDA error) is skipped with the
// message instead of ending the run.
template <class F>
benchmark::internal::Benchmark* add(const std::string& name, benchmark::TimeUnit unit, F body) {
  return benchmark::RegisterBenchmark(name.c_str(), [body](benchmark::State& state) {
           try {
             body(state);
           } catch (const std::exception& e) {
             state.SkipWithError(e.what());
           }
         })
      ->UseManualTime()
      ->Unit(unit);
}

void register_all() {
  using benchmark::kMicrosecond;
  using benchmark::kMillisecond;
  add("BM_floor_d2d_copy/1GiB", kMillisecond, BM_floor_d2d_copy);
  add("BM_floor_gemm_bf16/8192", kMillisecond, BM_floor_gemm_bf16);
  add("BM_floor_h2d_pinned/1GiB", kMillisecond,
      [](benchmark::State& s) { BM_floor_pinned(s, cudaMemcpyHostToDevice); });
  add("BM_floor_d2h_pinned/1GiB", kMillisecond,
      [](benchmark::State& s) { BM_floor_pinned(s, cudaMemcpyDeviceToHost); });

  for (const Dims& d : {llama8b, llama1b}) {
    const std::string m = d.name;
    add("BM_rmsnorm_fwd/" + m, kMicrosecond, [d](benchmark::State& s) { BM_rmsnorm_fwd(s, d); });
    add("BM_rmsnorm_bwd/" + m, kMicrosecond, [d](benchmark::State& s) { BM_rmsnorm_bwd(s, d); });
    add("BM_rope_fwd/" + m + "_q", kMicrosecond, [d](benchmark::State& s) { BM_rope(s, d, false); });
    add("BM_rope_bwd/" + m + "_q", kMicrosecond, [d](benchmark::State& s) { BM_rope(s, d, true); });
    add("BM_swiglu_fwd/" + m, kMicrosecond, [d](benchmark::State& s) { BM_swiglu(s, d, false); });
    add("BM_swiglu_bwd/" + m, kMicrosecond, [d](benchmark::State& s) { BM_swiglu(s, d, true); });
    add("BM_residual_add/" + m, kMicrosecond, [d](benchmark::State& s) { BM_residual_add(s, d); });
    add("BM_embedding/" + m, kMicrosecond, [d](benchmark::State& s) { BM_embedding(s, d); });
  }
  add("BM_adamw/40Mi_fp32", kMicrosecond, [](benchmark::State& s) { BM_adamw(s); });
  for (QKind k : {QKind::nf4, QKind::nf4dq, QKind::fp4, QKind::int8})
    add(std::string("BM_dequantize_bf16/") + qkind_name(k) + "_14336x4096", kMicrosecond,
        [k](benchmark::State& s) { BM_dequantize(s, k); });

  struct Proj {
    const char* name;
    i64 out, in;
  };
  const Proj projs8b[] = {{"llama3_8b_q_proj", 4096, 4096}, {"llama3_8b_o_proj", 4096, 4096},
                          {"llama3_8b_gate_proj", 14336, 4096}, {"llama3_8b_down_proj", 4096, 14336}};
  const Proj projs1b[] = {{"llama3_1b_q_proj", 2048, 2048}, {"llama3_1b_gate_proj", 8192, 2048},
                          {"llama3_1b_down_proj", 2048, 8192}};
  auto add_linear = [](const Proj& p) {
    const std::string base = std::string("/") + p.name;
    add("BM_linear_bf16" + base, kMillisecond,
        [p](benchmark::State& s) { BM_linear(s, p.out, p.in, false, QKind::nf4); });
    for (QKind k : {QKind::nf4dq, QKind::nf4})
      add(std::string("BM_linear_") + qkind_name(k) + base, kMillisecond,
          [p, k](benchmark::State& s) { BM_linear(s, p.out, p.in, true, k); });
  };
  for (const Proj& p : projs8b) add_linear(p);
  for (const Proj& p : projs1b) add_linear(p);

  for (bool bwd : {false, true})
    for (const Dims& d : {llama8b, llama1b})
      for (i64 seq : {i64(4096), i64(1024)})
        add(std::string(bwd ? "BM_attention_fwd_bwd/" : "BM_attention_fwd/") + d.name + "_d" +
                std::to_string(d.head_dim) + "/seq:" + std::to_string(seq),
            kMillisecond, [d, seq, bwd](benchmark::State& s) { BM_attention(s, d, seq, bwd); });

  for (i64 chunk : {planner_chunk_tokens(llama8b.vocab), i64(1024), tokens})
    add(std::string("BM_cross_entropy/llama3_8b/chunk:") + std::to_string(chunk), kMillisecond,
        [chunk](benchmark::State& s) { BM_cross_entropy(s, llama8b, chunk); });
  add(std::string("BM_cross_entropy/llama3_1b/chunk:") +
          std::to_string(planner_chunk_tokens(llama1b.vocab)),
      kMillisecond,
      [](benchmark::State& s) { BM_cross_entropy(s, llama1b, planner_chunk_tokens(llama1b.vocab)); });
}

}  // namespace

int main(int argc, char** argv) {
  return gpu_benchmark_main(
      argc, argv, "bench_kernels_cuda", register_all,
      [] {
        the_gpu = new Gpu();
        benchmark::AddCustomContext("l2_flush_mib", std::to_string(gpu().flush->bytes() >> 20));
        benchmark::AddCustomContext("cublaslt_workspace_mib", std::to_string(cublas_workspace_bytes >> 20));
      },
      [] { delete the_gpu; });
}
