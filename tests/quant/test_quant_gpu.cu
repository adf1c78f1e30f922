// Host reference vs CUDA kernels, bit for bit, on fresh random inputs (seeded per case).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lvt/quant/blockwise.hpp"

using namespace lvt;
using namespace lvt::quant;

namespace {

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  std::size_t n = 0;
  explicit DeviceBuffer(std::size_t count) : n(count) {
    cuda_check(cudaMalloc(&p, (count ? count : 1) * sizeof(T) + 64), "cudaMalloc");
  }
  DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) {
    cuda_check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  ~DeviceBuffer() { cudaFree(p); }
  std::vector<T> get(std::size_t count, std::size_t offset = 0) const {
    std::vector<T> h(count);
    cuda_check(cudaMemcpy(h.data(), p + offset, count * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }
};

template <class T>
std::vector<T> weights(std::size_t n, unsigned seed, bool heavy) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::student_t_distribution<float> t(3.0f);
  std::vector<T> x(n);
  for (auto& v : x) v = from_float<T>(heavy ? 0.01f * t(rng) : g(rng));
  return x;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
void check_4bit(Code4 code, std::int64_t n, int block, unsigned seed) {
  CAPTURE(n);
  CAPTURE(block);
  CAPTURE(storage_name<T>);
  const std::vector<T> x = weights<T>(std::size_t(n), seed, seed & 1);
  // host reference
  Quant4 ref = quantize4(code, x.data(), n, block, true, "w");
  std::vector<float> ref_absmax(std::size_t(blocks_of(n, block)));
  std::vector<std::uint8_t> tmp(std::size_t(packed_bytes(n)));
  quantize_4bit(code, x.data(), n, block, tmp.data(), ref_absmax.data(), "w");
  // device
  DeviceBuffer<T> dx(x);
  DeviceBuffer<std::uint8_t> packed(std::size_t(packed_bytes(n)));
  DeviceBuffer<float> absmax(ref_absmax.size()), mean(1), nested(ref.nested_absmax.size());
  DeviceBuffer<std::uint8_t> codes(ref_absmax.size());
  DeviceBuffer<unsigned long long> bad(1);
  cudaStream_t s;
  cuda_check(cudaStreamCreate(&s), "stream");
  reset_nonfinite(bad.p, s);
  launch_quantize_4bit(code, dx.p, n, block, packed.p, absmax.p, bad.p, s);
  launch_absmax_mean(absmax.p, std::int64_t(ref_absmax.size()), mean.p, s);
  launch_double_quantize(absmax.p, std::int64_t(ref_absmax.size()), mean.p, codes.p, nested.p, s);
  check_nonfinite(bad.p, n, "w", s);
  CHECK(same_bits(packed.get(ref.packed.size()), ref.packed));
  CHECK(same_bits(absmax.get(ref_absmax.size()), ref_absmax));
  CHECK(mean.get(1)[0] == ref.offset);
  CHECK(same_bits(codes.get(ref.absmax_codes.size()), ref.absmax_codes));
  CHECK(same_bits(nested.get(ref.nested_absmax.size()), ref.nested_absmax));
  // dequantize, plain and nested, vector path (aligned) and scalar path (offset by one element)
  auto deq = [&](auto tag) {
    using TOut = decltype(tag);
    std::vector<TOut> want(static_cast<std::size_t>(n)), want_plain(static_cast<std::size_t>(n));
    dequantize4(ref, want.data());
    dequantize_4bit(code, ref.packed.data(), ref_absmax.data(), n, block, want_plain.data());
    DeviceBuffer<TOut> out(std::size_t(n) + 1);
    launch_dequantize_4bit<TOut>(code, packed.p, nullptr, codes.p, nested.p, ref.offset, n, block, out.p, s);
    cuda_check(cudaStreamSynchronize(s), "sync");
    CHECK(same_bits(out.get(std::size_t(n)), want));
    launch_dequantize_4bit<TOut>(code, packed.p, absmax.p, nullptr, nullptr, 0.0f, n, block, out.p + 1, s);
    cuda_check(cudaStreamSynchronize(s), "sync");
    CHECK(same_bits(out.get(std::size_t(n), 1), want_plain));
  };
  deq(float{});
  deq(bf16{});
  deq(fp16{});
  cudaStreamDestroy(s);
}

}  // namespace

TEST_CASE("4-bit quantize, double quant and dequantize: CUDA == host, bit for bit") {
  std::random_device rd;
  const unsigned base = rd();
  CAPTURE(base);
  unsigned k = 0;
  for (Code4 code : {Code4::nf4, Code4::fp4}) {
    for (int block : {32, 64, 128, 256, 1024, 4096}) {
      for (std::int64_t n : {std::int64_t(4096 * 33), std::int64_t(64 * 1000 + 37), std::int64_t(7)}) {
        check_4bit<float>(code, n, block, base + k++);
        check_4bit<bf16>(code, n, block, base + k++);
        check_4bit<fp16>(code, n, block, base + k++);
      }
    }
  }
}

TEST_CASE("8-bit dynamic and int8 absmax: CUDA == host") {
  std::mt19937 seeder(std::random_device{}());
  for (int block : {64, 256, 4096}) {
    const std::int64_t n = 100000 + block / 2;
    const std::vector<float> x = weights<float>(std::size_t(n), seeder(), true);
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(n));
    std::vector<float> am(std::size_t(blocks_of(n, block)));
    quantize_dynamic_blockwise(x.data(), n, block, codes.data(), am.data(), "w");
    DeviceBuffer<float> dx(x), dam(am.size());
    DeviceBuffer<std::uint8_t> dcodes(codes.size());
    launch_quantize_dynamic(dx.p, n, block, dcodes.p, dam.p, nullptr, nullptr);
    cuda_check(cudaDeviceSynchronize(), "sync");
    CHECK(same_bits(dcodes.get(codes.size()), codes));
    CHECK(same_bits(dam.get(am.size()), am));

    std::vector<std::int8_t> q(static_cast<std::size_t>(n));
    quantize_int8(x.data(), n, block, q.data(), am.data(), "w");
    std::vector<bf16> y(static_cast<std::size_t>(n));
    dequantize_int8(q.data(), am.data(), n, block, y.data());
    DeviceBuffer<std::int8_t> dq(q.size());
    DeviceBuffer<bf16> dy(y.size());
    launch_quantize_int8(dx.p, n, block, dq.p, dam.p, nullptr, nullptr);
    launch_dequantize_int8(dq.p, dam.p, n, block, dy.p, nullptr);
    cuda_check(cudaDeviceSynchronize(), "sync");
    CHECK(same_bits(dq.get(q.size()), q));
    CHECK(same_bits(dam.get(am.size()), am));
    CHECK(same_bits(dy.get(y.size()), y));
  }
}

TEST_CASE("CUDA quantize reports NaN / Inf with the tensor name") {
  std::vector<float> x = weights<float>(5000, 17, false);
  x[4321] = std::nanf("");
  x[777] = INFINITY;
  DeviceBuffer<float> dx(x), am(std::size_t(blocks_of(5000, 64)));
  DeviceBuffer<std::uint8_t> packed(2500);
  DeviceBuffer<unsigned long long> bad(1);
  reset_nonfinite(bad.p, nullptr);
  launch_quantize_4bit(Code4::nf4, dx.p, 5000, 64, packed.p, am.p, bad.p, nullptr);
  std::string msg;
  try {
    check_nonfinite(bad.p, 5000, "model.layers.7.mlp.gate_proj.weight", nullptr);
  } catch (const lvt::Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("model.layers.7.mlp.gate_proj.weight") != std::string::npos);
  CHECK(msg.find("element 777") != std::string::npos);
}

#include "../gpu_main.hpp"
