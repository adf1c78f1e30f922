// 24 GiB (RTX 4090): Llama-3.1-70B, NF4 streamed from pinned memory, checkpoint every layer
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_1_70b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::OffloadPolicy<lvt::Pinned>,
                             lvt::CheckpointEvery<1>, lvt::Lora<16, 32>, lvt::Shape<4, 2048>,
                             lvt::gpu::RTX4090>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("24 GiB (RTX 4090): Llama-3.1-70B, NF4 streamed from pinned memory, checkpoint every layer"); }
