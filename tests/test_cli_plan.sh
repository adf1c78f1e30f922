#!/usr/bin/env bash
# `lvt plan` end to end: outputs, exit codes, and the messages for bad input.
# usage: test_cli_plan.sh LVT
set -u
lvt=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/cli_lib.sh"

expect 0 "fits," -- plan --model llama-3.1-8b --budget rtx4060 --checkpoint-every 8
expect 0 "--auto chose:" -- plan --model llama-3.1-8b --budget 8GiB --auto
expect 3 "fits with: --offload pinned" -- plan --model llama-3.1-70b --budget rtx4090 --seq 1024
expect 3 "nothing fits this budget" -- plan --model llama-3.2-1b --budget 1GiB
expect 1 "--budget '8 gigs': expected a size like 8GiB" -- plan --model llama-3.1-8b --budget "8 gigs"
expect 1 "--budget 'rtx9999'" -- plan --model llama-3.1-8b --budget rtx9999
expect 1 "neither a preset" -- plan --model no-such-model
expect 1 "unknown option --bogus" -- plan --model llama-3.1-8b --bogus
expect 1 "SparseLayers<First, Last>: First + Last exceeds" -- plan --model llama-3.2-1b --sparse 10,10
expect 1 "--checkpoint-every 'x'" -- plan --model llama-3.2-1b --checkpoint-every x
expect 1 "BF16 needs compute capability 8.0" -- plan --model llama-3.2-1b --budget gtx1650 --precision bf16

# A Hugging Face config.json: good, then with an inconsistent and an unknown field.
mkdir -p "$tmp/good" "$tmp/heads" "$tmp/arch"
cat >"$tmp/good/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
 "intermediate_size": 5632, "num_attention_heads": 32, "num_hidden_layers": 22,
 "num_key_value_heads": 4, "vocab_size": 32000, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "max_position_embeddings": 2048, "tie_word_embeddings": false, "rope_scaling": null}
JSON
sed 's/"num_attention_heads": 32/"num_attention_heads": 30/' "$tmp/good/config.json" >"$tmp/heads/config.json"
sed 's/"model_type": "llama"/"model_type": "gpt2"/; s/LlamaForCausalLM/GPT2LMHeadModel/' "$tmp/good/config.json" >"$tmp/arch/config.json"
expect 0 "22 layers, hidden 2048" -- plan --model "$tmp/good" --budget 4GiB --sm 86
expect 1 "num_attention_heads" -- plan --model "$tmp/heads"
expect 1 "$tmp/heads/config.json" -- plan --model "$tmp/heads"
expect 1 "gpt2" -- plan --model "$tmp/arch/config.json"
printf '{"hidden_size": ' >"$tmp/broken.json"
expect 1 "broken.json" -- plan --model "$tmp/broken.json"

# JSON and SVG outputs.
"$lvt" plan --model llama-3.2-1b --budget 8GiB --offload pinned --checkpoint-every 4 --json >"$tmp/plan.json" \
  --svg "$tmp/plan.svg"
if command -v python3 >/dev/null; then
  python3 - "$tmp/plan.json" <<'PY' || fails=$((fails + 1))
import json, sys
p = json.load(open(sys.argv[1]))
s = p["summary"]
assert s["fits"] and s["arena_bytes"] >= s["live_lower_bound"], s
assert len(p["buffers"]) > 16 and len(p["actions"]) > 16
assert any(a["op"] == "fetch_weights" for a in p["actions"])
dev = [b for b in p["buffers"] if b["memory"] == "device"]
for i, a in enumerate(dev):
    for b in dev[i + 1:]:
        live = a["first"] <= b["last"] and b["first"] <= a["last"]
        mem = a["offset"] < b["offset"] + b["bytes"] and b["offset"] < a["offset"] + a["bytes"]
        assert not (live and mem), (a, b)
print("ok: plan JSON is consistent")
PY
fi
if grep -q "<svg" "$tmp/plan.svg" && grep -q "activations" "$tmp/plan.svg"; then echo "ok: svg"; else
  echo "FAIL: svg"; fails=$((fails + 1)); fi
[ "$fails" = 0 ] || { echo "$fails failures"; exit 1; }
