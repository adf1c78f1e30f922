#!/usr/bin/env bash
# tools/gpu-check's GPU detection, on any machine: with no driver, a failing driver and a GPU
# older than sm_75 it exits 77 with the reason, in seconds, having built nothing.
# usage: test_gpu_check.sh SOURCE_ROOT
set -u
root=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/cli_lib.sh"
expect_skip() {  # expect_skip WHAT SMI PATTERN
  local start=$SECONDS out rc
  out=$(LVT_NVIDIA_SMI=$2 bash "$root/tools/gpu-check" --out "$tmp/out" --build "$tmp/build" 2>&1)
  rc=$?
  [ "$rc" = 77 ] || fail "$1: exit $rc, not 77: $out"
  grep -q "^gpu-check: SKIP: .*$3" <<<"$out" || fail "$1: no reason matching '$3': $out"
  [ $((SECONDS - start)) -le 10 ] || fail "$1: took $((SECONDS - start)) s"
  [ ! -e "$tmp/build/build.ninja" ] || fail "$1: configured a build"
  grep -q "SKIP" "$tmp/out/summary.md" || fail "$1: summary.md does not say SKIP"
  echo "ok: $1: $out"
}
expect_skip "no driver" "$tmp/no-such-nvidia-smi" "no NVIDIA driver"
printf '#!/bin/sh\necho "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"; exit 9\n' >"$tmp/smi-fail"
printf '#!/bin/sh\necho "Tesla P100-PCIE-16GB, 6.0, 535.54.03"\n' >"$tmp/smi-p100"
chmod +x "$tmp/smi-fail" "$tmp/smi-p100"
expect_skip "driver fails" "$tmp/smi-fail" "could not communicate"
expect_skip "sm_60" "$tmp/smi-p100" "is sm_60; lvt's kernels need sm_75"
[ "$fails" = 0 ] || exit 1
echo "gpu-check detection: ok"
