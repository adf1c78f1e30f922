// `lvt merge --model DIR --adapter DIR --out DIR`: base + scale * B A as a bf16 HF folder.
#include <cstdio>
#include <cstring>
#include <string>

#include "lvt/error.hpp"
#include "lvt/io/hf_merge.hpp"

int lvt_cmd_merge(int argc, char** argv) {
  const char* usage =
      "usage: lvt merge --model DIR --adapter DIR --out DIR [--shard-gb N]\n"
      "  --model     Hugging Face folder of the base model (config.json + safetensors)\n"
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
  const auto stats = lvt::io::merge_lora(model, adapter, out,
                                         static_cast<std::uint64_t>(shard_gb * 1e9));
  std::printf("merged %d LoRA pairs into %s: %d tensors, %.3f GB (bf16)\n", stats.merged_pairs,
              out.c_str(), stats.tensors, double(stats.bytes_written) / 1e9);
  return 0;
}
