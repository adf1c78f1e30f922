#pragma once
// Blockwise quantization as bitsandbytes does it, host reference (and, under LVT_CUDA, the CUDA
// kernels in blockwise_cuda.hpp, included at the end):
//
//   4-bit NF4 / FP4  quantize_4bit: absmax (fp32) per block of `block` elements (32..4096, 64 by
//                    default), x * (1 / absmax) through bnb's decision tree, two codes per byte,
//                    the first element in the HIGH nibble; n odd: the last low nibble encodes 0.
//   double quant     the absmax vector minus its mean, blockwise 256 through the signed dynamic
//                    8-bit map: one uint8 per 4-bit block, one fp32 absmax per 256 blocks, and the
//                    fp32 mean (bnb's `offset`).
//   8-bit dynamic    quantize_blockwise: codes of the dynamic map, fp32 absmax per block.
//   int8 absmax      symmetric: round(x * 127 / absmax), absmax per block.
//
// A last partial block is padded with zeros for the math and has its own absmax, as bnb pads.
// Inputs with NaN / Inf throw lvt::Error naming the tensor and the element.
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/policies.hpp"
#include "lvt/quant/codebook.hpp"
#include "lvt/quant/numeric.hpp"

namespace lvt::quant {

inline constexpr int default_block = 64;
inline constexpr int nested_block = 256;  // bnb's double-quantization block, fixed

constexpr std::int64_t blocks_of(std::int64_t n, int block) { return (n + block - 1) / block; }
constexpr std::int64_t packed_bytes(std::int64_t n) { return (n + 1) / 2; }

// Storage bits per parameter, everything counted: codes, absmax, nested absmax and the offset
// amortized to nothing. NF4+DQ at block 64: 4 + 8/64 + 32/(64*256) = 4.127 bits.
constexpr double bits_per_param(QuantKind kind, int block, bool double_quant) {
  switch (kind) {
    case QuantKind::none: return 16.0;
    case QuantKind::int8: return 8.0 + 32.0 / block;
    case QuantKind::nf4:
    case QuantKind::fp4:
      return double_quant ? 4.0 + 8.0 / block + 32.0 / (double(block) * nested_block)
                          : 4.0 + 32.0 / block;
  }
  return 0.0;
}

constexpr bool valid_block(int block) {
  return block >= 32 && block <= 4096 && (block & (block - 1)) == 0;
}

inline void check_block(int block, std::string_view tensor) {
  if (!valid_block(block))
    throw Error("quantize '" + std::string(tensor) + "': block size " + std::to_string(block) +
                " is not a power of two from 32 to 4096 (bitsandbytes' block sizes; 64 is the "
                "QLoRA default)");
}

[[noreturn]] inline void nonfinite_error(std::string_view tensor, std::int64_t index,
                                         std::int64_t n, float v) {
  throw Error("quantize '" + std::string(tensor) + "': element " + std::to_string(index) +
              " of " + std::to_string(n) + " is " + (std::isnan(v) ? "NaN" : "Inf") +
              "; weights must be finite to quantize");
}

// absmax of x[begin, end), checking finiteness on the way.
template <class T>
inline float block_absmax(const T* x, std::int64_t begin, std::int64_t end, std::int64_t n,
                          std::string_view tensor) {
  float m = 0.0f;
  for (std::int64_t i = begin; i < end; ++i) {
    const float v = to_float(x[i]);
    if (!std::isfinite(v)) nonfinite_error(tensor, i, n, v);
    const float a = std::fabs(v);
    m = a > m ? a : m;
  }
  return m;
}

// ---- 4-bit -----------------------------------------------------------------------------------
// packed: packed_bytes(n) bytes; absmax: blocks_of(n, block) floats.
template <Code4 C, class T>
inline void quantize_4bit(const T* x, std::int64_t n, int block, std::uint8_t* packed,
                          float* absmax, std::string_view tensor) {
  check_block(block, tensor);
  const std::int64_t nb = blocks_of(n, block);
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::int64_t begin = b * block, end = begin + block < n ? begin + block : n;
    const float am = block_absmax(x, begin, end, n, tensor);
    absmax[b] = am;
    const float scale = inverse_absmax(am);
    for (std::int64_t i = begin; i < end; i += 2) {
      const float v0 = to_float(x[i]);
      const float v1 = i + 1 < end ? to_float(x[i + 1]) : 0.0f;  // bnb pads with 0
      packed[i / 2] = std::uint8_t((quantize4<C>(v0 * scale) << 4) | quantize4<C>(v1 * scale));
    }
  }
}
template <class T>
inline void quantize_4bit(Code4 c, const T* x, std::int64_t n, int block, std::uint8_t* packed,
                          float* absmax, std::string_view tensor) {
  if (c == Code4::nf4) quantize_4bit<Code4::nf4>(x, n, block, packed, absmax, tensor);
  else quantize_4bit<Code4::fp4>(x, n, block, packed, absmax, tensor);
}

