#pragma once
// Learning-rate schedule: cosine with linear warmup, as transformers'
// get_cosine_schedule_with_warmup (num_cycles = 0.5). `step` is the optimizer step about to be
// taken, counted from 0 like the LambdaLR the Trainer steps after each update:
//   step < warmup:  lr * step / max(1, warmup)
//   otherwise:      progress = (step - warmup) / max(1, total - warmup)
//                   lr * max(0, 0.5 * (1 + cos(pi * 2 * num_cycles * progress)))
#include <cmath>
#include <cstdint>

#include "lvt/ops/common.hpp"

namespace lvt::ops::schedule {

inline double cosine_with_warmup(std::int64_t step, std::int64_t warmup_steps,
                                 std::int64_t total_steps, double num_cycles = 0.5) {
  require(warmup_steps >= 0, "schedule", "warmup steps must be non-negative", warmup_steps);
  require(total_steps >= 0, "schedule", "training steps must be non-negative", total_steps);
  require(step >= 0, "schedule", "step must be non-negative", step);
  const double pi = 3.14159265358979323846;
  if (step < warmup_steps)
    return double(step) / double(warmup_steps > 1 ? warmup_steps : 1);
  const std::int64_t span = total_steps - warmup_steps;
  const double progress = double(step - warmup_steps) / double(span > 1 ? span : 1);
  const double f = 0.5 * (1.0 + std::cos(pi * num_cycles * 2.0 * progress));
  return f > 0.0 ? f : 0.0;
}

// The learning rate at `step`: base_lr times the multiplier above.
inline double lr_at(double base_lr, std::int64_t step, std::int64_t warmup_steps,
                    std::int64_t total_steps) {
  return base_lr * cosine_with_warmup(step, warmup_steps, total_steps);
}

}  // namespace lvt::ops::schedule
