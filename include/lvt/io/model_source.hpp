#pragma once
// One door for a pretrained base: a Hugging Face safetensors folder, a bitsandbytes 4-bit folder
// (as transformers saves one) or a llama .gguf file. `ModelSource` opens any of them, checks it
// against an expected ModelConfig when given, and yields the model description and every weight
// under its canonical (Hugging Face) name: as floats through one reused buffer, or, for a bnb
// 4-bit projection, first offered as it is stored (a loader whose format matches keeps it bit for
// bit). Run::from_pretrained consumes this one stream; a new format touches io/ only.
//
//   const io::ModelSource src(path, &expected);   // throws Error naming the file and field
//   src.for_each_weight([&](const WeightSlot& s, std::span<const float> v) { ... },
//                       [&](const WeightSlot& s, const quant::Quant4& q) { return took_it; });
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/bnb4bit.hpp"
#include "lvt/io/gguf_model.hpp"
#include "lvt/io/hf_model.hpp"

namespace lvt::io {

// config.json with a bitsandbytes 4-bit `quantization_config` (BitsAndBytesConfig.to_dict()).
inline bool is_bnb4bit_folder(const std::filesystem::path& dir) {
  std::ifstream f(dir / "config.json", std::ios::binary);
  if (!f) return false;
  const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("quantization_config")) return false;
  const nlohmann::json& q = j["quantization_config"];
  return q.is_object() && q.value("quant_method", std::string()) == "bitsandbytes" &&
         q.value("load_in_4bit", false);
}

// An opened bnb 4-bit folder: projections stored as packed 4-bit codes + quant state (read_quant4
// checks each), everything else (embeddings, norms, head) as floats.
class Bnb4bitModel : public SlotReader<Bnb4bitModel> {
 public:
  explicit Bnb4bitModel(const std::filesystem::path& dir, const ModelConfig* expected = nullptr)
      : dir_(dir), config_(read_hf_config(dir / "config.json")), set_(SafetensorsSet::open_dir(dir)) {
    if (expected) {
      const std::string diff = config_mismatch(*expected, config_);
      if (!diff.empty()) throw Error((dir / "config.json").string() + ": " + diff);
    }
    slots_ = weight_slots(config_);
  }

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const std::vector<WeightSlot>& slots() const { return slots_; }

  // Slot `i` as stored in 4 bits, when it is a quantized projection of its own (not a row range
  // of a fused phi3 tensor): else false.
  bool quant4(std::size_t i, quant::Quant4& out) const {
    const WeightSlot& s = slots_[i];
    std::string name = s.name;
    std::int64_t row0 = 0;
    std::vector<std::int64_t> fused_shape;
    if (target_index(s.kind) < 0 || fused_source(config_, s, name, row0, fused_shape) ||
        bnb::quantized_weights_named(set_, name).empty())
      return false;
    bnb::LoadedWeight w = bnb::read_quant4(set_, name);
    check_elems(name, w.q.n, s.numel());
    out = std::move(w.q);
    return true;
  }

  // Slot `i` as floats (4-bit projections dequantized; a fused tensor's rows of this slot).
  void read(std::size_t i, std::span<float> out) const {
    const WeightSlot& s = slots_[i];
    std::string name = s.name;
    std::int64_t row0 = 0;
    std::vector<std::int64_t> fused_shape;
    const bool fused = fused_source(config_, s, name, row0, fused_shape);
    if (std::int64_t(out.size()) != s.numel())
      throw Error(dir_.string() + ": slot '" + s.name + "' needs " + std::to_string(s.numel()) +
                  " floats, the output holds " + std::to_string(out.size()));
    if (target_index(s.kind) >= 0 && !bnb::quantized_weights_named(set_, name).empty()) {
      const bnb::LoadedWeight w = bnb::read_quant4(set_, name);
      check_elems(name, w.q.n, fused ? fused_shape[0] * fused_shape[1] : s.numel());
      std::vector<float> all(static_cast<std::size_t>(w.q.n));
      quant::dequantize4(w.q, all.data());
      std::copy_n(all.data() + row0 * s.shape.back(), s.numel(), out.data());
      return;
    }
    const SafetensorsSet::Ref* ref = set_.find(name);
    if (!ref) throw Error(dir_.string() + ": tensor '" + name + "' is missing");
    const std::int64_t row_elems = ref->info->shape.size() == 2 ? ref->info->shape[1] : 1;
    const auto bytes = ref->file->bytes(*ref->info);
    const std::size_t eb = std::size_t(st_dtype_bytes(ref->info->dtype));
    if (std::int64_t(bytes.size() / eb) < (row0 * row_elems + s.numel()))
      throw Error(ref->file->path().string() + ": tensor '" + name + "' is too small for '" +
                  s.name + "'");
    convert_to_float(ref->info->dtype, bytes.data() + std::size_t(row0 * row_elems) * eb,
                     std::size_t(s.numel()), out.data(),
                     ref->file->path().string() + ": tensor '" + name + "'");
  }
  using SlotReader<Bnb4bitModel>::read;

