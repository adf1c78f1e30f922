// 4 GiB (GTX 1650, sm_75): Phi-4 14B, NF4 streamed from pinned memory, LoRA on the first 3 and last 5 layers
#include <lvt/trainer.hpp>

#include "show_plan.hpp"

using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::phi_4>,
                             lvt::QuantPolicy<lvt::NF4>, lvt::OffloadPolicy<lvt::Pinned>,
                             lvt::CheckpointEvery<1>, lvt::SparseLayers<3, 5>, lvt::Lora<4, 8>,
                             lvt::Precision<lvt::FP16>, lvt::Shape<1, 256>, lvt::gpu::GTX1650>;

static_assert(lvt::fits<Trainer>);

int main() { return show_plan<Trainer>("4 GiB (GTX 1650, sm_75): Phi-4 14B, NF4 streamed from pinned memory, LoRA on the first 3 and last 5 layers"); }
