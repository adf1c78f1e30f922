// Must not compile: 32 query heads cannot be grouped over 7 key/value heads.
#include <lvt/trainer.hpp>
constexpr lvt::ModelConfig broken = [] {
  lvt::ModelConfig c = lvt::presets::llama_3_1_8b;
  c.kv_heads = 7;
  return c;
}();
using Trainer = lvt::Trainer<lvt::Llama<broken>, lvt::QuantPolicy<lvt::NF4>>;
static_assert(Trainer::plan.fits());
int main() {}
