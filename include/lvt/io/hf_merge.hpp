#pragma once
// Merge a LoRA adapter into its base model: W' = W + scale * B A for every adapted projection,
// written as a bf16 Hugging Face folder. The base is a Hugging Face folder or a llama .gguf file
// (its weights dequantized under their Hugging Face names, io/gguf_model.hpp; config.json
// written from its metadata; the tokenizer files are the text layer's, text/gguf_tokenizer.hpp). Tensors stream one at a time (peak host memory: the
// largest tensor as float plus its bf16 write buffer); phi3's fused qkv_proj / gate_up_proj get
// each part's delta in its own row range. Files other than weights (tokenizer, generation
// config) are copied; config.json is copied with torch_dtype set to bfloat16.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/gguf_model.hpp"
#include "lvt/io/hf_config.hpp"
#include "lvt/io/hf_model.hpp"
#include "lvt/io/peft.hpp"
#include "lvt/io/safetensors.hpp"

namespace lvt::io {

// rows [row_begin, row_begin + out) of a row-major matrix with `in` columns += scale * B A.
inline void add_lora_delta(float* w, std::int64_t row_begin, const LoraPair& p, int r,
                           double scale) {
  for (std::int64_t o = 0; o < p.out; ++o) {
    float* row = w + (row_begin + o) * p.in;
    for (int k = 0; k < r; ++k) {
      const float b = float(scale * p.B[std::size_t(o * r + k)]);
      const float* a = p.A.data() + std::size_t(k) * std::size_t(p.in);
      for (std::int64_t i = 0; i < p.in; ++i) row[i] += b * a[i];
    }
  }
}

// A canonical weight slot (HF layout) += scale * B A when the adapter targets it: the merge of
// merge_lora_gguf and of the GGUF writer (io/gguf_export.hpp). True when a pair was merged.
inline bool add_lora_to_slot(const WeightSlot& s, std::span<float> w, const LoraAdapter& adapter) {
  const int t = target_index(s.kind);
  if (t < 0) return false;
  const LoraPair* p = adapter.find(s.layer, t);
  if (!p) return false;
  if (std::int64_t(w.size()) != p->out * p->in)
    throw Error("merge: slot '" + s.name + "' holds " + std::to_string(w.size()) + " values, its LoRA pair is " +
                std::to_string(p->out) + " x " + std::to_string(p->in));
  add_lora_delta(w.data(), 0, *p, adapter.config.r, adapter.config.scale());
  return true;
}

struct MergeStats {
  int tensors = 0;
  int merged_pairs = 0;
  std::uint64_t bytes_written = 0;
};

inline MergeStats merge_lora(const std::filesystem::path& model_dir,
                             const std::filesystem::path& adapter_dir,
                             const std::filesystem::path& out_dir,
                             std::uint64_t max_shard_bytes = 5'000'000'000ull) {
  std::error_code ec;
  if (std::filesystem::exists(out_dir) && std::filesystem::equivalent(out_dir, model_dir, ec))
    throw Error(out_dir.string() + ": --out must differ from --model (the base is read while "
                "the merge is written)");
  const HfModel model(model_dir);
  const LoraAdapter adapter = load_lora_adapter(adapter_dir, &model.config());
  const double scale = adapter.config.scale();

  // stored tensor name -> (row offset, pair) deltas it receives.
  std::map<std::string, std::vector<std::pair<std::int64_t, const LoraPair*>>> deltas;
  for (std::size_t i = 0; i < model.slots().size(); ++i) {
    const WeightSlot& s = model.slots()[i];
    const int t = target_index(s.kind);
    if (t < 0) continue;
    if (const LoraPair* p = adapter.find(s.layer, t))
      deltas[model.source(i).stored_name].push_back({model.source(i).row_begin, p});
  }

  std::filesystem::create_directories(out_dir);
  struct Item {
    const SafetensorsFile* file;
    const TensorInfo* info;
    bool is_float;
  };
  std::vector<Item> items;
  std::vector<TensorSpec> specs;
  std::int64_t largest = 0;
  for (const auto& f : model.weights().files())
    for (const auto& t : f->tensors()) {
      const bool fl = t.dtype == StDtype::F32 || t.dtype == StDtype::F16 || t.dtype == StDtype::BF16;
      items.push_back({f.get(), &t, fl});
      specs.push_back({t.name, fl ? StDtype::BF16 : t.dtype, t.shape});
      if (fl) largest = std::max(largest, t.numel());
    }
  MergeStats stats;
  ShardedWriter w(out_dir, specs, max_shard_bytes);
  std::vector<float> buf(static_cast<std::size_t>(largest));
  for (const auto& it : items) {
    if (!it.is_float) {
      w.write(it.info->name, it.file->bytes(*it.info));
    } else {
      std::span<float> v(buf.data(), std::size_t(it.info->numel()));
      it.file->to_float(*it.info, v);
      if (auto d = deltas.find(it.info->name); d != deltas.end())
        for (const auto& [row, p] : d->second) {
          add_lora_delta(v.data(), row, *p, adapter.config.r, scale);
          ++stats.merged_pairs;
        }
      w.write_float(it.info->name, v);
    }
    ++stats.tensors;
    stats.bytes_written += specs[std::size_t(&it - items.data())].nbytes();
  }
  w.finish();

  // Everything else in the folder: config.json (torch_dtype now bfloat16), tokenizer, ...
  for (const auto& e : std::filesystem::directory_iterator(model_dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name.ends_with(".safetensors") || name == "model.safetensors.index.json") continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (name == "config.json") {
      nlohmann::json j = nlohmann::json::parse(text);
      j["torch_dtype"] = "bfloat16";
      text = j.dump(2) + "\n";
    }
    write_text_atomic(out_dir / name, text);
  }
  return stats;
}

// A llama .gguf base: every weight slot (HF name, HF layout: q/k rows un-permuted), dequantized,
// + deltas, as bf16; config.json from the metadata (torch_dtype bfloat16, plus `extra_config`,
// e.g. the tokenizer's bos/eos ids). The tokenizer files are the caller's.
inline MergeStats merge_lora_gguf(const std::filesystem::path& gguf, const std::filesystem::path& adapter_dir,
                                  const std::filesystem::path& out_dir, std::uint64_t max_shard_bytes = 5'000'000'000ull,
                                  const nlohmann::json& extra_config = nlohmann::json::object()) {
  const GgufModel model(gguf);
  const LoraAdapter adapter = load_lora_adapter(adapter_dir, &model.config());
  std::vector<TensorSpec> specs;
  for (const auto& s : model.slots()) specs.push_back({s.name, StDtype::BF16, s.shape});
  std::filesystem::create_directories(out_dir);
  MergeStats stats;
  ShardedWriter w(out_dir, specs, max_shard_bytes);
  std::vector<float> buf(static_cast<std::size_t>(model.largest_slot_numel()));
  for (std::size_t i = 0; i < model.slots().size(); ++i) {
    const WeightSlot& s = model.slots()[i];
    std::span<float> v(buf.data(), std::size_t(s.numel()));
    model.read(i, v);
    if (add_lora_to_slot(s, v, adapter)) ++stats.merged_pairs;
    w.write_float(s.name, v);
    ++stats.tensors;
    stats.bytes_written += specs[i].nbytes();
  }
  w.finish();
  nlohmann::json cfg = hf_config_json(model.config());
  cfg["torch_dtype"] = "bfloat16";
  for (auto& [k, v] : extra_config.items()) cfg[k] = v;
  write_text_atomic(out_dir / "config.json", cfg.dump(2) + "\n");
  return stats;
}

}  // namespace lvt::io
