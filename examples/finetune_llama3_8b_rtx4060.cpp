// Fine-tunes Llama-3.1-8B with the 8 GiB plan: QLoRA (NF4 + double quantization), weights
// streamed from pinned memory, checkpoints every 8 layers, LoRA on layers 0-2 and 27-31.
//   finetune_llama3_8b_rtx4060 MODEL_DIR TOKENS.bin OUT_ADAPTER_DIR [STEPS]
// MODEL_DIR: the Hugging Face folder (or a bnb-4bit one); TOKENS.bin: llm.c uint32 tokens.
// Until the CUDA backend lands, the step runs on the host backend (fp32 reference).
#include <lvt/trainer.hpp>

#include <cstdio>
#include <cstdlib>

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_1_8b>, lvt::QuantPolicy<lvt::NF4>,
                             lvt::OffloadPolicy<lvt::Pinned>, lvt::CheckpointEvery<8>,
                             lvt::SparseLayers<3, 5>, lvt::Lora<16, 32>, lvt::Shape<1, 512>,
                             lvt::gpu::RTX4060>;
static_assert(lvt::fits<Trainer>);

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR TOKENS.bin OUT_ADAPTER_DIR [STEPS]\n", argv[0]);
    return 2;
  }
  try {
    lvt::Run run = Trainer::from_pretrained(argv[1]);  // config.json must be Llama-3.1-8B's
    auto data = lvt::io::TokenDataset::open(argv[2], Trainer::model.vocab);
    const long steps = argc > 4 ? std::atol(argv[4]) : 100;
    run.fit(data, {.steps = steps, .lr = 2e-4, .warmup = steps / 20});
    run.save_adapter(argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
