#!/usr/bin/env bash
# `lvt generate` against transformers: small random models (tools/peers/generate_reference.py:
# Llama tied + GQA, Llama with llama3 RoPE scaling untied + multi-query, Qwen2 with q/k/v biases)
# saved as Hugging Face folders in fp32; greedy generation (--quant none) must give the same new
# token ids as transformers' generate(do_sample=False), eos from generation_config.json included.
# Needs a Python with torch and transformers: LVT_PEERS_PYTHON, else the peers venv when it
# already exists (tools/peers-venv; not created here) and has torch. Otherwise SKIP (exit 77).
# usage: test_generate_transformers.sh LVT SOURCE_ROOT
set -u
lvt=$1
root=$2
py=${LVT_PEERS_PYTHON:-}
if [ -z "$py" ]; then
  # tools/peers-venv's cache path, looked up without creating the environment.
  hash=$(sha256sum "$root/tools/peers/requirements.txt" | cut -c1-12)
  venv=${LVT_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lvt}/peers-$hash
  if [ ! -f "$venv/.complete" ]; then
    echo "SKIP: no peers venv at $venv (run tools/peers-venv, or set LVT_PEERS_PYTHON)"
    exit 77
  fi
  py=$venv/bin/python
fi
if ! "$py" -c "import torch, transformers" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and transformers (tools/peers/requirements.txt pins no" \
       "torch; set LVT_PEERS_PYTHON to a Python with torch and transformers 5.23)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../cli_lib.sh"

"$py" "$root/tools/peers/generate_reference.py" "$tmp" >/dev/null 2>&1 ||
  { echo "FAIL: generate_reference.py failed"; "$py" "$root/tools/peers/generate_reference.py" "$tmp"; exit 1; }
for name in $("$py" -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))))" "$tmp/expected.json"); do
  read -r prompt want n < <("$py" -c "import json,sys; e=json.load(open(sys.argv[1]))[sys.argv[2]]
print(','.join(map(str, e['prompt'])), ' '.join(map(str, e['ids'])).replace(' ', '_'), e['max_new_tokens'])" \
    "$tmp/expected.json" "$name")
  want=${want//_/ }
  got=$("$lvt" generate --model "$tmp/$name" --prompt-ids "$prompt" --max-new-tokens "$n" \
    --quant none --print-ids 2>"$tmp/err")
  rc=$?
  if [ "$rc" != 0 ] || [ "$got" != "$want" ]; then
    fail "$name: lvt generate (status $rc) gave '$got', transformers '$want'"
    cat "$tmp/err"
  else
    echo "ok: $name: $(wc -w <<<"$want") greedy tokens identical to transformers ($(tail -1 "$tmp/err"))"
  fi
done
[ "$fails" = 0 ] || exit 1
