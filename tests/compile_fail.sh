#!/usr/bin/env bash
# A compile-fail test: SOURCE must not compile, and the compiler's output must contain EXPECTED.
# usage: compile_fail.sh SOURCE EXPECTED INCLUDE_DIR CXX [CXX args...]
src=$1 expect=$2 inc=$3
shift 3
if out=$("$@" -std=c++20 -fsyntax-only -I"$inc" "$src" 2>&1); then
  echo "FAIL: $src compiled, but must not"
  exit 1
fi
if ! grep -qF -- "$expect" <<<"$out"; then
  echo "FAIL: $src failed without the expected message: $expect"
  echo "$out" | head -40
  exit 1
fi
echo "ok: $src fails with: $expect"
