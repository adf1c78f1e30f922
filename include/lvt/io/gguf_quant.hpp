#pragma once
// ggml's tensor types as GGUF stores them: the type ids, block sizes and bytes per block, and
// dequantization to fp32 of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and the
// K-quants Q2_K..Q6_K, exactly as ggml defines them (ggml-quants.c dequantize_row_*; the same
// arithmetic as gguf-py's quants.py, which the tests compare against bit for bit). Quantizers to
// Q8_0 and Q4_0 (and F16 / BF16) give gguf-py's `quantize` bytes, for the GGUF writer.
//
// Every dequantizer evaluates the same float expressions in the same order as the reference
// (e.g. Q4_K: (d * sc) * q - (dmin * m)). A compiler allowed to fuse a*b - c into one FMA would
// round differently, so these functions switch contraction off (clang pragma / GCC attribute).
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "lvt/error.hpp"
#include "lvt/io/dtype.hpp"

#if defined(__clang__)
#define LVT_GGUF_NO_CONTRACT_FN
#define LVT_GGUF_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__) && !defined(__CUDACC__)
#define LVT_GGUF_NO_CONTRACT_FN __attribute__((optimize("fp-contract=off")))
#define LVT_GGUF_NO_CONTRACT_BODY
#else
#define LVT_GGUF_NO_CONTRACT_FN
#define LVT_GGUF_NO_CONTRACT_BODY
#endif

namespace lvt::io {

// ggml_type ids (ggml.h; gguf-py GGMLQuantizationType). Gaps are ids ggml retired.
enum class GgmlType : std::uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18,
  IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26,
  I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40,
  Q1_0 = 41
};

inline constexpr int ggml_qk_k = 256;  // QK_K: elements per K-quant super-block

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  int block_elems;  // elements per block (1 for plain types)
  int block_bytes;  // bytes per block
  bool dequantizable;  // lvt converts it to fp32
};

// Block sizes as ggml / gguf-py's GGML_QUANT_SIZES define them.
inline constexpr GgmlTypeInfo ggml_types[] = {
    {GgmlType::F32, "F32", 1, 4, true},
    {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", 32, 2 + 16, true},
    {GgmlType::Q4_1, "Q4_1", 32, 2 + 2 + 16, true},
    {GgmlType::Q5_0, "Q5_0", 32, 2 + 4 + 16, true},
    {GgmlType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16, true},
    {GgmlType::Q8_0, "Q8_0", 32, 2 + 32, true},
    {GgmlType::Q8_1, "Q8_1", 32, 4 + 4 + 32, false},
    {GgmlType::Q2_K, "Q2_K", 256, 2 + 2 + 256 / 16 + 256 / 4, true},
    {GgmlType::Q3_K, "Q3_K", 256, 2 + 256 / 4 + 256 / 8 + 12, true},
    {GgmlType::Q4_K, "Q4_K", 256, 2 + 2 + 256 / 2 + 12, true},
    {GgmlType::Q5_K, "Q5_K", 256, 2 + 2 + 256 / 2 + 256 / 8 + 12, true},
    {GgmlType::Q6_K, "Q6_K", 256, 2 + 256 / 2 + 256 / 4 + 256 / 16, true},
    {GgmlType::Q8_K, "Q8_K", 256, 4 + 256 + 256 / 8, false},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 2 + 256 / 4, false},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 2 + 256 / 4 + 256 / 32, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 2 + 256 / 4 + 256 / 8, false},
    {GgmlType::IQ1_S, "IQ1_S", 256, 2 + 256 / 8 + 256 / 16, false},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 2 + 16, true},
    {GgmlType::IQ3_S, "IQ3_S", 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4, false},
    {GgmlType::IQ2_S, "IQ2_S", 256, 2 + 256 / 4 + 256 / 16, false},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 2 + 2 + 256 / 2 + 256 / 64, false},
    {GgmlType::I8, "I8", 1, 1, false},
    {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},
    {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},
    {GgmlType::IQ1_M, "IQ1_M", 256, 256 / 8 + 256 / 16 + 256 / 32, false},
    {GgmlType::BF16, "BF16", 1, 2, true},
    {GgmlType::TQ1_0, "TQ1_0", 256, 2 + 4 * 13, false},
    {GgmlType::TQ2_0, "TQ2_0", 256, 2 + 64, false},
    {GgmlType::MXFP4, "MXFP4", 32, 1 + 16, false},
    {GgmlType::NVFP4, "NVFP4", 64, 4 + 32, false},
    {GgmlType::Q1_0, "Q1_0", 128, 2 + 16, false},
};

