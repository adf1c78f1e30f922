// 48 GiB (L40S): Llama-3.1-70B, NF4 resident, checkpoint every 8, sequence 2048
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_1_70b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::CheckpointEvery<8>, lvt::Lora<16, 32>,
                             lvt::Shape<1, 2048>, lvt::gpu::L40S>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("48 GiB (L40S): Llama-3.1-70B, NF4 resident, checkpoint every 8, sequence 2048"); }
