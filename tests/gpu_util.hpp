#pragma once
// What the GPU suites share: fresh random inputs, host values rounded to a storage type (so the
// host reference sees what the kernel sees), conversions to and from storage, and a closeness
// check relative to the largest reference value. Doctest must be included first.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "lvt/quant/numeric.hpp"

namespace lvt::test {

inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float lo = -1, float hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

template <class S>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = lvt::to_float(lvt::from_float<S>(x));
  return v;
}

template <class S>
std::vector<S> to_storage(const std::vector<float>& v) {
  std::vector<S> s(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) s[i] = lvt::from_float<S>(v[i]);
  return s;
}
template <class S>
std::vector<float> to_floats(const std::vector<S>& s) {
  std::vector<float> v(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) v[i] = lvt::to_float(s[i]);
  return v;
}

// max |got - want| <= tol * max |want| (and the reference is not all zeros).
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                        const char* what) {
  REQUIRE(got.size() == want.size());
  double max_err = 0, max_ref = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    max_err = std::fmax(max_err, std::fabs(double(got[i]) - want[i]));
    max_ref = std::fmax(max_ref, std::fabs(double(want[i])));
  }
  INFO(what << ": max abs error " << max_err << ", max |reference| " << max_ref);
  CHECK(max_ref > 0);
  CHECK(max_err <= tol * max_ref);
}

}  // namespace lvt::test
