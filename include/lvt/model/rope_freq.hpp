#pragma once
// RoPE inverse frequencies of a model description, scaled as transformers'
// modeling_rope_utils.py does: inv_freq[i] = theta^(-2i / rotary_dim), i < rotary_dim/2, then
// `linear` divides by factor, `llama3` (_compute_llama3_parameters) divides low frequencies by
// factor, keeps high ones and blends smoothly between. `longrope` needs per-dimension factor
// lists that ModelConfig does not carry: rejected. The one table the ops (ops/rope.hpp) and the
// GGUF reader (io/gguf_model.hpp: a file's rope_freqs.weight) both use.
#include <cmath>
#include <string>

#include "lvt/error.hpp"
#include "lvt/model/config.hpp"

namespace lvt {

constexpr int rope_inv_freq_elems(const ModelConfig& c) { return c.rotary_dim() / 2; }

// inv_freq [rotary_dim/2], computed in double. `unscaled`: the same without rope_scaling.
template <class T>
void rope_inv_freq(T* out, const ModelConfig& c, bool unscaled = false) {
  if (const char* why = validate(c)) throw Error(std::string("rope: model config: ") + why);
  if (c.rope_scaling == RopeScaling::longrope && !unscaled)
    throw Error("rope: rope_scaling type 'longrope' needs the per-dimension short_factor/"
                "long_factor lists of config.json, which lvt::ModelConfig does not carry");
  const int dim = c.rotary_dim();
  const double pi = 3.14159265358979323846;
  for (int i = 0; i < dim / 2; i++) {
    double f = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(dim));
    if (unscaled) {
      out[i] = T(f);
      continue;
    }
    if (c.rope_scaling == RopeScaling::linear) {
      f /= c.rope_factor;
    } else if (c.rope_scaling == RopeScaling::llama3) {
      const double old_len = c.rope_original_max_position;
      const double low_wavelen = old_len / c.rope_low_freq_factor;
      const double high_wavelen = old_len / c.rope_high_freq_factor;
      const double wavelen = 2 * pi / f;
      if (wavelen > low_wavelen) {
        f /= c.rope_factor;  // low frequency: interpolate fully
      } else if (wavelen >= high_wavelen) {  // medium: blend between f/factor and f
        const double smooth = (old_len / wavelen - c.rope_low_freq_factor) /
                              (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1 - smooth) * f / c.rope_factor + smooth * f;
      }  // high frequency: unchanged
    }
    out[i] = T(f);
  }
}

}  // namespace lvt
