#pragma once
// main() of the GPU benchmarks: without a usable GPU it says why and exits 77 (meson's "skipped";
// with --benchmark_list_tests it lists the names first, touching no device); with one it adds the
// GPU to the report's context, runs `setup` (it may add context; an exception ends the run with
// its message), the benchmarks, then `teardown`.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "lvt/backend/cuda_device.hpp"

template <class Setup, class Teardown>
int gpu_benchmark_main(int argc, char** argv, const char* name, void (*register_all)(), Setup&& setup,
                       Teardown&& teardown) {
  bool list_only = false;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--benchmark_list_tests") == 0 ||
        std::strcmp(argv[i], "--benchmark_list_tests=true") == 0)
      list_only = true;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();

  const std::string why = lvt::cuda::unavailable_reason(0);
  if (!why.empty()) {
    std::fprintf(stderr, "%s: needs a GPU: %s; nothing measured\n", name, why.c_str());
    if (list_only) benchmark::RunSpecifiedBenchmarks();  // lists the names only
    return 77;
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
    std::fprintf(stderr, "%s: cudaGetDeviceProperties failed\n", name);
    return 1;
  }
  benchmark::AddCustomContext("gpu", p.name);
  benchmark::AddCustomContext("gpu_memory_gib", std::to_string(double(p.totalGlobalMem) / double(1 << 30)));
  try {
    setup();
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "%s: GPU setup failed: %s\n", name, ex.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  teardown();
  return 0;
}
