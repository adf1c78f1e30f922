#pragma once
// The message of the lvt::Error a callable throws: what the bad-input tests compare.
#include <string>

#include "lvt/error.hpp"

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const lvt::Error& e) {
    return e.what();
  }
  return "(no error)";
}
