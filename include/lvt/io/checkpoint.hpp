#pragma once
// Training checkpoints: everything a run needs to continue exactly where it stopped.
//
//   DIR/adapter_config.json, DIR/adapter_model.safetensors   the LoRA weights, PEFT format, F32
//   DIR/optimizer.safetensors                                 optimizer state, F32 tensors by name
//   DIR/trainer_state.json                                    step, data position, RNG state, seed
//
// The folder is written as DIR.tmp.PID and renamed onto DIR (an existing DIR is first renamed to
// DIR.old.PID and removed after), so a crash never leaves a half-written DIR. Every number is
// stored exactly (F32 tensors, the mt19937_64 state in its standard text form, integers), so
// loading gives bit-identical state.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/peft.hpp"
#include "lvt/io/safetensors.hpp"
#include "lvt/io/tokens.hpp"

namespace lvt::io {

inline constexpr int checkpoint_format_version = 1;

struct TrainingCheckpoint {
  LoraAdapter adapter;
  // Optimizer state by name, e.g. "<peft key>.exp_avg" / ".exp_avg_sq" for AdamW's m and v.
  std::map<std::string, std::vector<float>> optimizer;
  std::uint64_t step = 0;
  DataPosition data{};
  std::uint64_t seed = 0;      // run seed of the counter-based RNG (dropout)
  std::mt19937_64 rng{};       // sequential RNG (e.g. data order draws), state saved exactly
};

inline void save_checkpoint(const std::filesystem::path& dir, const TrainingCheckpoint& c) {
  namespace fs = std::filesystem;
  fs::path tmp = dir;
  tmp += ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    save_lora_adapter(tmp, c.adapter, StDtype::F32);
    std::vector<TensorSpec> specs;
    for (const auto& [name, v] : c.optimizer)
      specs.push_back({name, StDtype::F32, {std::int64_t(v.size())}});
    SafetensorsWriter w(tmp / "optimizer.safetensors", specs, {{"format", "pt"}});
    for (const auto& [name, v] : c.optimizer) w.write_float(name, v);
    w.finish();
    std::ostringstream rng;
    rng << c.rng;
    const nlohmann::json st = {{"format_version", checkpoint_format_version},
                               {"step", c.step},
                               {"data_epoch", c.data.epoch},
                               {"data_index", c.data.index},
                               {"seed", c.seed},
                               {"rng_mt19937_64", rng.str()}};
    write_text_atomic(tmp / "trainer_state.json", st.dump(2) + "\n");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::path old = dir;
  old += ".old." + std::to_string(::getpid());
  const bool existed = fs::exists(dir);
  if (existed) {
    fs::remove_all(old, ec);
    fs::rename(dir, old, ec);
    if (ec) throw Error(dir.string() + ": cannot move the previous checkpoint aside (" + ec.message() + ")");
  }
  fs::rename(tmp, dir, ec);
  if (ec) throw Error(dir.string() + ": cannot rename " + tmp.string() + " onto it (" + ec.message() + ")");
  if (existed) fs::remove_all(old, ec);
}

inline TrainingCheckpoint load_checkpoint(const std::filesystem::path& dir,
                                          const ModelConfig* model = nullptr) {
  TrainingCheckpoint c;
  const auto state_path = dir / "trainer_state.json";
  const std::string src = state_path.string();
  std::ifstream f(state_path, std::ios::binary);
  if (!f) throw Error(src + ": cannot open (not a checkpoint folder?)");
  std::stringstream ss;
  ss << f.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(src + ": not a JSON object");
  auto u64 = [&](const char* k) {
    auto it = j.find(k);
    if (it == j.end()) throw Error(src + ": field '" + std::string(k) + "': missing");
    if (!it->is_number_unsigned())
      throw Error(src + ": field '" + std::string(k) + "': expected a non-negative integer");
    return it->get<std::uint64_t>();
  };
  if (u64("format_version") != std::uint64_t(checkpoint_format_version))
    throw Error(src + ": field 'format_version': " + j["format_version"].dump() +
                " (this lvt reads version " + std::to_string(checkpoint_format_version) + ")");
  c.step = u64("step");
  c.data = {u64("data_epoch"), u64("data_index")};
  c.seed = u64("seed");
  auto r = j.find("rng_mt19937_64");
  if (r == j.end() || !r->is_string()) throw Error(src + ": field 'rng_mt19937_64': missing or not a string");
  std::istringstream rs(r->get<std::string>());
  rs >> c.rng;
  if (rs.fail()) throw Error(src + ": field 'rng_mt19937_64': not an mt19937_64 state");

  c.adapter = load_lora_adapter(dir, model);
  SafetensorsFile opt(dir / "optimizer.safetensors");
  for (const auto& t : opt.tensors()) {
    if (t.dtype != StDtype::F32 || t.shape.size() != 1)
      throw Error(opt.path().string() + ": tensor '" + t.name + "' must be a 1-D F32 vector");
    c.optimizer[t.name] = opt.to_float(t);
  }
  return c;
}

}  // namespace lvt::io
