#pragma once
// Scalar helpers shared by host and device code: the LVT_HD marker, and bf16 / fp16 storage types
// with float conversions that round to nearest even (what __float2bfloat16_rn / __float2half_rn
// do), written with integer bit operations so host and device give the same bits.
#include <cstdint>
#include <cstring>

#ifndef LVT_HD
#if defined(__CUDACC__)
#define LVT_HD __host__ __device__
#else
#define LVT_HD
#endif
#endif

namespace lvt {

// Storage types: the 16 bits as they sit in memory (and in safetensors), no arithmetic.
struct bf16 {
  std::uint16_t bits;
};
struct fp16 {
  std::uint16_t bits;
};

LVT_HD inline std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
LVT_HD inline float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

LVT_HD inline bf16 to_bf16(float f) {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return bf16{std::uint16_t((x >> 16) | 0x40u)};  // quiet NaN
  return bf16{std::uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}
LVT_HD inline float to_float(bf16 h) { return bits_float(std::uint32_t(h.bits) << 16); }

LVT_HD inline fp16 to_fp16(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return fp16{std::uint16_t(sign | 0x7e00u)};  // NaN
  if (ax >= 0x477ff000u) return fp16{std::uint16_t(sign | 0x7c00u)};  // >= 65520: inf
  if (ax < 0x38800000u) {                                             // below 2^-14: subnormal
    if (ax <= 0x33000000u) return fp16{std::uint16_t(sign)};          // <= 2^-25: ties to 0
    const std::uint32_t e = ax >> 23;
    const std::uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14..24: value = m * 2^(e-150) = k * 2^-24
    std::uint32_t k = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (k & 1u))) ++k;
    return fp16{std::uint16_t(sign | k)};
  }
  std::uint32_t h = (ax - 0x38000000u) >> 13;  // rebias exponent 127 -> 15
  const std::uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
  return fp16{std::uint16_t(sign | h)};
}
LVT_HD inline float to_float(fp16 h) {
  const std::uint32_t sign = std::uint32_t(h.bits & 0x8000u) << 16;
  const std::uint32_t e = (h.bits >> 10) & 0x1fu, m = h.bits & 0x3ffu;
  if (e == 0x1fu) return bits_float(sign | 0x7f800000u | (m << 13));  // inf / NaN
  if (e == 0) {
    // subnormal: m * 2^-24, exact in float
    const float v = float(m) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}
LVT_HD inline float to_float(float f) { return f; }

// Convert a float to the storage type T (float, bf16 or fp16).
template <class T>
LVT_HD inline T from_float(float f);
template <>
LVT_HD inline float from_float<float>(float f) { return f; }
template <>
LVT_HD inline bf16 from_float<bf16>(float f) { return to_bf16(f); }
template <>
LVT_HD inline fp16 from_float<fp16>(float f) { return to_fp16(f); }

template <class T>
inline constexpr const char* storage_name = "?";
template <>
inline constexpr const char* storage_name<float> = "fp32";
template <>
inline constexpr const char* storage_name<bf16> = "bf16";
template <>
inline constexpr const char* storage_name<fp16> = "fp16";

// IEEE single multiply and add, never contracted into an FMA: the reference math of bitsandbytes
// is separate torch ops (code * absmax, then + offset), each rounded.
LVT_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;
  return r;
#endif
}
LVT_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  volatile float r = a + b;
  return r;
#endif
}

}  // namespace lvt
