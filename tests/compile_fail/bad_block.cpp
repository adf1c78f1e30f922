// Must not compile: 48 is not one of bitsandbytes' block sizes.
#include <lvt/trainer.hpp>
using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_2_1b>, lvt::QuantPolicy<lvt::NF4, true, 48>>;
static_assert(Trainer::plan.fits());
int main() {}
