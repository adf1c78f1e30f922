// `lvt merge --model DIR|FILE.gguf --adapter DIR --out DIR`: base + scale * B A as a bf16 HF
// folder. A .gguf base becomes a Hugging Face folder: its weights under their HF names,
// config.json from its metadata, and (with the text layer) tokenizer.json +
// tokenizer_config.json from its tokenizer metadata and chat template.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "lvt/error.hpp"
#include "lvt/io/hf_merge.hpp"
#if LVT_HAVE_TEXT
#include "lvt/text/gguf_tokenizer.hpp"
#endif

int lvt_cmd_merge(int argc, char** argv) {
  const char* usage =
      "usage: lvt merge --model DIR|FILE.gguf --adapter DIR --out DIR [--shard-gb N]\n"
      "  --model     Hugging Face folder of the base model (config.json + safetensors), or a\n"
      "              llama .gguf file (written out as a Hugging Face folder: config.json from its\n"
      "              metadata, tokenizer.json + tokenizer_config.json from its tokenizer)\n"
      "  --adapter   PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)\n"
      "  --out       new folder for the merged bf16 model (must differ from --model)\n"
      "  --shard-gb  largest shard in GB (10^9 bytes; default 5, as transformers)\n";
  std::string model, adapter, out;
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
    else if (a == "--shard-gb") {
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
  if (model.empty() || adapter.empty() || out.empty())
    throw lvt::Error(std::string("--model, --adapter and --out are required\n") + usage);
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
