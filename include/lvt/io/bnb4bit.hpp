#pragma once
// bitsandbytes 4-bit checkpoints as transformers saves them (Linear4bit._save_to_state_dict and
// QuantState.as_dict(packed=True)), per quantized weight W:
//
//   W                                  U8  [(n+1)/2, 1]  packed codes, first element high nibble
//   W.absmax                           F32 [blocks]      (no double quant)
//                                      U8  [blocks]      (double quant: codes of absmax - offset)
//   W.quant_map                        F32 [16]          the NF4 / FP4 table
//   W.nested_absmax                    F32 [ceil(blocks/256)]       (double quant)
//   W.nested_quant_map                 F32 [256]         the dynamic map (double quant)
//   W.quant_state.bitsandbytes__nf4    U8  [len]         json.dumps of {"quant_type", "blocksize",
//                                      (or __fp4)        "dtype", "shape", "nested_blocksize",
//                                                        "nested_dtype", "nested_offset"}
//
// and config.json's "quantization_config" (BitsAndBytesConfig.to_dict()). quantize_folder()
// streams a Hugging Face folder into such a folder one tensor at a time; read_quant4() loads one
// weight back, checking every tensor and field, and names what is missing or inconsistent.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lvt/error.hpp"
#include "lvt/io/safetensors.hpp"
#include "lvt/quant/blockwise.hpp"

