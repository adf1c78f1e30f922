// 8 GiB (RTX 4060): Llama-3.1-8B, NF4 streamed, checkpoint every 8, LoRA on layers 0-2 and 27-31
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_1_8b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::OffloadPolicy<lvt::Pinned>,
                             lvt::CheckpointEvery<8>, lvt::SparseLayers<3, 5>, lvt::Lora<16, 32>,
                             lvt::Shape<1, 512>, lvt::gpu::RTX4060>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("8 GiB (RTX 4060): Llama-3.1-8B, NF4 streamed, checkpoint every 8, LoRA on layers 0-2 and 27-31"); }
