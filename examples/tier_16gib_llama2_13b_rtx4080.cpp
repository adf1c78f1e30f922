// 16 GiB (RTX 4080): Llama-2-13B, NF4 resident, checkpoint every 4, batch 2 x 1024
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_2_13b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::CheckpointEvery<4>, lvt::Lora<16, 32>,
                             lvt::Shape<2, 1024>, lvt::gpu::RTX4080>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("16 GiB (RTX 4080): Llama-2-13B, NF4 resident, checkpoint every 4, batch 2 x 1024"); }
