// Must not compile: no policy set puts Llama-3.2-1B on a 1 GiB device (its 501 MiB lm head and
// the 512 MiB CUDA context reserve alone exceed it).
#include <lvt/trainer.hpp>
using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_2_1b>, lvt::QuantPolicy<lvt::NF4>,
                             lvt::Shape<1, 512>, lvt::gpu::Tier<1, 89>>;
static_assert(lvt::fits<Trainer>);
int main() {}
