#!/usr/bin/env bash
# Shared by the CLI test scripts: a failure counter and `expect STATUS SUBSTRING -- ARGS...`,
# which runs `$lvt ARGS` and checks the exit status and that stdout + stderr contain SUBSTRING.
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
expect() {
  local want=$1 text=$2
  shift 3
  local out rc
  out=$("$lvt" "$@" 2>&1)
  rc=$?
  if [ "$rc" != "$want" ] || ! grep -qF -- "$text" <<<"$out"; then
    fail "lvt $* -> status $rc (want $want), output lacks: $text"
    echo "$out" | tail -20
  else
    echo "ok: lvt $*"
  fi
}
