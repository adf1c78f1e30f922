#pragma once
// SwiGLU of the Llama MLP: out = silu(gate) * up, silu(g) = g * sigmoid(g) (HF act "silu").
//   gate, up [rows, cols] with row stride `in_stride` (cols for separate gate_proj/up_proj
//   outputs; 2*cols with gate at +0 and up at +cols for phi3's fused gate_up_proj), out [rows, cols].
#include <cmath>
#include <cstdint>

#include "lvt/ops/common.hpp"

namespace lvt::ops::swiglu {

template <class T>
LVT_HD inline T sigmoid(T x) {
  using std::exp;
  return T(1) / (T(1) + exp(-x));
}

// Per element, shared with the CUDA kernel.
template <class T>
LVT_HD inline T value(T g, T u) {
  return g * sigmoid(g) * u;
}
// d out / d gate and d out / d up at (g, u).
template <class T>
LVT_HD inline void grads(T& dg, T& du, T g, T u) {
  const T s = sigmoid(g);
  dg = u * s * (T(1) + g * (T(1) - s));
  du = g * s;
}

template <class T>
void forward(T* out, const T* gate, const T* up, std::int64_t rows, std::int64_t cols,
             std::int64_t in_stride) {
  require(cols > 0 && in_stride >= cols, "swiglu", "cols must be positive and <= the row stride",
          cols);
  for (std::int64_t r = 0; r < rows; r++)
    for (std::int64_t i = 0; i < cols; i++)
      out[r * cols + i] = value(gate[r * in_stride + i], up[r * in_stride + i]);
}
template <class T>
void forward(T* out, const T* gate, const T* up, std::int64_t rows, std::int64_t cols) {
  forward(out, gate, up, rows, cols, cols);
}

// dgate += dout * d/dg, dup += dout * silu(g); dgate/dup use the same stride as gate/up.
template <class T>
void backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t rows,
              std::int64_t cols, std::int64_t in_stride) {
  require(cols > 0 && in_stride >= cols, "swiglu", "cols must be positive and <= the row stride",
          cols);
  for (std::int64_t r = 0; r < rows; r++)
    for (std::int64_t i = 0; i < cols; i++) {
      const std::int64_t j = r * in_stride + i;
      T dg, du;
      grads(dg, du, gate[j], up[j]);
      dgate[j] += dout[r * cols + i] * dg;
      dup[j] += dout[r * cols + i] * du;
    }
}
template <class T>
void backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t rows,
              std::int64_t cols) {
  backward(dgate, dup, dout, gate, up, rows, cols, cols);
}

}  // namespace lvt::ops::swiglu
