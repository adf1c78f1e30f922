#pragma once
// Load a Hugging Face folder and quantize it on the fly, one tensor at a time: the projections
// (q k v o gate up down; phi3's fused tensors already split) become NF4 / FP4 (optionally double
// quantized) or int8 blocks with quant/blockwise.hpp; embeddings, norms, biases and lm_head stay
// 16-bit (bf16 bits). Host memory at the peak: the quantized model so far plus ONE float buffer
// of the largest tensor (HfModel::for_each_weight), never the float model.
#include <cstdint>
#include <string>
#include <vector>

#include "lvt/error.hpp"
#include "lvt/io/dtype.hpp"
#include "lvt/io/hf_model.hpp"
#include "lvt/policies.hpp"
#include "lvt/quant/blockwise.hpp"

namespace lvt::io {

struct Int8Blocks {
  int block = 64;
  std::vector<std::int8_t> q;
  std::vector<float> absmax;
};

struct LoadedWeight {
  WeightSlot slot;
  QuantKind quant = QuantKind::none;   // none: `bf16` holds it
  std::vector<std::uint16_t> bf16;     // dense 16-bit (bf16 bits)
  quant::Quant4 q4;                    // nf4 / fp4
  Int8Blocks q8;                       // int8

  std::int64_t storage_bytes() const {
    switch (quant) {
      case QuantKind::none: return std::int64_t(bf16.size()) * 2;
      case QuantKind::nf4:
      case QuantKind::fp4: return q4.storage_bytes();
      case QuantKind::int8: return std::int64_t(q8.q.size() + q8.absmax.size() * 4);
    }
    return 0;
  }
  // Back to float (tests, merges, the host reference backend).
  std::vector<float> dequantize() const {
    std::vector<float> out(static_cast<std::size_t>(slot.numel()));
    switch (quant) {
      case QuantKind::none:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(bf16[i]);
        break;
      case QuantKind::nf4:
      case QuantKind::fp4: quant::dequantize4(q4, out.data()); break;
      case QuantKind::int8:
        quant::dequantize_int8(q8.q.data(), q8.absmax.data(), slot.numel(), q8.block, out.data());
        break;
    }
    return out;
  }
};

struct LoadedModel {
  ModelConfig config;
  std::vector<LoadedWeight> weights;  // in HfModel::slots() order
  std::int64_t buffer_floats = 0;     // the one float buffer the load used
  std::int64_t storage_bytes() const {
    std::int64_t s = 0;
    for (const auto& w : weights) s += w.storage_bytes();
    return s;
  }
};

// `o.quant`, `o.quant_block`, `o.double_quant` pick the projections' format. With `expected`,
// config.json must match it field by field.
inline LoadedModel load_quantized(const std::filesystem::path& dir, const PlanOptions& o,
                                  const ModelConfig* expected = nullptr) {
  const HfModel model(dir, expected);
  LoadedModel out;
  out.config = model.config();
  out.buffer_floats = model.largest_slot_numel();
  out.weights.reserve(model.slots().size());
  model.for_each_weight([&](const WeightSlot& s, std::span<const float> v) {
    LoadedWeight w;
    w.slot = s;
    const bool projection = target_index(s.kind) >= 0;
    w.quant = projection ? o.quant : QuantKind::none;
    const std::string name = dir.string() + ": " + s.name;
    switch (w.quant) {
      case QuantKind::none:
        w.bf16.resize(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) w.bf16[i] = float_to_bf16(v[i]);
        break;
      case QuantKind::nf4:
      case QuantKind::fp4:
        w.q4 = quant::quantize4(o.quant == QuantKind::nf4 ? quant::Code4::nf4 : quant::Code4::fp4,
                                v.data(), std::int64_t(v.size()), o.quant_block, o.double_quant,
                                name);
        break;
      case QuantKind::int8:
        w.q8.block = o.quant_block;
        w.q8.q.resize(v.size());
        w.q8.absmax.resize(std::size_t(quant::blocks_of(std::int64_t(v.size()), o.quant_block)));
        quant::quantize_int8(v.data(), std::int64_t(v.size()), o.quant_block, w.q8.q.data(),
                             w.q8.absmax.data(), name);
        break;
    }
    out.weights.push_back(std::move(w));
  });
  return out;
}

}  // namespace lvt::io