namespace lvt::io::bnb {

using quant::Code4;

inline const char* quant_type_name(Code4 c) { return c == Code4::nf4 ? "nf4" : "fp4"; }

// The quant state fields that are not tensors (what bnb packs into the quant_state tensor).
struct QuantStateInfo {
  Code4 code = Code4::nf4;
  int blocksize = quant::default_block;
  std::string dtype = "bfloat16";  // torch dtype of the weight before quantization
  std::vector<std::int64_t> shape;
  bool nested = false;
  int nested_blocksize = quant::nested_block;
  std::string nested_dtype = "float32";
  float nested_offset = 0.0f;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// Python's json.dumps(dict) bytes: ", " and ": " separators, keys in insertion order, floats
// as repr() (shortest round-trip; nlohmann's number printing is the same algorithm).
inline std::string pack_quant_state(const QuantStateInfo& s) {
  auto str = [](const std::string& v) { return nlohmann::json(v).dump(); };
  std::string shape = "[";
  for (std::size_t i = 0; i < s.shape.size(); ++i)
    shape += (i ? ", " : "") + std::to_string(s.shape[i]);
  shape += "]";
  std::string out = std::string("{\"quant_type\": ") + str(quant_type_name(s.code)) +
                    ", \"blocksize\": " + std::to_string(s.blocksize) + ", \"dtype\": " +
                    str(s.dtype) + ", \"shape\": " + shape;
  if (s.nested)
    out += ", \"nested_blocksize\": " + std::to_string(s.nested_blocksize) +
           ", \"nested_dtype\": " + str(s.nested_dtype) +
           ", \"nested_offset\": " + nlohmann::json(double(s.nested_offset)).dump();
  return out + "}";
}

inline QuantStateInfo unpack_quant_state(std::span<const std::byte> bytes, const std::string& where,
                                         Code4 expected) {
  const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(where + ": not a JSON object");
  QuantStateInfo s;
  auto field = [&](const char* k) -> const nlohmann::json& {
    auto it = j.find(k);
    if (it == j.end()) throw Error(where + ": field '" + k + "' missing");
    return *it;
  };
  const auto& qt = field("quant_type");
  if (!qt.is_string() || (qt != "nf4" && qt != "fp4"))
    throw Error(where + ": field 'quant_type': expected \"nf4\" or \"fp4\", got " + qt.dump());
  s.code = qt == "nf4" ? Code4::nf4 : Code4::fp4;
  if (s.code != expected)
    throw Error(where + ": field 'quant_type' is " + qt.dump() + " but the tensor name says " +
                quant_type_name(expected));
  const auto& bs = field("blocksize");
  if (!bs.is_number_integer() || !quant::valid_block(bs.get<int>()))
    throw Error(where + ": field 'blocksize': " + bs.dump() + " is not a power of two from 32 to 4096");
  s.blocksize = bs.get<int>();
  const auto& dt = field("dtype");
  if (!dt.is_string() || (dt != "bfloat16" && dt != "float16" && dt != "float32"))
    throw Error(where + ": field 'dtype': expected bfloat16, float16 or float32, got " + dt.dump());
  s.dtype = dt.get<std::string>();
  const auto& sh = field("shape");
  if (!sh.is_array() || sh.empty()) throw Error(where + ": field 'shape': expected a list of sizes");
  for (const auto& d : sh) {
    if (!d.is_number_integer() || d.get<std::int64_t>() <= 0)
      throw Error(where + ": field 'shape': " + sh.dump() + " holds a non-positive or non-integer size");
    s.shape.push_back(d.get<std::int64_t>());
  }
  s.nested = j.contains("nested_blocksize") || j.contains("nested_offset") || j.contains("nested_dtype");
  if (s.nested) {
    const auto& nb = field("nested_blocksize");
    if (!nb.is_number_integer() || nb.get<int>() != quant::nested_block)
      throw Error(where + ": field 'nested_blocksize': " + nb.dump() +
                  " (bitsandbytes' double quantization uses 256)");
    const auto& nd = field("nested_dtype");
    if (nd != "float32")
      throw Error(where + ": field 'nested_dtype': expected \"float32\", got " + nd.dump());
    const auto& no = field("nested_offset");
    if (!no.is_number() || !std::isfinite(no.get<double>()))
      throw Error(where + ": field 'nested_offset': expected a finite number, got " + no.dump());
    s.nested_offset = float(no.get<double>());
  }
  return s;
}

// config.json's quantization_config, as BitsAndBytesConfig.to_dict() writes it.
inline nlohmann::json quantization_config(Code4 code, bool double_quant,
                                          const std::string& compute_dtype = "bfloat16") {
  return nlohmann::json{{"_load_in_4bit", true},
                        {"_load_in_8bit", false},
                        {"bnb_4bit_compute_dtype", compute_dtype},
                        {"bnb_4bit_quant_storage", "uint8"},
                        {"bnb_4bit_quant_type", quant_type_name(code)},
                        {"bnb_4bit_use_double_quant", double_quant},
                        {"llm_int8_enable_fp32_cpu_offload", false},
                        {"llm_int8_has_fp16_weight", false},
                        {"llm_int8_skip_modules", nullptr},
                        {"llm_int8_threshold", 6.0},
                        {"load_in_4bit", true},
                        {"load_in_8bit", false},
                        {"quant_method", "bitsandbytes"}};
}

// The tensors of one quantized weight, in the order transformers' state_dict lists them.
inline std::vector<TensorSpec> weight_specs(const std::string& w, const QuantStateInfo& s) {
  const std::int64_t n = s.numel(), blocks = quant::blocks_of(n, s.blocksize);
  std::vector<TensorSpec> v;
  v.push_back({w, StDtype::U8, {quant::packed_bytes(n), 1}});
  v.push_back({w + ".absmax", s.nested ? StDtype::U8 : StDtype::F32, {blocks}});
  v.push_back({w + ".quant_map", StDtype::F32, {16}});
  if (s.nested) {
    v.push_back({w + ".nested_absmax", StDtype::F32, {quant::blocks_of(blocks, quant::nested_block)}});
    v.push_back({w + ".nested_quant_map", StDtype::F32, {256}});
  }
  v.push_back({w + ".quant_state.bitsandbytes__" + quant_type_name(s.code), StDtype::U8,
               {std::int64_t(pack_quant_state(s).size())}});
  return v;
}

template <class T>
inline std::span<const std::byte> as_bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

// Writes one quantized weight's tensors (declared with weight_specs) through any writer with
// write(name, bytes) (SafetensorsWriter, ShardedWriter).
template <class Writer>
inline void write_weight(Writer& out, const std::string& w, const QuantStateInfo& s,
                         const quant::Quant4& q) {
  out.write(w, as_bytes_of(q.packed));
  if (s.nested) out.write(w + ".absmax", as_bytes_of(q.absmax_codes));
  else out.write(w + ".absmax", as_bytes_of(q.absmax));
  const float* table = q.code == Code4::nf4 ? quant::nf4_code : quant::fp4_code;
  out.write(w + ".quant_map", std::as_bytes(std::span<const float>(table, 16)));
  if (s.nested) {
    out.write(w + ".nested_absmax", as_bytes_of(q.nested_absmax));
    out.write(w + ".nested_quant_map", std::as_bytes(std::span<const float>(quant::dynamic_map, 256)));
  }
  const std::string js = pack_quant_state(s);
  out.write(w + ".quant_state.bitsandbytes__" + quant_type_name(s.code),
            std::as_bytes(std::span<const char>(js.data(), js.size())));
}

// ---- reading ------------------------------------------------------------------------------------
struct LoadedWeight {
  QuantStateInfo state;
  quant::Quant4 q;
};

// Weight names W that carry a W.quant_state.bitsandbytes__* tensor.
inline std::vector<std::string> quantized_weights(const SafetensorsSet& set) {
  std::vector<std::string> out;
  for (const auto& [name, ref] : set.tensors()) {
    for (const char* suffix : {".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"}) {
      const std::string sfx = suffix;
      if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0)
        out.push_back(name.substr(0, name.size() - sfx.size()));
    }
  }
  return out;
}

// W itself when it carries a quant state, else empty (one weight's check, no scan of the set).
inline std::string quantized_weights_named(const SafetensorsSet& set, const std::string& w) {
  for (const char* suffix : {".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"})
    if (set.find(w + suffix)) return w;
  return {};
}

namespace detail {
inline std::string where(const SafetensorsSet::Ref& r) {
  return r.file->path().string() + ": tensor '" + r.info->name + "'";
}
template <class T>
inline std::vector<T> read_exact(const SafetensorsSet& set, const std::string& name, StDtype dt,
                                 std::vector<std::int64_t> shape, const std::string& weight) {
  const SafetensorsSet::Ref* r = set.find(name);
  if (!r)
    throw Error("bnb 4-bit weight '" + weight + "': tensor '" + name +
                "' is missing (the quant state is incomplete)");
  if (r->info->dtype != dt || r->info->shape != shape)
    throw Error(where(*r) + ": expected " + st_dtype_name(dt) + " " + shape_str(shape) +
                " for the quant state of '" + weight + "', found " +
                st_dtype_name(r->info->dtype) + " " + shape_str(r->info->shape));
  std::vector<T> v(std::size_t(r->info->nbytes() / sizeof(T)));
  const auto b = r->file->bytes(*r->info);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}
}  // namespace detail

// Loads weight W (and checks its quant state against itself and the shape it declares).
inline LoadedWeight read_quant4(const SafetensorsSet& set, const std::string& w) {
  const SafetensorsSet::Ref* qs = nullptr;
  Code4 code = Code4::nf4;
  for (Code4 c : {Code4::nf4, Code4::fp4})
    if (const auto* r = set.find(w + ".quant_state.bitsandbytes__" + quant_type_name(c))) {
      if (qs)
        throw Error("bnb 4-bit weight '" + w + "': both quant_state.bitsandbytes__nf4 and __fp4 present");
      qs = r;
      code = c;
    }
  if (!qs)
    throw Error("bnb 4-bit weight '" + w + "': tensor '" + w +
                ".quant_state.bitsandbytes__nf4' (or __fp4) is missing");
  if (qs->info->dtype != StDtype::U8 || qs->info->shape.size() != 1)
    throw Error(detail::where(*qs) + ": expected a 1-D U8 tensor of packed JSON, found " +
                st_dtype_name(qs->info->dtype) + " " + shape_str(qs->info->shape));
  LoadedWeight out;
  QuantStateInfo& s = out.state;
  s = unpack_quant_state(qs->file->bytes(*qs->info), detail::where(*qs), code);
  const std::int64_t n = s.numel(), blocks = quant::blocks_of(n, s.blocksize);
  quant::Quant4& q = out.q;
  q.code = code;
  q.block = s.blocksize;
  q.n = n;
  q.nested = s.nested;
  q.offset = s.nested_offset;
  q.packed = detail::read_exact<std::uint8_t>(set, w, StDtype::U8, {quant::packed_bytes(n), 1}, w);
  const std::vector<float> qmap = detail::read_exact<float>(set, w + ".quant_map", StDtype::F32, {16}, w);
  const float* table = code == Code4::nf4 ? quant::nf4_code : quant::fp4_code;
  for (int i = 0; i < 16; ++i)
    if (qmap[std::size_t(i)] != table[i] && !(qmap[std::size_t(i)] == 0.0f && table[i] == 0.0f))
      throw Error("bnb 4-bit weight '" + w + "': tensor '" + w + ".quant_map' entry " +
                  std::to_string(i) + " is " + std::to_string(qmap[std::size_t(i)]) +
                  ", not bitsandbytes' " + quant_type_name(code) + " value " + std::to_string(table[i]));
  if (s.nested) {
    q.absmax_codes = detail::read_exact<std::uint8_t>(set, w + ".absmax", StDtype::U8, {blocks}, w);
    q.nested_absmax = detail::read_exact<float>(set, w + ".nested_absmax", StDtype::F32,
                                                {quant::blocks_of(blocks, quant::nested_block)}, w);
    q.nested_map = detail::read_exact<float>(set, w + ".nested_quant_map", StDtype::F32, {256}, w);
  } else {
    for (const char* extra : {".nested_absmax", ".nested_quant_map"})
      if (set.find(w + extra))
        throw Error("bnb 4-bit weight '" + w + "': tensor '" + w + extra +
                    "' present but the quant state has no nested_* fields (not double-quantized)");
    q.absmax = detail::read_exact<float>(set, w + ".absmax", StDtype::F32, {blocks}, w);
  }
  return out;
}

// Checks a whole bnb 4-bit checkpoint: every quant-state tensor (W.absmax, W.quant_map,
// W.nested_*) belongs to a weight W with a W.quant_state.bitsandbytes__* tensor, and every such
// weight loads (read_quant4's checks; one weight in memory at a time). Returns the weight names.
inline std::vector<std::string> validate_bnb4bit(const SafetensorsSet& set) {
  const std::vector<std::string> weights = quantized_weights(set);
  const std::set<std::string> known(weights.begin(), weights.end());
  for (const auto& [name, ref] : set.tensors()) {
    for (const char* part : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"}) {
      const std::string p = part;
      if (name.size() <= p.size() || name.compare(name.size() - p.size(), p.size(), p) != 0) continue;
      const std::string w = name.substr(0, name.size() - p.size());
      if (!known.count(w))
        throw Error(detail::where(ref) + ": quant-state tensor of '" + w + "', but '" + w +
                    ".quant_state.bitsandbytes__nf4' (or __fp4) is missing");
    }
  }
  for (const auto& w : weights) (void)read_quant4(set, w);
  return weights;
}

// quantization_config of a config.json (nullptr-safe); checks it is bnb 4-bit.
inline void check_quantization_config(const nlohmann::json& cfg, const std::string& source) {
  auto it = cfg.find("quantization_config");
  if (it == cfg.end() || !it->is_object())
    throw Error(source + ": field 'quantization_config' missing: not a bitsandbytes 4-bit folder");
  const auto& q = *it;
  if (q.value("quant_method", std::string()) != "bitsandbytes")
    throw Error(source + ": field 'quantization_config.quant_method' is " +
                (q.contains("quant_method") ? q["quant_method"].dump() : std::string("missing")) +
                ", expected \"bitsandbytes\"");
  if (!q.value("load_in_4bit", false) && !q.value("_load_in_4bit", false))
    throw Error(source + ": field 'quantization_config.load_in_4bit' is not true (8-bit bnb "
                "checkpoints are not supported)");
}

// ---- quantizing a folder --------------------------------------------------------------------------
struct QuantizeOptions {
  Code4 code = Code4::nf4;
  bool double_quant = true;
  int block = quant::default_block;
  std::uint64_t max_shard_bytes = 5'000'000'000ull;
};

// Linear projection weights that QLoRA quantizes (Llama/Mistral/Qwen2 names and phi3's fused
// qkv_proj / gate_up_proj); embeddings, norms, lm_head and biases are copied.
inline bool is_quantized_projection(const std::string& name, const TensorInfo& t) {
  static const char* const projs[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj", "qkv_proj", "gate_up_proj"};
  if (t.shape.size() != 2) return false;
  if (t.dtype != StDtype::BF16 && t.dtype != StDtype::F16 && t.dtype != StDtype::F32) return false;
  const std::string sfx = ".weight";
  if (name.size() <= sfx.size() || name.compare(name.size() - sfx.size(), sfx.size(), sfx) != 0)
    return false;
  const std::string module = name.substr(0, name.size() - sfx.size());
  const std::size_t dot = module.rfind('.');
  const std::string last = dot == std::string::npos ? module : module.substr(dot + 1);
  for (const char* p : projs)
    if (last == p) return true;
  return false;
}

inline const char* torch_dtype_name(StDtype d) {
  return d == StDtype::BF16 ? "bfloat16" : d == StDtype::F16 ? "float16" : "float32";
}

struct QuantizeReport {
  int quantized = 0, copied = 0;
  std::uint64_t bytes_in = 0, bytes_out = 0;
};

// Streams IN_DIR (config.json + safetensors) into OUT_DIR as a bnb 4-bit folder: one tensor in
// memory at a time (as float, plus its codes). Other files of IN_DIR (tokenizer, generation
// config) are copied; config.json gains quantization_config.
inline QuantizeReport quantize_folder(const std::filesystem::path& in_dir,
                                      const std::filesystem::path& out_dir,
                                      const QuantizeOptions& opt) {
  namespace fs = std::filesystem;
  quant::check_block(opt.block, "--block");
  const fs::path cfg_path = in_dir / "config.json";
  std::ifstream cf(cfg_path, std::ios::binary);
  if (!cf) throw Error(cfg_path.string() + ": cannot open");
  std::stringstream ss;
  ss << cf.rdbuf();
  nlohmann::json cfg = nlohmann::json::parse(ss.str(), nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) throw Error(cfg_path.string() + ": not a JSON object");
  if (cfg.contains("quantization_config"))
    throw Error(cfg_path.string() + ": field 'quantization_config' present: the folder is already "
                "quantized");
  const SafetensorsSet set = SafetensorsSet::open_dir(in_dir);
  if (fs::exists(out_dir) && !fs::is_directory(out_dir))
    throw Error(out_dir.string() + ": exists and is not a folder");
  fs::create_directories(out_dir);
  if (fs::equivalent(in_dir, out_dir)) throw Error(out_dir.string() + ": same folder as the input");

  // Declare every output tensor up front. The quant_state JSON holds the double-quantization
  // offset (the mean of the block absmax), whose printed length fixes the tensor's shape, so a
  // first pass computes each weight's absmax mean (one tensor in memory at a time).
  std::vector<TensorSpec> specs;
  std::map<std::string, QuantStateInfo> states;
  QuantizeReport rep;
  for (const auto& [name, ref] : set.tensors()) {
    if (!is_quantized_projection(name, *ref.info)) {
      specs.push_back({name, ref.info->dtype, ref.info->shape});
      continue;
    }
    QuantStateInfo s;
    s.code = opt.code;
    s.blocksize = opt.block;
    s.dtype = torch_dtype_name(ref.info->dtype);
    s.shape = ref.info->shape;
    s.nested = opt.double_quant;
    if (s.nested) {
      std::vector<float> x(static_cast<std::size_t>(ref.info->numel()));
      ref.file->to_float(*ref.info, x);
      const std::int64_t n = std::int64_t(x.size()), blocks = quant::blocks_of(n, opt.block);
      std::vector<float> am(static_cast<std::size_t>(blocks));
      for (std::int64_t b = 0; b < blocks; ++b)
        am[std::size_t(b)] = quant::block_absmax(x.data(), b * opt.block,
                                                 std::min(n, (b + 1) * opt.block), n, name);
      s.nested_offset = quant::absmax_mean(am.data(), blocks);
    }
    for (auto& sp : weight_specs(name, s)) specs.push_back(std::move(sp));
    states.emplace(name, std::move(s));
  }
  ShardedWriter out(out_dir, specs, opt.max_shard_bytes);
  for (const auto& [name, ref] : set.tensors()) {
    const auto bytes = ref.file->bytes(*ref.info);
    rep.bytes_in += bytes.size();
    auto st = states.find(name);
    if (st == states.end()) {
      out.write(name, bytes);
      rep.bytes_out += bytes.size();
      ++rep.copied;
      continue;
    }
    std::vector<float> x(static_cast<std::size_t>(ref.info->numel()));
    ref.file->to_float(*ref.info, x);
    const quant::Quant4 q = quant::quantize4(opt.code, x.data(), std::int64_t(x.size()), opt.block,
                                             opt.double_quant, name);
    if (q.nested && q.offset != st->second.nested_offset)  // deterministic: cannot differ
      throw Error("quantize '" + name + "': absmax mean changed between passes");
    write_weight(out, name, st->second, q);
    rep.bytes_out += std::uint64_t(q.storage_bytes());
    ++rep.quantized;
  }
  out.finish();
  cfg["quantization_config"] = quantization_config(opt.code, opt.double_quant,
                                                   cfg.value("torch_dtype", std::string("bfloat16")));
  write_text_atomic(out_dir / "config.json", cfg.dump(2) + "\n");
  for (const auto& e : fs::directory_iterator(in_dir)) {
    const std::string fname = e.path().filename().string();
    if (!e.is_regular_file() || fname == "config.json" || fname == "model.safetensors.index.json" ||
        e.path().extension() == ".safetensors")
      continue;
    fs::copy_file(e.path(), out_dir / fname, fs::copy_options::overwrite_existing);
  }
  return rep;
}

}  // namespace lvt::io::bnb
