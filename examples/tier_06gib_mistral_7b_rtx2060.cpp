// 6 GiB (RTX 2060, sm_75): Mistral-7B, NF4 resident, checkpoint every 8 layers, FP16
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::mistral_7b>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::CheckpointEvery<8>, lvt::Lora<16, 32>,
                             lvt::Precision<lvt::FP16>, lvt::Shape<1, 512>, lvt::gpu::RTX2060>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("6 GiB (RTX 2060, sm_75): Mistral-7B, NF4 resident, checkpoint every 8 layers, FP16"); }
