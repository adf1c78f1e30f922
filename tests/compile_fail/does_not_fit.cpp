// Must not compile: Llama-3.1-70B resident in NF4 needs far more than an RTX 4090's 24 GiB.
#include <lvt/trainer.hpp>
using Trainer = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_1_70b>, lvt::QuantPolicy<lvt::NF4>,
                             lvt::Lora<16, 32>, lvt::Shape<1, 1024>, lvt::gpu::RTX4090>;
static_assert(lvt::fits<Trainer>);
int main() {}
