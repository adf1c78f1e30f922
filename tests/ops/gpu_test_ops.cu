// The per-element math the ops share with their future CUDA kernels (LVT_HD functions), run on
// the device and compared with the same functions on the host: the dropout mask bit for bit,
// float math to 1e-6 relative. Also proves every ops header compiles under nvcc.
// Without a GPU the suite exits 77 (skipped), via gpu_main.hpp.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "lvt/ops/adamw.hpp"
#include "lvt/ops/attention.hpp"
#include "lvt/ops/cross_entropy.hpp"
#include "lvt/ops/embedding.hpp"
#include "lvt/ops/grad_accum.hpp"
#include "lvt/ops/grad_clip.hpp"
#include "lvt/ops/linear.hpp"
#include "lvt/ops/residual.hpp"
#include "lvt/ops/rmsnorm.hpp"
#include "lvt/ops/rope.hpp"
#include "lvt/ops/schedule.hpp"
#include "lvt/ops/swiglu.hpp"

namespace {

constexpr int n = 4096;
constexpr int outs = 8;  // results per element

__global__ void element_math(float* out, const float* in, std::uint64_t seed) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float a = in[4 * i], b = in[4 * i + 1], c = in[4 * i + 2], s = in[4 * i + 3];
  float* o = out + outs * i;
  lvt::ops::rope::rotate(o[0], o[1], a, b, c, s);
  o[2] = lvt::ops::swiglu::value(a * 4, b);
  lvt::ops::swiglu::grads(o[3], o[4], a * 4, b);
  float p = a, m = 0.1f * b, v = 0.01f * c * c;
  lvt::ops::adamw::update(p, m, v, s, 0.9f, 0.999f, 1e-8f, 0.9999f, 1e-3f, 0.0316f);
  o[5] = p;
  o[6] = v;
  o[7] = lvt::ops::linear::dropout_factor<float>(seed, std::uint64_t(i), 0.3f);
}

void check(cudaError_t e) { REQUIRE_MESSAGE(e == cudaSuccess, cudaGetErrorString(e)); }

}  // namespace

TEST_CASE("ops element math: device equals host (rope, swiglu, adamw, dropout mask)") {
  std::mt19937 g(2024);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> in(4 * n);
  for (float& x : in) x = d(g);
  const std::uint64_t seed = lvt::ops::dropout_seed(7, 3, 1, 2);
  float *din = nullptr, *dout = nullptr;
  check(cudaMalloc(&din, in.size() * sizeof(float)));
  check(cudaMalloc(&dout, std::size_t(outs) * n * sizeof(float)));
  check(cudaMemcpy(din, in.data(), in.size() * sizeof(float), cudaMemcpyHostToDevice));
  element_math<<<(n + 255) / 256, 256>>>(dout, din, seed);
  check(cudaGetLastError());
  std::vector<float> dev(std::size_t(outs) * n);
  check(cudaMemcpy(dev.data(), dout, dev.size() * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(din);
  cudaFree(dout);
  int kept = 0;
  for (int i = 0; i < n; i++) {
    const float a = in[4 * i], b = in[4 * i + 1], c = in[4 * i + 2], s = in[4 * i + 3];
    float h[outs];
    lvt::ops::rope::rotate(h[0], h[1], a, b, c, s);
    h[2] = lvt::ops::swiglu::value(a * 4, b);
    lvt::ops::swiglu::grads(h[3], h[4], a * 4, b);
    float p = a, m = 0.1f * b, v = 0.01f * c * c;
    lvt::ops::adamw::update(p, m, v, s, 0.9f, 0.999f, 1e-8f, 0.9999f, 1e-3f, 0.0316f);
    h[5] = p;
    h[6] = v;
    h[7] = lvt::ops::linear::dropout_factor<float>(seed, std::uint64_t(i), 0.3f);
    for (int j = 0; j < 7; j++) {
      INFO("element " << i << " output " << j);
      CHECK(dev[outs * i + j] == doctest::Approx(h[j]).epsilon(1e-6));
    }
    CHECK(dev[outs * i + 7] == h[7]);  // the mask regenerates identically on both sides
    kept += h[7] != 0;
  }
  CHECK(kept > n / 2);
  CHECK(kept < n);
}

#include "../gpu_main.hpp"
