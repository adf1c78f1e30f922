// 80 GiB (H100): Llama-3.1-70B, NF4 resident, checkpoint every 16, batch 2 x 4096
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_1_70b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::CheckpointEvery<16>, lvt::Lora<16, 32>,
                             lvt::Shape<2, 4096>, lvt::gpu::H100>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("80 GiB (H100): Llama-3.1-70B, NF4 resident, checkpoint every 16, batch 2 x 4096"); }