// out[i] = TOut(code[q_i] * absmax[i / block]) in fp32, then rounded to TOut (as bnb's kernel).
template <Code4 C, class TOut>
inline void dequantize_4bit(const std::uint8_t* packed, const float* absmax, std::int64_t n,
                            int block, TOut* out) {
  // block by block (block even: a byte's two values share a block), no division per element
  for (std::int64_t b0 = 0; b0 < n; b0 += block) {
    const float am = absmax[b0 / block];
    const std::int64_t b1 = b0 + block < n ? b0 + block : n, pairs_end = b0 + (b1 - b0) / 2 * 2;
    for (std::int64_t i = b0; i < pairs_end; i += 2) {
      const std::uint8_t byte = packed[i / 2];
      out[i] = from_float<TOut>(dequantize4<C>(std::uint8_t(byte >> 4)) * am);
      out[i + 1] = from_float<TOut>(dequantize4<C>(std::uint8_t(byte & 0x0f)) * am);
    }
    if (pairs_end < b1)  // an odd total: the last value, in the high nibble
      out[pairs_end] = from_float<TOut>(dequantize4<C>(std::uint8_t(packed[pairs_end / 2] >> 4)) * am);
  }
}
template <class TOut>
inline void dequantize_4bit(Code4 c, const std::uint8_t* packed, const float* absmax,
                            std::int64_t n, int block, TOut* out) {
  if (c == Code4::nf4) dequantize_4bit<Code4::nf4>(packed, absmax, n, block, out);
  else dequantize_4bit<Code4::fp4>(packed, absmax, n, block, out);
}

// ---- 8-bit, dynamic map (bnb quantize_blockwise) ---------------------------------------------
// offset is subtracted first (fp32, as torch's `absmax - offset`); 0 for plain quantization.
template <class T>
inline void quantize_dynamic_blockwise(const T* x, std::int64_t n, int block, std::uint8_t* codes,
                                       float* absmax, std::string_view tensor,
                                       float offset = 0.0f) {
  if (block < 64 || block > 4096 || (block & (block - 1)))
    throw Error("quantize '" + std::string(tensor) + "': 8-bit block size " +
                std::to_string(block) + " is not a power of two from 64 to 4096");
  const std::int64_t nb = blocks_of(n, block);
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::int64_t begin = b * block, end = begin + block < n ? begin + block : n;
    float am = 0.0f;
    for (std::int64_t i = begin; i < end; ++i) {
      const float v = to_float(x[i]);
      if (!std::isfinite(v)) nonfinite_error(tensor, i, n, v);
      const float a = std::fabs(add_rn(v, -offset));
      am = a > am ? a : am;
    }
    absmax[b] = am;
    const float scale = inverse_absmax(am);
    for (std::int64_t i = begin; i < end; ++i)
      codes[i] = quantize_dynamic(dynamic_map, add_rn(to_float(x[i]), -offset) * scale);
  }
}
// out = code[q] * absmax (+ offset, fp32, a separate rounding as torch's `absmax += offset`).
inline void dequantize_dynamic_blockwise(const std::uint8_t* codes, const float* absmax,
                                         std::int64_t n, int block, float* out,
                                         float offset = 0.0f) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = mul_rn(dynamic_map[codes[i]], absmax[i / block]);
    out[i] = offset == 0.0f ? v : add_rn(v, offset);
  }
}

// ---- double quantization ----------------------------------------------------------------------
// The mean of the absmax vector: fp64 sums of consecutive 256-element chunks, the chunk sums
// added in order, divided by n, rounded to fp32. Deterministic, and the CUDA kernel computes the
// same bits. (torch's fp32 `absmax.mean()` may differ from it in the last bit or so; the offset
// is stored in the checkpoint, so a file stays self-consistent either way.)
inline float absmax_mean(const float* absmax, std::int64_t n) {
  double total = 0.0;
  for (std::int64_t c = 0; c < n; c += nested_block) {
    double s = 0.0;
    const std::int64_t end = c + nested_block < n ? c + nested_block : n;
    for (std::int64_t i = c; i < end; ++i) s += double(absmax[i]);
    total += s;
  }
  return n ? float(total / double(n)) : 0.0f;
}

// codes: nblocks bytes; nested_absmax: blocks_of(nblocks, 256) floats.
inline void double_quantize(const float* absmax, std::int64_t nblocks, float offset,
                            std::uint8_t* codes, float* nested_absmax, std::string_view tensor) {
  quantize_dynamic_blockwise(absmax, nblocks, nested_block, codes, nested_absmax,
                             std::string(tensor) + ".absmax", offset);
}
// `code_map`: the 256-entry map the codes index (a checkpoint's nested_quant_map; lvt's own
// dynamic_map by default).
inline void dequantize_absmax(const std::uint8_t* codes, const float* nested_absmax,
                              float offset, std::int64_t nblocks, float* absmax,
                              const float* code_map = dynamic_map) {
  for (std::int64_t b = 0; b < nblocks; ++b)
    absmax[b] = add_rn(mul_rn(code_map[codes[b]], nested_absmax[b / nested_block]), offset);
}

