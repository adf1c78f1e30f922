// Model I/O throughput: bf16 -> float conversion (the load path of every weight), float -> bf16
// (merge / save), and a safetensors write + mmap read of one 64 MiB tensor.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>
#include <vector>

#include "lvt/io/safetensors.hpp"

using namespace lvt::io;

static void BM_bf16_to_float(benchmark::State& st) {
  const std::size_t n = std::size_t(st.range(0));
  std::vector<std::uint16_t> src(n);
  std::mt19937 rng(1);
  for (auto& x : src) x = float_to_bf16(std::uniform_real_distribution<float>(-1, 1)(rng));
  std::vector<float> dst(n);
  for (auto _ : st) {
    convert_to_float(StDtype::BF16, reinterpret_cast<const std::byte*>(src.data()), n, dst.data(), "b");
    benchmark::DoNotOptimize(dst.data());
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(n) * 2);
}
BENCHMARK(BM_bf16_to_float)->Arg(1 << 24);

static void BM_float_to_bf16(benchmark::State& st) {
  const std::size_t n = std::size_t(st.range(0));
  std::vector<float> src(n);
  std::mt19937 rng(2);
  for (auto& x : src) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<std::byte> dst(n * 2);
  for (auto _ : st) {
    convert_from_float(src.data(), n, StDtype::BF16, dst.data(), "b");
    benchmark::DoNotOptimize(dst.data());
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(n) * 4);
}
BENCHMARK(BM_float_to_bf16)->Arg(1 << 24);

static void BM_safetensors_write_read(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  std::vector<float> v(static_cast<std::size_t>(n));
  std::mt19937 rng(3);
  for (auto& x : v) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  const auto path = std::filesystem::temp_directory_path() / "lvt_bench_io.safetensors";
  std::vector<float> back(static_cast<std::size_t>(n));
  for (auto _ : st) {
    SafetensorsWriter w(path, {{"w", StDtype::BF16, {n}}});
    w.write_float("w", v);
    w.finish();
    SafetensorsFile f(path);
    f.to_float(f.at("w"), back);
    benchmark::DoNotOptimize(back.data());
  }
  std::filesystem::remove(path);
  st.SetBytesProcessed(std::int64_t(st.iterations()) * n * 2);
}
BENCHMARK(BM_safetensors_write_read)->Arg(1 << 25)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
