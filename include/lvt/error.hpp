#pragma once
// One exception type for every bad input lvt reports: the message names the file, tensor or
// field, and says what to change where that is known.
#include <stdexcept>
#include <string>

namespace lvt {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace lvt
