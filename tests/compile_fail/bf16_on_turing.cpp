// Must not compile: BF16 (the default precision) on an sm_75 card.
#include <lvt/trainer.hpp>
using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_2_1b>, lvt::QuantPolicy<lvt::NF4>,
                             lvt::gpu::GTX1650>;
static_assert(Trainer::plan.fits());
int main() {}
