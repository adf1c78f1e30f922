#pragma once
// Helpers of the ops tests: seeded random tensors and a central-difference gradient check.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace lvt_test {

using Vec = std::vector<double>;

// Uniform in [lo, hi), never all zeros.
inline Vec random_vec(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  Vec v(n);
  for (double& x : v) x = d(rng);
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Central differences of `loss` wrt every element of `param` (modified in place and restored),
// compared with `analytic`: max |analytic - numeric| <= tol * max(1e-3, max |numeric|).
// Returns the relative error so a test can also print it.
inline double fd_check(const std::string& what, Vec& param, const Vec& analytic,
                       const std::function<double()>& loss, double tol = 1e-6, double h = 1e-5) {
  REQUIRE(param.size() == analytic.size());
  double max_err = 0, max_num = 0;
  for (std::size_t i = 0; i < param.size(); i++) {
    const double x0 = param[i];
    param[i] = x0 + h;
    const double lp = loss();
    param[i] = x0 - h;
    const double lm = loss();
    param[i] = x0;
    const double num = (lp - lm) / (2 * h);
    max_err = std::fmax(max_err, std::fabs(num - analytic[i]));
    max_num = std::fmax(max_num, std::fabs(num));
  }
  const double rel = max_err / std::fmax(1e-3, max_num);
  INFO(what << ": max |analytic - numeric| = " << max_err << ", max |numeric| = " << max_num);
  CHECK(max_num > 0);  // the check must see a gradient, not zeros
  CHECK(rel <= tol);
  return rel;
}

}  // namespace lvt_test
