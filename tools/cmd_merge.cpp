// `lvt merge --model DIR|FILE.gguf --adapter DIR --out DIR`: base + scale * B A as a bf16 HF
// folder. A .gguf base becomes a Hugging Face folder: its weights under their HF names,
// config.json from its metadata, and (with the text layer) tokenizer.json +
// tokenizer_config.json from its tokenizer metadata and chat template.
// `lvt merge ... --gguf OUT.gguf [--type T]` writes the merge as one llama GGUF file instead, and
// `lvt export-gguf --model DIR|FILE.gguf --out OUT.gguf [--type T]` the model alone
// (io/gguf_export.hpp; the tokenizer: a .gguf base's tokenizer.* keys, a folder's tokenizer.json
// through text/gguf_tokenizer_write.hpp).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "lvt/error.hpp"
#include "lvt/io/gguf_export.hpp"
#include "lvt/io/hf_merge.hpp"
#include "lvt/io/model_source.hpp"
#if LVT_HAVE_TEXT
#include "lvt/text/gguf_tokenizer.hpp"
#include "lvt/text/gguf_tokenizer_write.hpp"
#endif

namespace {

// The model at `model` (a Hugging Face or bnb 4-bit folder, or a llama .gguf file), + the adapter when given,
// as one GGUF file at `out`. Progress on stderr, a summary on stdout.
int write_gguf_model(const std::string& model, const std::string& adapter, const std::string& out,
                     lvt::io::GgufOutType type, const char* out_flag) {
  namespace fs = std::filesystem;
  using namespace lvt::io;
  const fs::path model_path(model), out_path(out);
  std::error_code ec;
  if (fs::exists(out_path) && fs::equivalent(out_path, model_path, ec))
    throw lvt::Error(std::string(out_flag) + " " + out + ": must differ from --model (the base is read while the GGUF "
                     "file is written)");
  if (fs::is_directory(out_path))
    throw lvt::Error(std::string(out_flag) + " " + out + ": is a folder (give the .gguf file to write)");
  GgufExportOptions o;
  o.type = type;
  std::string tokenizer_note;
  const bool is_gguf = model_path.extension() == ".gguf" && fs::is_regular_file(model_path);
  if (!is_gguf && !fs::is_directory(model_path))
    throw lvt::Error("--model " + model + ": not a Hugging Face folder or a .gguf file");
  o.progress = [](std::size_t i, std::size_t n, const GgufTensorDecl& t) {
    std::fprintf(stderr, "[%zu/%zu] %s %s\n", i + 1, n, t.name.c_str(), ggml_type_name(t.type));
  };
  auto run = [&](const ModelSource& m) {
    if (const char* why = gguf_export_unsupported(m.config())) throw lvt::Error("--model " + model + ": " + why);
    std::optional<LoraAdapter> a;
    if (!adapter.empty()) {
      a = load_lora_adapter(adapter, &m.config());
      o.adapter = &*a;
    }
    const auto stats = export_gguf(m, out_path, o);
    std::printf("wrote %s: %zu tensors, %.3f GB (%s)%s\n", out.c_str(), stats.tensors, double(stats.file_bytes) / 1e9,
                gguf_out_type_info(type).name,
                a ? (", merged " + std::to_string(stats.merged_pairs) + " LoRA pairs").c_str() : "");
  };
  const ModelSource m(model_path);  // a folder (HF or bnb 4-bit, dequantized) or a .gguf
  if (const GgufModel* g = m.gguf()) {
    const GgufValue* name = g->file().find_value("general.name");
    o.name = name && name->type == GgufValueType::string ? name->s : model_path.stem().string();
    o.tokenizer = gguf_tokenizer_keys(g->file().header());
    tokenizer_note = o.tokenizer.empty() ? "no tokenizer metadata in " + model + ": the file has none"
                                         : "tokenizer metadata copied from " + model;
  } else {
    o.name = fs::absolute(model_path).lexically_normal().filename().string();
    if (o.name.empty()) o.name = fs::absolute(model_path).lexically_normal().parent_path().filename().string();
#if LVT_HAVE_TEXT
    if (fs::exists(model_path / "tokenizer.json")) {
      o.tokenizer = lvt::text::gguf_tokenizer_metadata_checked(model_path, m.config().vocab);
      tokenizer_note = "tokenizer metadata from " + (model_path / "tokenizer.json").string();
    } else {
      tokenizer_note = "no tokenizer.json in " + model + ": the file carries no tokenizer";
    }
#else
    tokenizer_note = "this lvt is built without the text layer: the file carries no tokenizer";
#endif
  }
  run(m);
  std::printf("%s\n", tokenizer_note.c_str());
  return 0;
}

}  // namespace

int lvt_cmd_export_gguf(int argc, char** argv) {
  const char* usage =
      "usage: lvt export-gguf --model DIR|FILE.gguf --out OUT.gguf [--type f16|bf16|q8_0|q4_0|f32]\n"
      "  --model  Hugging Face folder (llama / mistral) or a llama .gguf file\n"
      "  --out    the GGUF file to write (llama architecture, as llama.cpp's convert_hf_to_gguf.py lays it out)\n"
      "  --type   tensor type (default f16, as the converter): norms stay F32, rows not a multiple of 32 F16\n";
  std::string model, out, type = "f16";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (i + 1 >= argc) throw lvt::Error("option " + a + " needs a value\n" + usage);
    const std::string v = argv[++i];
    if (a == "--model") model = v;
    else if (a == "--out") out = v;
    else if (a == "--type") type = v;
    else throw lvt::Error("unknown option '" + a + "'\n" + usage);
  }
  if (model.empty() || out.empty()) throw lvt::Error(std::string("--model and --out are required\n") + usage);
  return write_gguf_model(model, "", out, lvt::io::parse_gguf_out_type(type), "--out");
}

