#pragma once
// Element types of safetensors files (the format's dtype strings) and the conversions lvt
// needs: bf16 / fp16 / fp32 / fp64 to float and float to bf16 / fp16 / fp32, rounding to
// nearest-even as PyTorch's .to(dtype) does.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "lvt/error.hpp"
#include "lvt/policies.hpp"

namespace lvt::io {

enum class StDtype : std::uint8_t {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64
};

struct StDtypeInfo {
  StDtype dtype;
  const char* name;
  int bytes;
};

inline constexpr StDtypeInfo st_dtypes[] = {
    {StDtype::BOOL, "BOOL", 1},       {StDtype::U8, "U8", 1},
    {StDtype::I8, "I8", 1},           {StDtype::F8_E5M2, "F8_E5M2", 1},
    {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::F8_E8M0, "F8_E8M0", 1},
    {StDtype::I16, "I16", 2},         {StDtype::U16, "U16", 2},
    {StDtype::F16, "F16", 2},         {StDtype::BF16, "BF16", 2},
    {StDtype::I32, "I32", 4},         {StDtype::U32, "U32", 4},
    {StDtype::F32, "F32", 4},         {StDtype::I64, "I64", 8},
    {StDtype::U64, "U64", 8},         {StDtype::F64, "F64", 8},
};

constexpr const char* st_dtype_name(StDtype d) { return st_dtypes[int(d)].name; }
constexpr int st_dtype_bytes(StDtype d) { return st_dtypes[int(d)].bytes; }

// False for a name the format does not define (the caller names file and tensor).
inline bool st_dtype_from_name(std::string_view name, StDtype& out) {
  for (const auto& d : st_dtypes)
    if (name == d.name) {
      out = d.dtype;
      return true;
    }
  return false;
}

constexpr StDtype st_dtype_of(DType d) {
  return d == DType::bf16 ? StDtype::BF16 : d == DType::fp16 ? StDtype::F16 : StDtype::F32;
}

// ---- scalar conversions -------------------------------------------------------------------
inline float bf16_to_float(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t(h) << 16); }

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                              // nearest-even
  return std::uint16_t(u >> 16);
}

inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  std::uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: value = man * 2^-24, exact in float
      const float v = float(man) * 5.9604644775390625e-8f;
      u = sign | std::bit_cast<std::uint32_t>(v);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  return std::bit_cast<float>(u);
}

inline std::uint16_t float_to_fp16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                       // below 2^-14: subnormal or 0
    // value / 2^-24 rounded to nearest-even; float arithmetic is exact here.
    const float scaled = std::bit_cast<float>(a) * 16777216.0f;
    const float r = std::nearbyint(scaled);  // ties to even in the default rounding mode
    return std::uint16_t(sign | std::uint16_t(r));
  }
  std::uint32_t v = a - (112u << 23);                 // rebias exponent
  v += 0xfffu + ((v >> 13) & 1u);                     // nearest-even on the 13 dropped bits
  return std::uint16_t(sign | std::uint16_t(v >> 13));
}

// ---- array conversions --------------------------------------------------------------------
// `n` elements of `src` (any alignment) to float. Floating types only.
inline void convert_to_float(StDtype dt, const std::byte* src, std::size_t n, float* dst,
                             const std::string& what) {
  if (n == 0 && (dt == StDtype::F32 || dt == StDtype::BF16 || dt == StDtype::F16 ||
                 dt == StDtype::F64))
    return;  // pointers of empty vectors may be null: memcpy must not see them
  switch (dt) {
    case StDtype::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case StDtype::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_float(h);
      }
      return;
    case StDtype::F16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = fp16_to_float(h);
      }
      return;
    case StDtype::F64:
      for (std::size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = float(d);
      }
      return;
    default:
      throw Error(what + ": dtype " + st_dtype_name(dt) +
                  " cannot be read as floating point (expected F32, F16, BF16 or F64)");
  }
}

// `n` floats to `dt` (F32, F16, BF16) into `dst` (n * bytes).
inline void convert_from_float(const float* src, std::size_t n, StDtype dt, std::byte* dst,
                               const std::string& what) {
  if (n == 0 && (dt == StDtype::F32 || dt == StDtype::BF16 || dt == StDtype::F16 ||
                 dt == StDtype::F64))
    return;  // pointers of empty vectors may be null: memcpy must not see them
  switch (dt) {
    case StDtype::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case StDtype::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = float_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case StDtype::F16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = float_to_fp16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    default:
      throw Error(what + ": cannot write floats as dtype " + std::string(st_dtype_name(dt)) +
                  " (expected F32, F16 or BF16)");
  }
}

}  // namespace lvt::io
