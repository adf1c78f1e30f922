// 12 GiB (RTX 3060): Qwen2.5-7B, NF4 resident, every activation kept, sequence 1024
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::qwen2_5_7b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::CheckpointEvery<0>, lvt::Lora<16, 32>,
                             lvt::Shape<1, 1024>, lvt::gpu::RTX3060>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("12 GiB (RTX 3060): Qwen2.5-7B, NF4 resident, every activation kept, sequence 1024"); }
