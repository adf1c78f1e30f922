// 40 GiB (A100 40GB): Phi-4 14B, NF4 resident, batch 2 x 2048, no recompute
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::phi_4>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::CheckpointEvery<0>, lvt::Lora<16, 32>,
                             lvt::Shape<2, 2048>, lvt::gpu::A100_40GB>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("40 GiB (A100 40GB): Phi-4 14B, NF4 resident, batch 2 x 2048, no recompute"); }