// The table entry of a type id, or nullptr for an id ggml does not define.
inline const GgmlTypeInfo* ggml_type_info(std::uint32_t id) {
  for (const auto& t : ggml_types)
    if (std::uint32_t(t.type) == id) return &t;
  return nullptr;
}
inline const GgmlTypeInfo& ggml_type_info(GgmlType t) { return *ggml_type_info(std::uint32_t(t)); }
inline const char* ggml_type_name(GgmlType t) { return ggml_type_info(t).name; }

// IQ4_NL's non-linear 4-bit codebook (ggml-common.h kvalues_iq4nl).
inline constexpr std::int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                 1,    13,   25,  38,  53,  69,  89,  113};

namespace detail_gq {

inline std::uint16_t u16_at(const std::uint8_t* p) { return std::uint16_t(p[0] | (p[1] << 8)); }
inline float f16_at(const std::uint8_t* p) { return fp16_to_float(u16_at(p)); }
inline std::uint32_t u32_at(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}
inline void put_u16(std::uint8_t* p, std::uint16_t v) {
  p[0] = std::uint8_t(v);
  p[1] = std::uint8_t(v >> 8);
}

// The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K / Q5_K
// (ggml-quants.c get_scale_min_k4): j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 from
// the nibbles of byte j + 4 plus the top 2 bits of bytes j - 4 and j.
inline void scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = std::uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = std::uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// ---- one block each: `b` the block's bytes, `y` its block_elems outputs ----

LVT_GGUF_NO_CONTRACT_FN inline void deq_q4_0(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const float d = f16_at(b);
  const std::uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((qs[j] & 0xF) - 8);
    y[j + 16] = d * float((qs[j] >> 4) - 8);
  }
}

LVT_GGUF_NO_CONTRACT_FN inline void deq_q4_1(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const float d = f16_at(b), m = f16_at(b + 2);
  const std::uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(qs[j] & 0xF) + m;
    y[j + 16] = d * float(qs[j] >> 4) + m;
  }
}

// Q5_0: 4 bytes of fifth bits (bit j of the little-endian word for element j), then nibbles.
LVT_GGUF_NO_CONTRACT_FN inline void deq_q5_0(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const float d = f16_at(b);
  const std::uint32_t qh = u32_at(b + 2);
  const std::uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int x0 = int((qs[j] & 0xF) | (((qh >> j) & 1u) << 4)) - 16;
    const int x1 = int((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - 16;
    y[j] = d * float(x0);
    y[j + 16] = d * float(x1);
  }
}

LVT_GGUF_NO_CONTRACT_FN inline void deq_q5_1(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const float d = f16_at(b), m = f16_at(b + 2);
  const std::uint32_t qh = u32_at(b + 4);
  const std::uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const unsigned x0 = (qs[j] & 0xF) | (((qh >> j) & 1u) << 4);
    const unsigned x1 = (qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * float(x0) + m;
    y[j + 16] = d * float(x1) + m;
  }
}

inline void deq_q8_0(const std::uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = float(std::int8_t(b[2 + j])) * d;
}

inline void deq_iq4_nl(const std::uint8_t* b, float* y) {
  const float d = f16_at(b);
  const std::uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(iq4nl_values[qs[j] & 0xF]);
    y[j + 16] = d * float(iq4nl_values[qs[j] >> 4]);
  }
}

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Element
// e = 128 h + 32 s + l (h half, s 2-bit shift, l 0..31) is bits 2s of qs[32 h + l]; its
// 16-element group e / 16 picks the scale byte.
LVT_GGUF_NO_CONTRACT_FN inline void deq_q2_k(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const std::uint8_t* sc = b;
  const std::uint8_t* qs = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const std::uint8_t g = sc[e / 16];
    const float dl = d * float(g & 0xF), ml = dmin * float(g >> 4);
    y[e] = dl * float((qs[32 * h + l] >> (2 * s)) & 3) - ml;
  }
}

// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales: low nibbles in bytes 0..7, the
// top 2 bits in bytes 8..11), d. The value is the 2-bit part minus 4 where the hmask bit is 0.
LVT_GGUF_NO_CONTRACT_FN inline void deq_q3_k(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const std::uint8_t* hm = b;
  const std::uint8_t* qs = b + 32;
  const std::uint8_t* sp = b + 96;
  const float d = f16_at(b + 108);
  int scales[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = (i < 8 ? sp[i] : sp[i - 8] >> 4) & 0xF;
    const int hi = (sp[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = (lo | (hi << 4)) - 32;
  }
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const int low = (qs[32 * h + l] >> (2 * s)) & 3;
    const int high = (hm[l] >> (e / 32)) & 1;
    const float dl = d * float(scales[e / 16]);
    y[e] = dl * float(low - (high ? 0 : 4));
  }
}

// Q4_K: d, dmin, scales[12] (eight 6-bit scale/min pairs), qs[128]. Element e = 64 c + 32 s + l
// is nibble s of qs[32 c + l], in sub-block e / 32.
LVT_GGUF_NO_CONTRACT_FN inline void deq_q4_k(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const std::uint8_t* sp = b + 4;
  const std::uint8_t* qs = b + 16;
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    scale_min_k4(j, sp, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    const int c = j / 2, s = j % 2;
    for (int l = 0; l < 32; ++l) y[32 * j + l] = d1 * float((qs[32 * c + l] >> (4 * s)) & 0xF) - m1;
  }
}

// Q5_K: as Q4_K with qh[32] before qs: bit e / 32 of qh[e % 32] is the fifth bit.
LVT_GGUF_NO_CONTRACT_FN inline void deq_q5_k(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const std::uint8_t* sp = b + 4;
  const std::uint8_t* qh = b + 16;
  const std::uint8_t* qs = b + 48;
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    scale_min_k4(j, sp, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    const int c = j / 2, s = j % 2;
    for (int l = 0; l < 32; ++l) {
      const unsigned q = ((qs[32 * c + l] >> (4 * s)) & 0xF) | (((qh[l] >> j) & 1u) << 4);
      y[32 * j + l] = d1 * float(q) - m1;
    }
  }
}

// Q6_K: ql[128] (low nibbles), qh[64] (2 high bits), scales[16] int8, d. Element
// e = 128 h + 64 s + m has nibble s of ql[64 h + m]; with e = 128 h + 32 t + l its high bits
// are bits 2t of qh[32 h + l]. Value = 6 bits - 32, times d * scales[e / 16].
LVT_GGUF_NO_CONTRACT_FN inline void deq_q6_k(const std::uint8_t* b, float* y) {
  LVT_GGUF_NO_CONTRACT_BODY
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const std::uint8_t* sc = b + 192;
  const float d = f16_at(b + 208);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e / 64) % 2, m = e % 64, t = (e / 32) % 4, l = e % 32;
    const int low = (ql[64 * h + m] >> (4 * s)) & 0xF;
    const int high = (qh[32 * h + l] >> (2 * t)) & 3;
    const float ds = d * float(std::int8_t(sc[e / 16]));
    y[e] = ds * float((low | (high << 4)) - 32);
  }
}

}  // namespace detail_gq

// Bytes of `n` elements of `t`; n must be a multiple of the block size.
inline std::uint64_t ggml_row_bytes(GgmlType t, std::uint64_t n) {
  const GgmlTypeInfo& i = ggml_type_info(t);
  return n / std::uint64_t(i.block_elems) * std::uint64_t(i.block_bytes);
}