// ---- int8, symmetric absmax --------------------------------------------------------------------
// q = round-half-even(x * (127 / absmax)); x = q * absmax / 127 (bnb's int8 vectorwise formulas,
// per block). An all-zero block stores q = 0.
template <class T>
inline void quantize_int8(const T* x, std::int64_t n, int block, std::int8_t* q, float* absmax,
                          std::string_view tensor) {
  check_block(block, tensor);
  const std::int64_t nb = blocks_of(n, block);
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::int64_t begin = b * block, end = begin + block < n ? begin + block : n;
    const float am = block_absmax(x, begin, end, n, tensor);
    absmax[b] = am;
    const float scale = 127.0f / am;
    for (std::int64_t i = begin; i < end; ++i)
      q[i] = am == 0.0f ? std::int8_t(0)
                        : std::int8_t(std::nearbyint(to_float(x[i]) * scale));
  }
}
inline constexpr float inv127 = 7.874015718698502e-3f;  // bnb's int8 dequantization constant
template <class TOut>
inline void dequantize_int8(const std::int8_t* q, const float* absmax, std::int64_t n, int block,
                            TOut* out) {
  for (std::int64_t b0 = 0; b0 < n; b0 += block) {
    const float am = absmax[b0 / block];
    const std::int64_t b1 = b0 + block < n ? b0 + block : n;
    for (std::int64_t i = b0; i < b1; ++i) out[i] = from_float<TOut>(mul_rn(float(q[i]) * am, inv127));
  }
}

// ---- an owning 4-bit tensor, as a bnb Params4bit + QuantState holds it -----------------------
struct Quant4 {
  Code4 code = Code4::nf4;
  int block = default_block;
  std::int64_t n = 0;
  std::vector<std::uint8_t> packed;  // packed_bytes(n)
  std::vector<float> absmax;         // blocks_of(n, block) when !nested, else empty
  bool nested = false;
  std::vector<std::uint8_t> absmax_codes;  // blocks_of(n, block) when nested
  std::vector<float> nested_absmax;        // blocks_of(blocks, 256) when nested
  float offset = 0.0f;
  std::vector<float> nested_map;  // the 256-entry map of absmax_codes; empty: lvt's dynamic_map

  std::int64_t blocks() const { return blocks_of(n, block); }
  // The per-block absmax the dequantizer multiplies by (decoded from the nested codes if DQ).
  std::vector<float> block_absmax() const {
    if (!nested) return absmax;
    std::vector<float> a(static_cast<std::size_t>(blocks()));
    dequantize_absmax(absmax_codes.data(), nested_absmax.data(), offset, blocks(), a.data(),
                      nested_map.empty() ? dynamic_map : nested_map.data());
    return a;
  }
  std::int64_t storage_bytes() const {
    return std::int64_t(packed.size() + absmax.size() * 4 + absmax_codes.size() +
                        nested_absmax.size() * 4 + (nested ? 4 : 0));
  }
};

template <class T>
inline Quant4 quantize4(Code4 code, const T* x, std::int64_t n, int block, bool double_quant,
                        std::string_view tensor) {
  Quant4 q;
  q.code = code;
  q.block = block;
  q.n = n;
  check_block(block, tensor);
  q.packed.resize(std::size_t(packed_bytes(n)));
  std::vector<float> absmax(std::size_t(blocks_of(n, block)));
  quantize_4bit(code, x, n, block, q.packed.data(), absmax.data(), tensor);
  if (double_quant) {
    q.nested = true;
    q.offset = absmax_mean(absmax.data(), std::int64_t(absmax.size()));
    q.absmax_codes.resize(absmax.size());
    q.nested_absmax.resize(std::size_t(blocks_of(std::int64_t(absmax.size()), nested_block)));
    double_quantize(absmax.data(), std::int64_t(absmax.size()), q.offset, q.absmax_codes.data(),
                    q.nested_absmax.data(), tensor);
  } else {
    q.absmax = std::move(absmax);
  }
  return q;
}

template <class TOut>
inline void dequantize4(const Quant4& q, TOut* out) {
  const std::vector<float> absmax = q.block_absmax();
  dequantize_4bit(q.code, q.packed.data(), absmax.data(), q.n, q.block, out);
}

}  // namespace lvt::quant

#if LVT_CUDA
#include "lvt/quant/blockwise_cuda.hpp"
#endif
