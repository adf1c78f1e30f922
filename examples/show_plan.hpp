#pragma once
// Prints a Trainer's compile-time plan. The examples train once the backends exist; today they
// state their model and policies, static_assert the fit, and print the plan.
#include <cstdio>

#include "lvt/plan/report.hpp"

template <class Trainer>
int show_plan(const char* title) {
  std::printf("== %s\n%s", title, lvt::plan::table(Trainer::plan).c_str());
  return Trainer::plan.fits() ? 0 : 1;
}
