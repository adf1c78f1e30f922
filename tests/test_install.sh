#!/usr/bin/env bash
# After `meson install`, lvt is found by pkg-config and by CMake's find_package(lvt), and a
# program including <lvt/trainer.hpp> builds against the installed headers alone.
# usage: test_install.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
DESTDIR="$tmp/root" meson install -C "$build" --quiet --no-rebuild >/dev/null
hdr=$(find "$tmp/root" -path '*/include/lvt/trainer.hpp' | head -1)
[ -n "$hdr" ] || { echo "FAIL: headers not installed"; exit 1; }
root=${hdr%/include/lvt/trainer.hpp}
cat >"$tmp/use.cpp" <<'CPP'
#include <lvt/trainer.hpp>
#include <cstdio>
using T = lvt::Trainer<lvt::Llama<lvt::presets::llama_3_2_1b>, lvt::QuantPolicy<lvt::NF4>,
                       lvt::Shape<1, 256>, lvt::gpu::RTX4060>;
static_assert(lvt::fits<T>);
int main() {
  std::printf("%lld\n", static_cast<long long>(T::plan.summary.arena_bytes));
  // the host backend's BLAS and threads link too
  float c = 0, a = 2, b = 3;
  lvt::ops::matmul::gemm(false, false, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
  std::printf("%s %d\n", lvt::ops::matmul::blas::setup().library.c_str(), int(c));
  return c == 6 ? 0 : 1;
}
CPP
pc=$(find "$root" -name lvt.pc | head -1)
[ -n "$pc" ] || { echo "FAIL: lvt.pc not installed"; exit 1; }
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR="$tmp/root" pkg-config --cflags lvt)
libs=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --libs lvt)
g++ $flags "$tmp/use.cpp" -o "$tmp/use_pc" $libs
"$tmp/use_pc" >/dev/null
echo "ok: pkg-config lvt"
if command -v cmake >/dev/null; then
  mkdir -p "$tmp/cm"
  cat >"$tmp/cm/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.16)
project(use_lvt CXX)
find_package(lvt 0.1 REQUIRED)
add_executable(use $tmp/use.cpp)
target_link_libraries(use PRIVATE lvt::lvt)
CM
  cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$root" >/dev/null
  cmake --build "$tmp/cm/build" >/dev/null
  "$tmp/cm/build/use" >/dev/null
  echo "ok: find_package(lvt)"
fi
