#pragma once
// Frozen weights in the planned layout: a linear weight quantized as bitsandbytes stores it into
// its place in a layer's weight bytes, and dequantized back (host code; the CUDA backend
// quantizes on the host too, then copies the bytes where the plan puts them).
#include <cstring>
#include <string>
#include <vector>

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

// Dequantizes a whole linear weight into out [out, in] floats.
inline void load_linear(const std::byte* base, const plan::LinearLayout& l, const PlanOptions& o,
                        float* out) {
  const i64 n = l.out * l.in;
  switch (o.quant) {
    case QuantKind::none:
      std::memcpy(out, base + l.data.offset, std::size_t(n) * sizeof(float));
      return;
    case QuantKind::int8:
      quant::dequantize_int8(reinterpret_cast<const std::int8_t*>(base + l.data.offset),
                             reinterpret_cast<const float*>(base + l.absmax.offset), n,
                             o.quant_block, out);
      return;
    case QuantKind::nf4:
    case QuantKind::fp4: {
      const i64 blocks = plan::ceil_div(n, o.quant_block);
      const auto* packed = reinterpret_cast<const std::uint8_t*>(base + l.data.offset);
      const quant::Code4 code = o.quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4;
      if (!o.double_quant) {
        quant::dequantize_4bit(code, packed, reinterpret_cast<const float*>(base + l.absmax.offset),
                               n, o.quant_block, out);
        return;
      }
      // Decode the absmax per block into the tail of `out` (it is overwritten in order: block
      // b's absmax is read before element b * block is written, and blocks <= n / 2).
      std::vector<float> absmax(static_cast<std::size_t>(blocks));
      float offset;
      std::memcpy(&offset, base + l.offset.offset, 4);
      quant::dequantize_absmax(reinterpret_cast<const std::uint8_t*>(base + l.absmax.offset),
                               reinterpret_cast<const float*>(base + l.nested.offset), offset,
                               blocks, absmax.data(),
                               reinterpret_cast<const float*>(base + l.nested_map.offset));
      quant::dequantize_4bit(code, packed, absmax.data(), n, o.quant_block, out);
      return;
    }
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
