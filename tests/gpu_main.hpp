#pragma once
// main() for GPU suites (.cu): without a usable GPU, print why and exit 77, which meson reports
// as SKIP. Include from exactly one .cu file of a suite, after defining the suite's tests.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char** argv) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIP: no usable GPU (cudaGetDeviceCount: %s, %d devices)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "ok", n);
    return 77;
  }
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  if (p.major * 10 + p.minor < 75) {
    std::printf("SKIP: GPU %s is sm_%d%d; lvt needs sm_75 or newer\n", p.name, p.major, p.minor);
    return 77;
  }
  std::printf("GPU: %s (sm_%d%d)\n", p.name, p.major, p.minor);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
