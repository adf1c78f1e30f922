#pragma once
// The host's float loops that are not matrix products and cost real time: exp over a softmax
// row (the loss: vocab values per token; attention: a row of scores), and SwiGLU's sigmoid.
// libm's expf is a call per element the compiler cannot vectorize; here exp is a Cephes-style
// range reduction and polynomial in plain float and int arithmetic (relative error under 2 ulp
// over [-86.9, 88.7], tested), which the compiler vectorizes. Each row kernel is built for
// AVX-512, AVX2 and the baseline, the CPU picking one by its features at load time (GCC's
// target_clones), so the default x86-64 build runs wide vectors where the machine has them.
// Floating-point contraction is off (-std=c++20), so every clone gives the same bits.
//
// Sums are kept in double in 8 fixed partial sums added in a fixed order: the same bits for a
// given row on every run (and whichever thread runs it), whatever vector width ran it.
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__CUDACC__) && \
    !defined(__NVCOMPILER)
#define LVT_VMATH_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LVT_VMATH_CLONES
#endif
#if defined(__GNUC__)
#define LVT_VMATH_INLINE inline __attribute__((always_inline))
#else
#define LVT_VMATH_INLINE inline
#endif

namespace lvt::ops::vmath {

// exp(x) in float: x = n ln2 + r (n = x / ln2 rounded to nearest, |r| <= ln2 / 2), exp(r) by
// Cephes' expf polynomial, times 2^n built in the exponent bits. Below -86.98 (exp < 1.8e-38,
// near where expf goes subnormal) it is 0, above 88.72 inf. Branch-free, so loops vectorize.
LVT_VMATH_INLINE float exp(float x) {
  const float hi = 88.7228393f, lo = -86.98f;  // round(lo / ln2) = -125: 2^(n-1) stays normal
  const float xc = x > hi ? hi : x < lo ? lo : x;
  // round to nearest by the 1.5 * 2^23 trick (exact for |x / ln2| < 2^22)
  const float fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - fn * 0.693359375f;  // ln 2 in two parts (Cody-Waite)
  r = r + fn * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // 2^n for n in [-125, 128] as 2^(n-1) * 2 (2^128 is no float)
  const std::int32_t bits = (std::int32_t(fn) + 126) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  const float y = p * 2.0f * scale;
  return x < lo ? 0.0f : x > hi ? __builtin_inff() : y;
}

// max of x[0, n) (n >= 1).
LVT_VMATH_CLONES static inline float max_of(const float* x, std::int64_t n) {
  float m[16];
  for (int i = 0; i < 16; i++) m[i] = x[0];
  const std::int64_t n16 = n - n % 16;
  for (std::int64_t k = 0; k < n16; k += 16)
    for (int i = 0; i < 16; i++) m[i] = x[k + i] > m[i] ? x[k + i] : m[i];
  float r = m[0];
  for (int i = 1; i < 16; i++) r = m[i] > r ? m[i] : r;
  for (std::int64_t k = n16; k < n; k++) r = x[k] > r ? x[k] : r;
  return r;
}

// x[i] = exp(x[i] - shift) (no sum).
LVT_VMATH_CLONES static inline void exp_shift(float* x, std::int64_t n, float shift) {
  for (std::int64_t k = 0; k < n; k++) x[k] = exp(x[k] - shift);
}

// The sum of x[0, n) in double, in 8 partial sums added in a fixed order.
LVT_VMATH_CLONES static inline double sum(const float* x, std::int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const std::int64_t n8 = n - n % 8;
  for (std::int64_t k = 0; k < n8; k += 8) {
    acc[0] += double(x[k]);
    acc[1] += double(x[k + 1]);
    acc[2] += double(x[k + 2]);
    acc[3] += double(x[k + 3]);
    acc[4] += double(x[k + 4]);
    acc[5] += double(x[k + 5]);
    acc[6] += double(x[k + 6]);
    acc[7] += double(x[k + 7]);
  }
  double tail = 0;
  for (std::int64_t k = n8; k < n; k++) tail += double(x[k]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// x[i] = exp(x[i] - shift) for i in [0, n); returns the sum of the new values in double.
static inline double exp_shift_sum(float* x, std::int64_t n, float shift) {
  exp_shift(x, n, shift);
  return sum(x, n);
}

// x[i] *= s.
LVT_VMATH_CLONES static inline void scale(float* x, std::int64_t n, float s) {
  for (std::int64_t k = 0; k < n; k++) x[k] *= s;
}

// SwiGLU over one row: out = silu(g) * u.
LVT_VMATH_CLONES static inline void swiglu_row(float* out, const float* g, const float* u,
                                               std::int64_t n) {
  for (std::int64_t i = 0; i < n; i++) {
    const float s = 1.0f / (1.0f + exp(-g[i]));
    out[i] = g[i] * s * u[i];
  }
}

// SwiGLU's backward over one row: dg += dout * u * s (1 + g (1 - s)), du += dout * g * s.
LVT_VMATH_CLONES static inline void swiglu_grad_row(float* dg, float* du, const float* dout,
                                                    const float* g, const float* u,
                                                    std::int64_t n) {
  for (std::int64_t i = 0; i < n; i++) {
    const float s = 1.0f / (1.0f + exp(-g[i]));
    dg[i] += dout[i] * (u[i] * s * (1.0f + g[i] * (1.0f - s)));
    du[i] += dout[i] * (g[i] * s);
  }
}

}  // namespace lvt::ops::vmath
