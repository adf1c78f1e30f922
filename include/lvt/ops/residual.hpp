#pragma once
// Residual connection: out = a + b (out may alias a or b). Its backward is the identity on both
// branches, which the accumulate-into-gradient convention gives for free: both branches' backward
// add into the same d buffer, so there is no residual backward function.
#include <cstdint>

namespace lvt::ops::residual {

template <class T>
void forward(T* out, const T* a, const T* b, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

}  // namespace lvt::ops::residual