// `n` elements (a multiple of the block size) stored as `t` at `src` (any alignment) to fp32.
// `what` names the file and tensor in errors.
inline void ggml_dequantize(GgmlType t, const std::byte* src, std::size_t n, float* dst,
                            const std::string& what) {
  using namespace detail_gq;
  const GgmlTypeInfo& info = ggml_type_info(t);
  if (!info.dequantizable)
    throw Error(what + ": ggml type " + info.name +
                " cannot be read (lvt dequantizes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
                "IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)");
  if (n % std::size_t(info.block_elems) != 0)
    throw Error(what + ": " + std::to_string(n) + " elements is not a multiple of the " +
                info.name + " block size " + std::to_string(info.block_elems));
  if (n == 0) return;
  const auto* p = reinterpret_cast<const std::uint8_t*>(src);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, n * 4); return;
    case GgmlType::F16: convert_to_float(StDtype::F16, src, n, dst, what); return;
    case GgmlType::BF16: convert_to_float(StDtype::BF16, src, n, dst, what); return;
    default: break;
  }
  void (*block)(const std::uint8_t*, float*) = nullptr;
  switch (t) {
    case GgmlType::Q4_0: block = deq_q4_0; break;
    case GgmlType::Q4_1: block = deq_q4_1; break;
    case GgmlType::Q5_0: block = deq_q5_0; break;
    case GgmlType::Q5_1: block = deq_q5_1; break;
    case GgmlType::Q8_0: block = deq_q8_0; break;
    case GgmlType::IQ4_NL: block = deq_iq4_nl; break;
    case GgmlType::Q2_K: block = deq_q2_k; break;
    case GgmlType::Q3_K: block = deq_q3_k; break;
    case GgmlType::Q4_K: block = deq_q4_k; break;
    case GgmlType::Q5_K: block = deq_q5_k; break;
    case GgmlType::Q6_K: block = deq_q6_k; break;
    default: break;
  }
  const std::size_t be = std::size_t(info.block_elems), bb = std::size_t(info.block_bytes);
  for (std::size_t i = 0; i < n / be; ++i) block(p + i * bb, dst + i * be);
}

// ---- quantizers (gguf-py quants.py / ggml-quants.c quantize_row_*_ref) -----------------------

// Q8_0: d = max|x| / 127, q = round-half-away(x / d) (x * (1/d) in float), d stored as fp16.
inline void ggml_quantize_q8_0(const float* x, std::size_t n, std::byte* out) {
  if (n % 32 != 0) throw Error("ggml_quantize_q8_0: " + std::to_string(n) +
                               " elements is not a multiple of 32");
  auto* o = reinterpret_cast<std::uint8_t*>(out);
  for (std::size_t b = 0; b < n / 32; ++b, x += 32, o += 34) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    detail_gq::put_u16(o, float_to_fp16(d));
    for (int j = 0; j < 32; ++j) {
      const float v = x[j] * id;
      o[2 + j] = std::uint8_t(std::int8_t(std::round(v)));  // std::round: half away from zero
    }
  }
}

// Q4_0: m = the element of largest magnitude (the first such), d = m / -8, q = trunc(x / d +
// 8.5) clamped to 15. The sum is formed as gguf-py does it: x * (1/d) exactly in double, + 8.5
// in double, rounded to float, then truncated (ggml's C reference agrees where it fuses the
// multiply-add; without FMA it may differ by one step on rare inputs).
inline void ggml_quantize_q4_0(const float* x, std::size_t n, std::byte* out) {
  if (n % 32 != 0) throw Error("ggml_quantize_q4_0: " + std::to_string(n) +
                               " elements is not a multiple of 32");
  auto* o = reinterpret_cast<std::uint8_t*>(out);
  for (std::size_t b = 0; b < n / 32; ++b, x += 32, o += 18) {
    float amax = std::fabs(x[0]), max = x[0];  // numpy's argmax: the first largest
    for (int j = 1; j < 32; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    detail_gq::put_u16(o, float_to_fp16(d));
    auto q = [&](int j) {
      const float s = float(double(x[j]) * double(id) + 8.5);
      const int t = int(std::trunc(s));
      return std::uint8_t(t > 15 ? 15 : t < 0 ? 0 : t);
    };
    for (int j = 0; j < 16; ++j) o[2 + j] = std::uint8_t(q(j) | (q(j + 16) << 4));
  }
}

// F16 / BF16 from float, round to nearest even (numpy astype(float16); ggml fp32_to_bf16).
inline void ggml_quantize(GgmlType t, const float* x, std::size_t n, std::byte* out) {
  switch (t) {
    case GgmlType::F32: if (n) std::memcpy(out, x, n * 4); return;
    case GgmlType::F16: convert_from_float(x, n, StDtype::F16, out, "ggml_quantize"); return;
    case GgmlType::BF16: convert_from_float(x, n, StDtype::BF16, out, "ggml_quantize"); return;
    case GgmlType::Q8_0: ggml_quantize_q8_0(x, n, out); return;
    case GgmlType::Q4_0: ggml_quantize_q4_0(x, n, out); return;
    default:
      throw Error(std::string("ggml_quantize: lvt does not quantize to ") + ggml_type_name(t) +
                  " (F32, F16, BF16, Q8_0, Q4_0)");
  }
}

}  // namespace lvt::io
