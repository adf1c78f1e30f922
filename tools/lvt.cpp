// `lvt`: plan, quantize, train, eval, merge, export-gguf, tokenize, generate. Each subcommand is its own file
// (cmd_*.cpp).
#include <cstdio>
#include <cstring>
#include <exception>

#include "lvt/error.hpp"

int lvt_cmd_plan(int argc, char** argv);
int lvt_cmd_quantize(int argc, char** argv);
int lvt_cmd_train(int argc, char** argv);
int lvt_cmd_eval(int argc, char** argv);
int lvt_cmd_merge(int argc, char** argv);
int lvt_cmd_export_gguf(int argc, char** argv);
int lvt_cmd_tokenize(int argc, char** argv);
int lvt_cmd_generate(int argc, char** argv);

namespace {
struct Cmd {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};
constexpr Cmd cmds[] = {
#ifdef LVT_HAVE_CMD_PLAN
    {"plan", lvt_cmd_plan, "memory plan of a model + policies for a GPU budget (--auto finds the fastest fit)"},
#endif
#ifdef LVT_HAVE_CMD_QUANTIZE
    {"quantize", lvt_cmd_quantize, "quantize a Hugging Face folder to a bitsandbytes 4-bit folder"},
#endif
#ifdef LVT_HAVE_CMD_TRAIN
    {"train", lvt_cmd_train, "fine-tune LoRA adapters on a token file"},
#endif
#ifdef LVT_HAVE_CMD_EVAL
    {"eval", lvt_cmd_eval, "mean token loss over a token file"},
#endif
#ifdef LVT_HAVE_CMD_MERGE
    {"merge", lvt_cmd_merge, "merge a PEFT adapter into its base model (bf16 folder, or one .gguf with --gguf)"},
    {"export-gguf", lvt_cmd_export_gguf, "write a model as one llama GGUF file (f16, bf16, q8_0, q4_0)"},
#endif
#ifdef LVT_HAVE_CMD_TOKENIZE
    {"tokenize", lvt_cmd_tokenize, "encode / decode JSON lines with a tokenizer folder, render chats"},
#endif
#ifdef LVT_HAVE_CMD_GENERATE
    {"generate", lvt_cmd_generate, "generate text with a KV cache (host backend), streamed to stdout"},
#endif
};

int usage(std::FILE* f) {
  std::fprintf(f, "usage: lvt COMMAND [options]   (lvt COMMAND --help for its options)\n\ncommands:\n");
  for (const auto& c : cmds) std::fprintf(f, "  %-11s %s\n", c.name, c.help);
  return f == stderr ? 2 : 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(stderr);
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) return usage(stdout);
  for (const auto& c : cmds) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lvt %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "lvt: unknown command '%s'\n", argv[1]);
  return usage(stderr);
}
