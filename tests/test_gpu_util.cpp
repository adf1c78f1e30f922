// The comparisons every GPU suite uses (tests/gpu_util.hpp) are host code: here they are fed NaN
// and infinity on any machine, so a kernel that writes NaN cannot pass a GPU test.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gpu_util.hpp"

using namespace lvt::test;

namespace {
const float nan_f = std::numeric_limits<float>::quiet_NaN();
const float inf_f = std::numeric_limits<float>::infinity();
const std::vector<float> want{0.5f, -1.0f, 2.0f, 0.25f};
}  // namespace

TEST_CASE("compare_close: NaN or infinity where the reference is finite fails, at any position") {
  CHECK(compare_close(want, want).within(0));
  for (std::size_t at = 0; at < want.size(); ++at) {
    for (float bad : {nan_f, inf_f, -inf_f}) {
      std::vector<float> got = want;
      got[at] = bad;
      const Closeness c = compare_close(got, want);
      INFO("position " << at << ", value " << bad);
      CHECK(c.bad == 1);
      CHECK(c.first_bad == at);
      CHECK_FALSE(c.within(1e30));  // no tolerance lets it through
    }
  }
  // What std::fmax-based code did: fmax(0, NaN) = 0, so an all-NaN output had "error 0".
  const std::vector<float> all_nan(want.size(), nan_f);
  CHECK(compare_close(all_nan, want).bad == want.size());
  CHECK_FALSE(compare_close(all_nan, want).within(1));
}

TEST_CASE("compare_close: a non-finite reference needs the same kind; tolerance and zero reference") {
  const std::vector<double> ref{1.0, std::nan(""), INFINITY, -2.0};
  CHECK(compare_close(std::vector<float>{1.0f, nan_f, inf_f, -2.0f}, ref).within(0));
  CHECK(compare_close(std::vector<float>{1.0f, 0.0f, inf_f, -2.0f}, ref).first_bad == 1);
  CHECK(compare_close(std::vector<float>{1.0f, nan_f, -inf_f, -2.0f}, ref).first_bad == 2);
  // max |err| 0.02 against max |ref| 2: relative 1e-2 passes, 9e-3 does not.
  const std::vector<float> got{0.5f, -1.0f, 2.02f, 0.25f};
  CHECK(compare_close(got, want).within(1.01e-2));
  CHECK_FALSE(compare_close(got, want).within(0.9e-2));
  // An all-zero reference proves nothing: it never passes.
  const std::vector<float> zeros(4, 0.0f);
  CHECK_FALSE(compare_close(zeros, zeros).within(1));
}

TEST_CASE("compare_rel and rel_err: NaN anywhere makes the error NaN and the check fail") {
  CHECK(compare_rel(want, want).within(0));
  CHECK(rel_err(want, want) == 0);
  for (std::size_t at = 0; at < want.size(); ++at) {
    std::vector<float> got = want;
    got[at] = nan_f;
    const RelError r = compare_rel(got, want);
    CHECK(r.bad == 1);
    CHECK(r.first_bad == at);
    CHECK(std::isnan(r.rel));
    CHECK_FALSE(r.within(1e30));
    // The bare form the step tests use: `CHECK(rel_err(want, got) <= tol)` fails on NaN.
    CHECK_FALSE(rel_err(want, got) <= 1e30);
    got[at] = inf_f;
    CHECK_FALSE(compare_rel(got, want).within(1e30));
  }
}

TEST_CASE("compare_rel: the 2-norm ratio and the per-element floor") {
  const std::vector<float> a{3.0f, 4.0f}, b{3.0f, 4.5f};
  CHECK(compare_rel(b, a).rel == doctest::Approx(0.1));  // 0.5 / 5
  // A reference of exact zeros with a floor: 1e-3 RMS per element over 2 elements.
  const std::vector<float> z(2, 0.0f), small{1e-4f, 0.0f};
  CHECK(compare_rel(small, z, 1e-3).rel == doctest::Approx(1e-4 / (1e-3 * std::sqrt(2.0))));
  CHECK(compare_rel(z, z).within(0));                       // zero error over zero norm
  CHECK_FALSE(compare_rel(small, z).within(1e30));          // nonzero error over zero norm: inf
}
