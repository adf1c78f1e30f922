#pragma once
// Frozen weights in the planned layout: a linear weight quantized as bitsandbytes stores it into
// its place in a layer's weight bytes, and dequantized back (host code; the CUDA backend
// quantizes on the host too, then copies the bytes where the plan puts them).
#include <cstring>
#include <string>
#include <vector>

#include "lvt/ops/parallel.hpp"
#include "lvt/plan/layout.hpp"
#include "lvt/policies.hpp"
#include "lvt/quant/blockwise.hpp"
#include "lvt/quant/numeric.hpp"

namespace lvt::backend {

using plan::i64;

// ---- frozen weights in the planned layout ---------------------------------------------------

// n fp32 values stored in the compute precision (round to nearest even for bf16 / fp16).
inline void store_values(std::byte* dst, DType precision, const float* w, i64 n) {
  switch (precision) {
    case DType::bf16:
      for (i64 i = 0; i < n; ++i) {
        const bf16 v = to_bf16(w[i]);
        std::memcpy(dst + i * 2, &v, 2);
      }
      return;
    case DType::fp16:
      for (i64 i = 0; i < n; ++i) {
        const fp16 v = to_fp16(w[i]);
        std::memcpy(dst + i * 2, &v, 2);
      }
      return;
    default: std::memcpy(dst, w, std::size_t(n) * sizeof(float)); return;
  }
}

// Quantizes w [out, in] as the options say into its place in a layer's weight bytes.
inline void store_linear(std::byte* base, const plan::LinearLayout& l, const PlanOptions& o,
                         const float* w, const std::string& name) {
  const i64 n = l.out * l.in;
  switch (o.quant) {
    case QuantKind::none:
      store_values(base + l.data.offset, o.precision, w, n);
      return;
    case QuantKind::int8:
      quant::quantize_int8(w, n, o.quant_block, reinterpret_cast<std::int8_t*>(base + l.data.offset),
                           reinterpret_cast<float*>(base + l.absmax.offset), name);
      return;
    case QuantKind::nf4:
    case QuantKind::fp4: {
      const quant::Code4 code = o.quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4;
      const quant::Quant4 q = quant::quantize4(code, w, n, o.quant_block, o.double_quant, name);
      std::memcpy(base + l.data.offset, q.packed.data(), q.packed.size());
      if (o.double_quant) {
        std::memcpy(base + l.absmax.offset, q.absmax_codes.data(), q.absmax_codes.size());
        std::memcpy(base + l.nested.offset, q.nested_absmax.data(), q.nested_absmax.size() * 4);
        std::memcpy(base + l.offset.offset, &q.offset, 4);
        std::memcpy(base + l.nested_map.offset, quant::dynamic_map, 256 * 4);
      } else {
        std::memcpy(base + l.absmax.offset, q.absmax.data(), q.absmax.size() * 4);
      }
      std::memcpy(base + l.code.offset, code == quant::Code4::nf4 ? quant::nf4_code : quant::fp4_code,
                  16 * 4);
      return;
    }
  }
}

// Dequantizes a whole linear weight into out [out, in] floats, in chunks of 256 quantization
// blocks (one double-quantization block of absmax) spread over the host threads: each chunk
// decodes its absmax on the stack, so nothing is allocated.
inline constexpr i64 dequant_chunk_blocks = quant::nested_block;
inline void load_linear(const std::byte* base, const plan::LinearLayout& l, const PlanOptions& o,
                        float* out) {
  const i64 n = l.out * l.in;
  if (o.quant == QuantKind::none) {
    std::memcpy(out, base + l.data.offset, std::size_t(n) * sizeof(float));
    return;
  }
  const i64 block = o.quant_block, blocks = plan::ceil_div(n, block);
  const i64 chunks = plan::ceil_div(blocks, dequant_chunk_blocks);
  const quant::Code4 code = o.quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4;
  float offset = 0;
  if (o.double_quant) std::memcpy(&offset, base + l.offset.offset, 4);
  LVT_PARALLEL_FOR_IF(n >= ops::parallel::min_elems)
  for (i64 c = 0; c < chunks; ++c) {
    const i64 b0 = c * dequant_chunk_blocks;
    const i64 nb = blocks - b0 < dequant_chunk_blocks ? blocks - b0 : dequant_chunk_blocks;
    const i64 e0 = b0 * block, ne = (b0 + nb) * block < n ? nb * block : n - e0;
    if (o.quant == QuantKind::int8) {
      quant::dequantize_int8(reinterpret_cast<const std::int8_t*>(base + l.data.offset) + e0,
                             reinterpret_cast<const float*>(base + l.absmax.offset) + b0, ne,
                             int(block), out + e0);
      continue;
    }
    const auto* packed = reinterpret_cast<const std::uint8_t*>(base + l.data.offset) + e0 / 2;
    if (!o.double_quant) {
      quant::dequantize_4bit(code, packed, reinterpret_cast<const float*>(base + l.absmax.offset) + b0,
                             ne, int(block), out + e0);
      continue;
    }
    float absmax[dequant_chunk_blocks];  // b0 is a multiple of the nested block
    quant::dequantize_absmax(reinterpret_cast<const std::uint8_t*>(base + l.absmax.offset) + b0,
                             reinterpret_cast<const float*>(base + l.nested.offset) +
                                 b0 / quant::nested_block,
                             offset, nb, absmax,
                             reinterpret_cast<const float*>(base + l.nested_map.offset));
    quant::dequantize_4bit(code, packed, absmax, ne, int(block), out + e0);
  }
}

// A bitsandbytes 4-bit weight stored as it is (no requantization) when its format is the
// plan's (code, block, double quantization); false otherwise (the caller dequantizes).
inline bool store_quant4(std::byte* base, const plan::LinearLayout& L, const PlanOptions& o,
                         const quant::Quant4& q) {
  const bool nf4 = q.code == quant::Code4::nf4;
  if (q.n != L.out * L.in || q.block != o.quant_block || q.nested != o.double_quant ||
      (nf4 ? QuantKind::nf4 : QuantKind::fp4) != o.quant)
    return false;
  std::memcpy(base + L.data.offset, q.packed.data(), q.packed.size());
  if (q.nested) {
    std::memcpy(base + L.absmax.offset, q.absmax_codes.data(), q.absmax_codes.size());
    std::memcpy(base + L.nested.offset, q.nested_absmax.data(), q.nested_absmax.size() * 4);
    std::memcpy(base + L.offset.offset, &q.offset, 4);
    std::memcpy(base + L.nested_map.offset,
                q.nested_map.empty() ? quant::dynamic_map : q.nested_map.data(), 256 * 4);
  } else {
    std::memcpy(base + L.absmax.offset, q.absmax.data(), q.absmax.size() * 4);
  }
  std::memcpy(base + L.code.offset, nf4 ? quant::nf4_code : quant::fp4_code, 16 * 4);
  return true;
}

}  // namespace lvt::backend
