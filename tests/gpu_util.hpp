#pragma once
// What the GPU suites share: fresh random inputs, host values rounded to a storage type (so the
// host reference sees what the kernel sees), conversions to and from storage, and a closeness
// check relative to the largest reference value that fails on NaN. Doctest must be included first.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
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

// ---- comparisons that fail on NaN and infinity ----------------------------------------------
// std::fmax and `err <= tol` both let NaN through (fmax drops it; a NaN maximum compared false
// would still pass a `!(err > tol)` test). These count every element whose value is not finite
// while the reference is, or that differs from a non-finite reference, and a comparison with any
// such element fails whatever the tolerance. They are plain host code: tests/test_gpu_util.cpp
// feeds them NaN on a machine without a GPU.

// True when got[i] is acceptable in kind: both finite, or both NaN, or the same infinity.
inline bool same_kind(double got, double want) {
  if (std::isfinite(want)) return std::isfinite(got);
  if (std::isnan(want)) return std::isnan(got);
  return got == want;
}

// Max-norm closeness: max |got - want| <= tol * max |want| over the finite references, no element
// of the wrong kind, and a reference that is not all zeros.
struct Closeness {
  double max_err = 0, max_ref = 0;
  std::size_t bad = 0;                          // elements of the wrong kind (NaN, inf)
  std::size_t first_bad = std::size_t(-1);
  bool within(double tol) const { return bad == 0 && max_ref > 0 && max_err <= tol * max_ref; }
};
template <class G, class W>
Closeness compare_close(const std::vector<G>& got, const std::vector<W>& want) {
  Closeness c;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (!same_kind(g, w)) {
      if (c.bad++ == 0) c.first_bad = i;
      continue;
    }
    if (!std::isfinite(w)) continue;
    c.max_err = std::max(c.max_err, std::fabs(g - w));
    c.max_ref = std::max(c.max_ref, std::fabs(w));
  }
  return c;
}

// Relative error in the 2-norm, ||got - want|| / max(||want||, rms_floor * sqrt(n)). `rel` is NaN
// when any element is of the wrong kind, so even a bare `rel <= tol` fails on it.
struct RelError {
  double rel = 0;
  std::size_t bad = 0;
  std::size_t first_bad = std::size_t(-1);
  bool within(double tol) const { return bad == 0 && rel <= tol; }
};
template <class G, class W>
RelError compare_rel(const std::vector<G>& got, const std::vector<W>& want, double rms_floor = 0) {
  RelError r;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (!same_kind(g, w)) {
      if (r.bad++ == 0) r.first_bad = i;
      continue;
    }
    if (!std::isfinite(w)) continue;
    num += (g - w) * (g - w);
    den += w * w;
  }
  den = std::max(den, rms_floor * rms_floor * double(want.size()));
  r.rel = r.bad ? std::nan("") : den > 0 ? std::sqrt(num / den) : (num == 0 ? 0.0 : INFINITY);
  return r;
}
// ||want - got|| / ||want||, NaN when any element is of the wrong kind.
template <class G, class W>
double rel_err(const std::vector<W>& want, const std::vector<G>& got) {
  return compare_rel(got, want).rel;
}

// The doctest forms: the first element of the wrong kind is named in the message.
template <class G, class W>
void check_close(const std::vector<G>& got, const std::vector<W>& want, double tol, const char* what) {
  REQUIRE(got.size() == want.size());
  const Closeness c = compare_close(got, want);
  INFO(what << ": max abs error " << c.max_err << ", max |reference| " << c.max_ref << " (bound "
            << tol << " relative), " << c.bad << " values of the wrong kind"
            << (c.bad ? " (first at " + std::to_string(c.first_bad) + ": got " +
                            std::to_string(double(got[c.first_bad])) + ", want " +
                            std::to_string(double(want[c.first_bad])) + ")"
                      : std::string()));
  CHECK(c.bad == 0);
  CHECK(c.max_ref > 0);
  CHECK(c.within(tol));
}
template <class G, class W>
void check_rel(const std::vector<G>& got, const std::vector<W>& want, double tol, const char* what,
               double rms_floor = 0) {
  REQUIRE(got.size() == want.size());
  const RelError r = compare_rel(got, want, rms_floor);
  INFO(what << ": relative error " << r.rel << " (bound " << tol << "), " << r.bad
            << " values of the wrong kind"
            << (r.bad ? " (first at " + std::to_string(r.first_bad) + ")" : std::string()));
  CHECK(r.bad == 0);
  CHECK(r.within(tol));
}

}  // namespace lvt::test