 private:
  void check_elems(const std::string& name, std::int64_t have, std::int64_t want) const {
    if (have != want)
      throw Error((dir_ / name).string() + ": quant state declares " + std::to_string(have) +
                  " elements, the model needs " + std::to_string(want));
  }

  std::filesystem::path dir_;
  ModelConfig config_;
  SafetensorsSet set_;
  std::vector<WeightSlot> slots_;
};

class ModelSource {
 public:
  enum class Format { hf, bnb4bit, gguf };
  using FloatVisit = std::function<void(const WeightSlot&, std::span<const float>)>;
  // Returns true when it took the stored 4-bit weight; false: the slot comes again as floats.
  using Quant4Visit = std::function<bool(const WeightSlot&, const quant::Quant4&)>;

  // `path`: a .gguf file, a bnb 4-bit folder, or a Hugging Face folder (anything else: the
  // folder's errors, naming config.json or the missing tensor).
  explicit ModelSource(const std::filesystem::path& path, const ModelConfig* expected = nullptr)
      : path_(path), m_(open(path, expected)) {}

  const std::filesystem::path& path() const { return path_; }
  Format format() const { return Format(m_.index()); }
  const ModelConfig& config() const {
    return std::visit([](const auto& m) -> const ModelConfig& { return m.config(); }, m_);
  }
  const std::vector<WeightSlot>& slots() const {
    return std::visit([](const auto& m) -> const std::vector<WeightSlot>& { return m.slots(); }, m_);
  }
  std::int64_t largest_slot_numel() const {
    return std::visit([](const auto& m) { return m.largest_slot_numel(); }, m_);
  }
  std::vector<float> read(std::size_t i) const {
    return std::visit([&](const auto& m) { return m.read(i); }, m_);
  }
  void read(std::size_t i, std::span<float> out) const {
    std::visit([&](const auto& m) { m.read(i, out); }, m_);
  }
  // The opened file when the source is a .gguf (its metadata: name, tokenizer), else null.
  const GgufModel* gguf() const { return std::get_if<GgufModel>(&m_); }

  // Every weight in slot order. The float values live in one reused buffer (valid during the
  // call); with `take4`, a bnb folder's 4-bit projections are offered as stored first.
  void for_each_weight(const FloatVisit& visit, const Quant4Visit& take4 = {}) const {
    if (const auto* b = std::get_if<Bnb4bitModel>(&m_); b && take4) {
      std::vector<float> buf;
      quant::Quant4 q;
      for (std::size_t i = 0; i < b->slots().size(); ++i) {
        const WeightSlot& s = b->slots()[i];
        if (b->quant4(i, q) && take4(s, q)) continue;
        buf.resize(std::size_t(s.numel()));
        b->read(i, std::span<float>(buf));
        visit(s, buf);
      }
      return;
    }
    std::visit([&](const auto& m) { m.for_each_weight(visit); }, m_);
  }

 private:
  using Model = std::variant<HfModel, Bnb4bitModel, GgufModel>;
  static Model open(const std::filesystem::path& path, const ModelConfig* expected) {
    if (path.extension() == ".gguf" && std::filesystem::is_regular_file(path))
      return Model(std::in_place_type<GgufModel>, path, expected);
    if (is_bnb4bit_folder(path)) return Model(std::in_place_type<Bnb4bitModel>, path, expected);
    return Model(std::in_place_type<HfModel>, path, expected);
  }

  std::filesystem::path path_;
  Model m_;
};

}  // namespace lvt::io
