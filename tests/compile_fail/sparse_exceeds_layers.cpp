// Must not compile: 20 + 20 sparse layers on a 16-layer model.
#include <lvt/trainer.hpp>
using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_2_1b>, lvt::SparseLayers<20, 20>>;
static_assert(Trainer::plan.fits());
int main() {}
