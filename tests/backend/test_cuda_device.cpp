// Device selection, the free-memory check and CUDA error messages. Runs everywhere nvcc is
// installed: without a GPU it checks the "no GPU" message (the case a test can provoke here);
// with one, the allocations and the measured free memory.
#include <doctest/doctest.h>

#include <string>

#include "lvt/backend/cuda_device.hpp"
#include "lvt/model/presets.hpp"

using namespace lvt;

TEST_CASE("a CUDA error names the file, the line and the operation") {
  try {
    LVT_CUDA_CHECK(cudaError_t(cudaErrorMemoryAllocation));
    FAIL("no throw");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("test_cuda_device.cpp:") != std::string::npos);
    CHECK(m.find("cudaErrorMemoryAllocation") != std::string::npos);
    CHECK(m.find("failed") != std::string::npos);
  }
}

TEST_CASE("a plan that does not fit the free memory is refused before allocating, with numbers") {
  PlanOptions o;
  o.seq = 1024;
  const plan::Plan p = plan::make_plan(presets::llama_3_1_70b, o);
  cuda::DeviceInfo d;
  d.name = "Test GPU";
  d.free_bytes = 20 * plan::gib;
  d.total_bytes = 24 * plan::gib;
  try {
    cuda::check_fits(p.summary, d);
    FAIL("no throw");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("Test GPU has 20.00 GiB free of 24.00 GiB") != std::string::npos);
    CHECK(m.find(plan::format_bytes(p.summary.arena_bytes)) != std::string::npos);
    CHECK(m.find("missing") != std::string::npos);
  }
  // The arena alone is not enough: the runtime margin must stay free beside it.
  d.free_bytes = p.summary.arena_bytes;
  CHECK_THROWS_WITH_AS(cuda::check_fits(p.summary, d), doctest::Contains("beside it"), Error);
  d.free_bytes = p.summary.arena_bytes + plan::cuda_runtime_margin_bytes - 1;
  CHECK_THROWS_WITH_AS(cuda::check_fits(p.summary, d), doctest::Contains("(1 B missing)"), Error);
  d.free_bytes = p.summary.arena_bytes + plan::cuda_runtime_margin_bytes;
  CHECK_NOTHROW(cuda::check_fits(p.summary, d));
  // The plan counts the margin in its context reserve: a budget that fits the plan leaves it.
  CHECK(p.summary.context_reserve_bytes == plan::cuda_context_bytes + plan::cuda_runtime_margin_bytes);
}

TEST_CASE("no GPU: a clear reason; with a GPU: the arena is one allocation of the planned size") {
  const std::string why = cuda::unavailable_reason();
  if (!why.empty()) {
    MESSAGE("no GPU here: " << why);
    const std::string head = why.substr(0, 20);
    CHECK_THROWS_WITH_AS(cuda::select_device(), doctest::Contains(head.c_str()), Error);
    return;
  }
  const cuda::DeviceInfo d = cuda::select_device();
  MESSAGE("GPU: " << d.name << " sm_" << d.sm << ", " << plan::format_bytes(d.free_bytes) << " free");
  CHECK(d.sm >= 75);
  PlanOptions o;
  o.batch = 1;
  o.seq = 256;
  const plan::Plan p = plan::make_plan(presets::llama_3_2_1b, o);
  std::size_t free0 = 0, total = 0, free1 = 0;
  LVT_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  {
    cuda::Allocations a(p.summary, d);
    LVT_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    const double used = double(free0) - double(free1);
    // The driver rounds allocations up to its page size (2 MiB).
    CHECK(used >= double(p.summary.arena_bytes));
    CHECK(used <= double(p.summary.arena_bytes) + 64.0 * double(plan::mib));
  }
  CHECK_THROWS_WITH_AS(cuda::select_device(99), doctest::Contains("does not exist"), Error);
}
