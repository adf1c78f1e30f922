#pragma once
// The CUDA device side of a run, before any kernel: picking the GPU (with clear errors for no
// GPU and GPUs older than sm_75), checking that a plan fits the memory actually free on it
// (before allocating, with the numbers), and the two allocations a run makes: one cudaMalloc for
// the device arena and one cudaHostAlloc for the pinned pool. Every CUDA call goes through
// LVT_CUDA_CHECK, whose error names the file, the line and the operation.
//
// Plain host code over the CUDA runtime API: compiles with g++ (or nvcc) wherever the toolkit's
// headers are, and links against cudart.
#include <cuda_runtime.h>

#include <string>

#include "lvt/cuda_check.hpp"
#include "lvt/error.hpp"
#include "lvt/plan/planner.hpp"
#include "lvt/plan/report.hpp"

namespace lvt::cuda {

struct DeviceInfo {
  int index = -1;
  std::string name;
  int sm = 0;  // compute capability x10
  std::int64_t total_bytes = 0;
  std::int64_t free_bytes = 0;
};

// Why no GPU can run lvt's kernels here, or "" when device `index` can. Never throws.
inline std::string unavailable_reason(int index = 0) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return std::string("no usable GPU: cudaGetDeviceCount: ") + cudaGetErrorName(e) + " (" +
           cudaGetErrorString(e) + ")";
  if (n == 0) return "no GPU: cudaGetDeviceCount found 0 devices";
  if (index < 0 || index >= n)
    return "GPU " + std::to_string(index) + " does not exist (" + std::to_string(n) + " found)";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, index) != cudaSuccess) return "cudaGetDeviceProperties failed";
  if (p.major * 10 + p.minor < 75)
    return std::string("GPU ") + p.name + " is sm_" + std::to_string(p.major * 10 + p.minor) +
           "; lvt's kernels need sm_75 (Turing) or newer";
  return "";
}

// The GPU a run uses; lvt::Error with the reason when there is none it can use.
inline DeviceInfo select_device(int index = 0) {
  const std::string why = unavailable_reason(index);
  if (!why.empty()) throw Error(why);
  LVT_CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp p{};
  LVT_CUDA_CHECK(cudaGetDeviceProperties(&p, index));
  DeviceInfo d;
  d.index = index;
  d.name = p.name;
  d.sm = p.major * 10 + p.minor;
  std::size_t free_b = 0, total_b = 0;
  LVT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  d.free_bytes = std::int64_t(free_b);
  d.total_bytes = std::int64_t(total_b);
  return d;
}

// The plan's arena plus the stated runtime margin (what cuBLASLt, lazily loaded kernels and graph
// instantiation allocate after this check) must fit the memory free now (the context is already
// created by select_device, so its part of the reserve is spent). Throws before anything is
// allocated, with the numbers and the fix.
inline void check_fits(const plan::Summary& s, const DeviceInfo& d) {
  const std::int64_t need = s.arena_bytes + plan::cuda_runtime_margin_bytes;
  if (need <= d.free_bytes) return;
  throw Error("the plan's device arena needs " + plan::format_bytes(s.arena_bytes) + " and " +
              plan::format_bytes(plan::cuda_runtime_margin_bytes) + " beside it (cuBLASLt, "
              "kernels loaded on first use, CUDA graphs) but " + d.name + " has " +
              plan::format_bytes(d.free_bytes) + " free of " + plan::format_bytes(d.total_bytes) +
              " (" + plan::format_bytes(need - d.free_bytes) +
              " missing): free memory on the GPU, or plan for --budget " +
              plan::format_bytes(d.free_bytes - plan::cuda_runtime_margin_bytes +
                                 s.context_reserve_bytes) +
              " (lvt plan --auto says which policies fit)");
}

// The run's two allocations. Move-only; frees both on destruction.
class Allocations {
 public:
  Allocations() = default;
  Allocations(const plan::Summary& s, const DeviceInfo& d) {
    check_fits(s, d);
    if (s.arena_bytes > 0) LVT_CUDA_CHECK(cudaMalloc(&arena_, std::size_t(s.arena_bytes)));
    if (s.pinned_bytes > 0) {
      const cudaError_t e = cudaHostAlloc(&pinned_, std::size_t(s.pinned_bytes), cudaHostAllocDefault);
      if (e != cudaSuccess) {
        cudaFree(arena_);
        arena_ = nullptr;
        throw Error(cuda_error_text(e, "cudaHostAlloc(pinned pool)", __FILE__, __LINE__) + ": " +
                    plan::format_bytes(s.pinned_bytes) + " of pinned host memory (is the host's "
                    "RAM or its locked-memory limit smaller?)");
      }
    }
    arena_bytes_ = s.arena_bytes;
    pinned_bytes_ = s.pinned_bytes;
  }
  Allocations(Allocations&& o) noexcept { swap(o); }
  Allocations& operator=(Allocations&& o) noexcept {
    swap(o);
    return *this;
  }
  Allocations(const Allocations&) = delete;
  Allocations& operator=(const Allocations&) = delete;
  ~Allocations() {
    if (arena_) cudaFree(arena_);
    if (pinned_) cudaFreeHost(pinned_);
  }

  std::byte* device(const plan::Buffer& b) const { return static_cast<std::byte*>(arena_) + b.offset; }
  std::byte* pinned(const plan::Buffer& b) const { return static_cast<std::byte*>(pinned_) + b.offset; }
  std::byte* at(const plan::Buffer& b) const {
    return b.memory == plan::Memory::device ? device(b) : pinned(b);
  }
  void* arena() const { return arena_; }
  void* pinned_base() const { return pinned_; }
  std::int64_t arena_bytes() const { return arena_bytes_; }
  std::int64_t pinned_bytes() const { return pinned_bytes_; }

 private:
  void* arena_ = nullptr;
  void* pinned_ = nullptr;
  std::int64_t arena_bytes_ = 0, pinned_bytes_ = 0;
  void swap(Allocations& o) noexcept {
    std::swap(arena_, o.arena_);
    std::swap(pinned_, o.pinned_);
    std::swap(arena_bytes_, o.arena_bytes_);
    std::swap(pinned_bytes_, o.pinned_bytes_);
  }
};

}  // namespace lvt::cuda
