#!/usr/bin/env bash
# Installs what lvt builds with, from Debian's packages, when it is missing. Sourced by
# tools/run-main and tools/run-tests.
set -euo pipefail
need=()
command -v meson >/dev/null || need+=(meson)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cmake >/dev/null || need+=(cmake)
[ -f /usr/include/doctest/doctest.h ] || need+=(doctest-dev)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
[ -f /usr/include/benchmark/benchmark.h ] || need+=(libbenchmark-dev)
# The host backend's matrix products (cblas_sgemm); meson stops with this name when it is missing.
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
# text/: Oniguruma (the regex engine of the tokenizers library) and utf8proc (NFC / NFKC).
[ -f /usr/include/oniguruma.h ] || need+=(libonig-dev)
[ -f /usr/include/utf8proc.h ] || need+=(libutf8proc-dev)
# tools/peers-venv: the pinned peer libraries (tokenizers, transformers, ...) in a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${LVT_SANITIZE:-}" = 1 ]; then
  command -v clang++ >/dev/null || need+=(clang)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_=""
  [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}"
fi
# nvcc is optional: the CUDA toolkit's usual place is added to PATH when it exists.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