int lvt_cmd_merge(int argc, char** argv) {
  const char* usage =
      "usage: lvt merge --model DIR|FILE.gguf --adapter DIR --out DIR [--shard-gb N]\n"
      "       lvt merge --model DIR|FILE.gguf --adapter DIR --gguf OUT.gguf [--type f16|bf16|q8_0|q4_0|f32]\n"
      "  --model     Hugging Face folder of the base model (config.json + safetensors), or a\n"
      "              llama .gguf file (written out as a Hugging Face folder: config.json from its\n"
      "              metadata, tokenizer.json + tokenizer_config.json from its tokenizer)\n"
      "  --adapter   PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)\n"
      "  --out       new folder for the merged bf16 model (must differ from --model)\n"
      "  --shard-gb  largest shard in GB (10^9 bytes; default 5, as transformers)\n"
      "  --gguf      write the merged model as one llama GGUF file instead of a folder\n"
      "  --type      its tensor type (default f16, as llama.cpp's converter; norms stay F32)\n";
  std::string model, adapter, out, gguf, type;
  bool shard_given = false;
  double shard_gb = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (i + 1 >= argc) throw lvt::Error("option " + a + " needs a value\n" + usage);
    const std::string v = argv[++i];
    if (a == "--model") model = v;
    else if (a == "--adapter") adapter = v;
    else if (a == "--out") out = v;
    else if (a == "--gguf") gguf = v;
    else if (a == "--type") type = v;
    else if (a == "--shard-gb") {
      shard_given = true;
      try {
        shard_gb = std::stod(v);
      } catch (...) {
        throw lvt::Error("--shard-gb: '" + v + "' is not a number");
      }
      if (!(shard_gb > 0)) throw lvt::Error("--shard-gb must be positive");
    } else {
      throw lvt::Error("unknown option '" + a + "'\n" + usage);
    }
  }
  if (!gguf.empty() && !out.empty())
    throw lvt::Error("--gguf and --out: give one (--out writes a Hugging Face folder, --gguf one .gguf file)");
  if (!gguf.empty()) {
    if (model.empty() || adapter.empty()) throw lvt::Error(std::string("--model and --adapter are required\n") + usage);
    if (shard_given) throw lvt::Error("--shard-gb applies to --out (a .gguf file is not sharded)");
    return write_gguf_model(model, adapter, gguf, lvt::io::parse_gguf_out_type(type.empty() ? "f16" : type), "--gguf");
  }
  if (!type.empty()) throw lvt::Error("--type applies to --gguf (the --out folder is bf16)");
  if (model.empty() || adapter.empty() || out.empty())
    throw lvt::Error(std::string("--model, --adapter and --out (or --gguf) are required\n") + usage);
  const std::filesystem::path model_path(model);
  const auto max_shard = static_cast<std::uint64_t>(shard_gb * 1e9);
  if (model_path.extension() == ".gguf" && std::filesystem::is_regular_file(model_path)) {
    nlohmann::json extra = nlohmann::json::object();
#if LVT_HAVE_TEXT
    // The tokenizer first: a bad one stops before the weights are written.
    std::optional<lvt::text::GgufTokenizerSpec> tok;
    {
      const lvt::io::GgufFile f(model_path);
      if (f.find_value("tokenizer.ggml.model")) tok = lvt::text::gguf_tokenizer_spec(f.header(), model);
    }
    if (tok && tok->bos_id) extra["bos_token_id"] = *tok->bos_id;
    if (tok && tok->eos_id) extra["eos_token_id"] = *tok->eos_id;
#endif
    const auto stats = lvt::io::merge_lora_gguf(model_path, adapter, out, max_shard, extra);
    std::printf("merged %d LoRA pairs into %s: %d tensors, %.3f GB (bf16); config.json from %s's metadata\n",
                stats.merged_pairs, out.c_str(), stats.tensors, double(stats.bytes_written) / 1e9, model.c_str());
#if LVT_HAVE_TEXT
    if (tok) {
      lvt::text::write_gguf_tokenizer_folder(*tok, out);
      std::printf("tokenizer.json + tokenizer_config.json from its tokenizer metadata%s\n",
                  tok->chat_template ? " and chat template" : "");
    } else {
      std::printf("no tokenizer in %s: the folder has none\n", model.c_str());
    }
#else
    std::printf("this lvt is built without the text layer: no tokenizer files written\n");
#endif
    return 0;
  }
  const auto stats = lvt::io::merge_lora(model, adapter, out, max_shard);
  std::printf("merged %d LoRA pairs into %s: %d tensors, %.3f GB (bf16)\n", stats.merged_pairs,
              out.c_str(), stats.tensors, double(stats.bytes_written) / 1e9);
  return 0;
}
