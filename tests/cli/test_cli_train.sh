#!/usr/bin/env bash
# `lvt train` and `lvt eval` end to end on a tiny model (seconds): the loss falls, the adapter is
# written and loads, --json parses, resume is bit-identical, --shuffle off reads the file in
# order, and each bad input stops with status 1 and a message naming the flag or file.
# usage: test_cli_train.sh LVT
set -u
lvt=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../cli_lib.sh"
has_python=0
command -v python3 >/dev/null && has_python=1

# A tiny Llama over bytes (vocab 256), and real English text: generated from a fixed seed so the
# test does not depend on other files; words drawn from a list, sentences of varying length.
mkdir -p "$tmp/model"
cat >"$tmp/model/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
 "num_key_value_heads": 2, "vocab_size": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "max_position_embeddings": 128, "tie_word_embeddings": false}
JSON
words=(the model trains a small adapter on text and writes it to a folder where another run
       loads it again before the loss falls while memory stays planned in one arena for every
       step of the schedule with weights quantized to four bits)
RANDOM=7
make_text() {  # make_text N: N sentences
  local i j n s
  for ((i = 0; i < $1; i++)); do
    n=$((4 + RANDOM % 9))
    s=""
    for ((j = 0; j < n; j++)); do s+="${words[RANDOM % ${#words[@]}]} "; done
    echo "${s^}."
  done
}
make_text 150 >"$tmp/train.txt"
make_text 40 >"$tmp/heldout.txt"
m=(--model "$tmp/model/config.json" --random-weights 3 --init-std 0.08 --seq 32 --batch 2)
lr=(--lr 3e-3 --lora-r 8 --lora-alpha 16)

# 1. Train: backend line, plan line, a progress line per step, the loss falls on held-out text,
#    the PEFT adapter is written.
out=$("$lvt" train "${m[@]}" "${lr[@]}" --text "$tmp/train.txt" --eval-text "$tmp/heldout.txt" \
  --steps 40 --checkpoint-every 1 --out "$tmp/adapter" 2>&1)
rc=$?
echo "$out" | grep -E "^(backend|plan|eval|trained)"
[ "$rc" = 0 ] || fail "train exited $rc"
grep -qE "^backend: (host \(fp32 reference|cuda \()" <<<"$out" || fail "no backend line"
grep -q "^plan: arena .* pinned .*checkpoint every 1 layers" <<<"$out" || fail "no plan line"
[ "$(grep -c '^step [0-9]*/40  loss [0-9.]*  lr' <<<"$out")" = 40 ] || fail "not 40 progress lines"
grep -qF "RANDOM frozen weights (--random-weights 3)" <<<"$out" || fail "random weights not said"
before=$(sed -n 's/^eval before: loss \([0-9.]*\).*/\1/p' <<<"$out")
after=$(sed -n 's/^eval after: loss \([0-9.]*\).*/\1/p' <<<"$out")
if awk -v b="$before" -v a="$after" 'BEGIN { exit !(b > 0 && a < b - 0.3) }'; then
  echo "ok: held-out loss $before -> $after"
else
  fail "held-out loss did not fall by 0.3: '$before' -> '$after'"
fi
for f in adapter_model.safetensors adapter_config.json; do
  [ -s "$tmp/adapter/$f" ] || fail "no $f written"
done
if [ $has_python = 1 ]; then
  python3 - "$tmp/adapter" <<'PY' || fail "adapter files are not PEFT's format"
import json, struct, sys
d = sys.argv[1]
c = json.load(open(d + "/adapter_config.json"))
assert c["peft_type"] == "LORA" and c["r"] == 8 and c["lora_alpha"] == 16, c
assert sorted(c["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
raw = open(d + "/adapter_model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
keys = [k for k in h if k != "__metadata__"]
assert len(keys) == 2 * 2 * 7, len(keys)  # 2 layers x 7 projections x (A, B)
a = h["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
b = h["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
assert a["dtype"] == "F32" and a["shape"] == [8, 64] and b["shape"] == [64, 8], (a, b)
print("ok: adapter_config.json and adapter_model.safetensors are PEFT's layout")
PY
fi

# 2. The adapter loads in `lvt eval` and gives the loss `train` measured after training.
out=$("$lvt" eval "${m[@]}" --text "$tmp/heldout.txt" --adapter "$tmp/adapter" 2>&1)
got=$(sed -n 's/^eval loss \([0-9.]*\) .*over \([0-9]*\) tokens.*/\1/p' <<<"$out")
if [ -n "$after" ] && [ "$got" = "$after" ]; then echo "ok: eval --adapter gives $got"; else
  fail "eval --adapter: '$got', train said '$after'"; echo "$out"; fi
expect 0 "eval loss $before" -- eval "${m[@]}" --text "$tmp/heldout.txt"

# 3. --json: one object per step on stdout and a summary; eval --json.
"$lvt" train "${m[@]}" "${lr[@]}" --text "$tmp/train.txt" --eval-text "$tmp/heldout.txt" --steps 5 \
  --json --out "$tmp/j" >"$tmp/train.json" 2>"$tmp/train.err" || fail "train --json exited $?"
"$lvt" eval "${m[@]}" --text "$tmp/heldout.txt" --adapter "$tmp/j" --json >"$tmp/eval.json" \
  2>/dev/null || fail "eval --json exited $?"
if [ $has_python = 1 ]; then
  python3 - "$tmp/train.json" "$tmp/eval.json" <<'PY' || fail "--json output"
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if l["event"] == "step"]
assert [s["step"] for s in steps] == [1, 2, 3, 4, 5], steps
assert all(math.isfinite(s["loss"]) and s["tokens_per_s"] > 0 for s in steps)
s = lines[-1]
assert s["event"] == "summary" and len(lines) == 6, s
assert s["losses"] == [x["loss"] for x in steps] and s["step"] == 5 and s["tokens"] == 5 * 2 * 32
assert s["arena_bytes"] > 0 and s["files"][0].endswith("adapter_model.safetensors")
e = json.load(open(sys.argv[2]))
assert abs(e["loss"] - s["eval_loss_after"]) < 1e-9, (e, s)
assert e["tokens"] == e["batches"] * 2 * 32 and e["batch"] == 2 and e["seq"] == 32
print("ok: --json (5 step objects, a summary; eval object agrees with train's eval_loss_after)")
PY
else
  [ "$(grep -c '"event":"step"' "$tmp/train.json")" = 5 ] || fail "--json step objects"
fi
grep -q "^plan: arena" "$tmp/train.err" || fail "--json: the plan line should go to stderr"

# 4. Resume: 3 steps, checkpoint, resume for the last 3 == 6 steps straight, bit for bit (with
#    dropout on, so the dropout counter resumes too).
r=("${m[@]}" "${lr[@]}" --text "$tmp/train.txt" --steps 6 --lora-dropout 0.1 --seed 5)
"$lvt" train "${r[@]}" --out "$tmp/straight" >/dev/null 2>&1 || fail "straight run"
"$lvt" train "${r[@]}" --stop-after 3 --checkpoint-dir "$tmp/ckpt" --out "$tmp/half" >/dev/null 2>&1 ||
  fail "half run"
for f in adapter_config.json adapter_model.safetensors optimizer.safetensors trainer_state.json; do
  [ -s "$tmp/ckpt/$f" ] || fail "checkpoint lacks $f"
done
expect 0 "resume: $tmp/ckpt at step 3" -- train "${r[@]}" --resume "$tmp/ckpt" --out "$tmp/resumed"
if cmp -s "$tmp/straight/adapter_model.safetensors" "$tmp/resumed/adapter_model.safetensors"; then
  echo "ok: resumed adapter == straight adapter"
else
  fail "resumed adapter differs from the straight run"
fi
cmp -s "$tmp/straight/adapter_model.safetensors" "$tmp/half/adapter_model.safetensors" &&
  fail "the half run equals the straight run: the comparison cannot fail"
# An adapter as the start of another run.
expect 0 "adapter: starting from $tmp/straight" -- train "${r[@]}" --adapter-init "$tmp/straight" \
  --steps 2 --out "$tmp/again"

# 5. --shuffle off: step 1 trains on the first batch of the file, whose loss (B = 0 at the start)
#    is what eval measures on that batch; shuffled, it is another batch.
if [ $has_python = 1 ]; then
  "$lvt" train "${m[@]}" --text "$tmp/train.txt" --steps 1 --shuffle off --json --out "$tmp/s0" \
    2>/dev/null | head -1 >"$tmp/s0.json"
  "$lvt" train "${m[@]}" --text "$tmp/train.txt" --steps 1 --shuffle on --seed 9 --json \
    --out "$tmp/s1" 2>/dev/null | head -1 >"$tmp/s1.json"
  "$lvt" eval "${m[@]}" --text "$tmp/train.txt" --max-batches 1 --json >"$tmp/e0.json" 2>/dev/null
  python3 - "$tmp/s0.json" "$tmp/s1.json" "$tmp/e0.json" <<'PY' || fail "--shuffle off order"
import json, sys
off, on, ev = (json.load(open(p)) for p in sys.argv[1:])
assert abs(off["loss"] - ev["loss"]) < 1e-6, (off, ev)
assert abs(on["loss"] - ev["loss"]) > 1e-4, (on, ev)
print("ok: --shuffle off starts at the file's first windows (%.6f == %.6f); shuffled: %.6f"
      % (off["loss"], ev["loss"], on["loss"]))
PY
fi

# 6. Token files: llm.c uint16 .bin and JSONL (with a loss mask) instead of --text.
if [ $has_python = 1 ]; then
  python3 - "$tmp" <<'PY'
import json, struct, sys
d = sys.argv[1]
text = open(d + "/train.txt", "rb").read()
open(d + "/train.bin", "wb").write(struct.pack("<256i", 20240520, 1, len(text), *([0] * 253)) +
                                   struct.pack("<%dH" % len(text), *text))
bad = list(text[:400]); bad[123] = 300
open(d + "/big.bin", "wb").write(struct.pack("<256i", 20240520, 1, len(bad), *([0] * 253)) +
                                 struct.pack("<%dH" % len(bad), *bad))
with open(d + "/docs.jsonl", "w") as f:
    for line in text.decode().splitlines():
        ids = list(line.encode())
        f.write(json.dumps({"input_ids": ids, "loss_mask": [0] * 3 + [1] * (len(ids) - 3)}) + "\n")
PY
  expect 0 "step 3/3" -- train "${m[@]}" --data "$tmp/train.bin" --steps 3 --out "$tmp/bin"
  expect 0 "step 3/3" -- train "${m[@]}" --data "$tmp/docs.jsonl" --steps 3 --out "$tmp/jsonl"
  # The loss mask leaves targets out: fewer tokens than batches x batch x seq.
  out=$("$lvt" eval "${m[@]}" --data "$tmp/docs.jsonl" --max-batches 4 2>&1)
  n=$(sed -n 's/.* over \([0-9]*\) tokens.*/\1/p' <<<"$out")
  if [ -n "$n" ] && [ "$n" -lt 256 ] && [ "$n" -gt 128 ]; then echo "ok: masked tokens: $n of 256"; else
    fail "eval on masked JSONL counted '$n' tokens"; echo "$out"; fi
  expect 1 "big.bin: token 123 is id 300, not below the model's vocab_size 256" -- \
    train "${m[@]}" --data "$tmp/big.bin" --out "$tmp/x"
fi

# 7. A Hugging Face folder (config.json + F32 safetensors written here): weights are loaded, not
#    random; a run on it trains and its adapter evaluates.
if [ $has_python = 1 ]; then
  mkdir -p "$tmp/hf"
  cp "$tmp/model/config.json" "$tmp/hf/"
  python3 - "$tmp/hf" <<'PY'
import json, random, struct, sys
random.seed(11)
L, C, F, V, KV = 2, 64, 128, 256, 32
shapes = {"model.embed_tokens.weight": [V, C], "lm_head.weight": [V, C], "model.norm.weight": [C]}
for l in range(L):
    p = "model.layers.%d." % l
    shapes.update({p + "self_attn.q_proj.weight": [C, C], p + "self_attn.k_proj.weight": [KV, C],
                   p + "self_attn.v_proj.weight": [KV, C], p + "self_attn.o_proj.weight": [C, C],
                   p + "mlp.gate_proj.weight": [F, C], p + "mlp.up_proj.weight": [F, C],
                   p + "mlp.down_proj.weight": [C, F], p + "input_layernorm.weight": [C],
                   p + "post_attention_layernorm.weight": [C]})
header, blobs, off = {}, [], 0
for name, shape in shapes.items():
    n = 1
    for d in shape: n *= d
    vals = [1.0] * n if len(shape) == 1 else [random.gauss(0, 0.08) for _ in range(n)]
    blobs.append(struct.pack("<%df" % n, *vals))
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
    off += 4 * n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1] + "/model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
  hf=(--model "$tmp/hf" --seq 32 --batch 2)
  expect 0 "weights loaded from the folder" -- train "${hf[@]}" "${lr[@]}" --text "$tmp/train.txt" \
    --steps 20 --out "$tmp/hf-adapter"
  b=$("$lvt" eval "${hf[@]}" --text "$tmp/heldout.txt" 2>&1 | sed -n 's/^eval loss \([0-9.]*\).*/\1/p')
  a=$("$lvt" eval "${hf[@]}" --text "$tmp/heldout.txt" --adapter "$tmp/hf-adapter" 2>&1 |
    sed -n 's/^eval loss \([0-9.]*\).*/\1/p')
  if awk -v b="$b" -v a="$a" 'BEGIN { exit !(b > 0 && a < b - 0.2) }'; then
    echo "ok: Hugging Face folder: held-out loss $b -> $a with the adapter"
  else
    fail "Hugging Face folder: held-out loss '$b' -> '$a'"
  fi
  expect 1 "--model '$tmp/model/config.json' has no weights" -- train --model "$tmp/model/config.json" \
    --seq 32 --text "$tmp/train.txt" --out "$tmp/x"
fi

# 8. Bad input: status 1 and a message that names the flag or the file.
expect 1 "--model is required" -- train --text "$tmp/train.txt" --out "$tmp/x"
expect 1 "--data FILE (or --text FILE) is required" -- train "${m[@]}" --out "$tmp/x"
expect 1 "--out DIR is required" -- train "${m[@]}" --text "$tmp/train.txt"
expect 1 "--data '$tmp/none.bin': no such file" -- train "${m[@]}" --data "$tmp/none.bin" --out "$tmp/x"
expect 1 "--seq 256 exceeds the model's max_position_embeddings 128" -- \
  train "${m[@]}" --seq 256 --text "$tmp/train.txt" --out "$tmp/x"
expect 1 "--seq 512 (the default) exceeds" -- \
  eval --model "$tmp/model/config.json" --random-weights 1 --text "$tmp/train.txt"
expect 1 "field 'r' is 8 but the run uses --lora-r 4" -- \
  train "${m[@]}" --lora-r 4 --lora-alpha 16 --text "$tmp/train.txt" --adapter-init "$tmp/adapter" --out "$tmp/x"
expect 1 "field 'target_modules' differs from the run's --targets" -- \
  train "${m[@]}" "${lr[@]}" --targets attention --text "$tmp/train.txt" --adapter-init "$tmp/adapter" --out "$tmp/x"
expect 1 "field 'layers_to_transform' differs from the run's --sparse layers" -- \
  train "${m[@]}" "${lr[@]}" --sparse 1,0 --text "$tmp/train.txt" --adapter-init "$tmp/adapter" --out "$tmp/x"
expect 1 "$tmp/nothing/adapter_config.json: cannot open" -- \
  eval "${m[@]}" --text "$tmp/train.txt" --adapter "$tmp/nothing"
expect 1 "--lora-r comes from the adapter" -- \
  eval "${m[@]}" --text "$tmp/train.txt" --adapter "$tmp/adapter" --lora-r 4
# NaN loss: an absurd learning rate blows the adapter up after step 1; the run stops naming the
# optimizer step and the last good checkpoint.
expect 1 "non-finite loss" -- train "${m[@]}" --text "$tmp/train.txt" --lr 1e30 --steps 5 \
  --checkpoint-dir "$tmp/nan-ckpt" --save-every 1 --out "$tmp/x"
expect 1 "(optimizer step 2; last good checkpoint: $tmp/nan-ckpt)" -- train "${m[@]}" \
  --text "$tmp/train.txt" --lr 1e30 --steps 5 --checkpoint-dir "$tmp/nan-ckpt" --save-every 1 --out "$tmp/x"
expect 1 "--model 'llama-3.2-1b' has no weights" -- train --model llama-3.2-1b --seq 32 \
  --text "$tmp/train.txt" --out "$tmp/x"
expect 1 "--shuffle 'maybe': expected on or off" -- train "${m[@]}" --text "$tmp/train.txt" \
  --shuffle maybe --out "$tmp/x"
expect 1 "--seed 6 differs from the seed 5 of $tmp/ckpt/trainer_state.json" -- \
  train "${r[@]}" --seed 6 --resume "$tmp/ckpt" --out "$tmp/x"
expect 1 "--resume $tmp/ckpt is at step 3, not before --steps 3" -- \
  train "${r[@]}" --steps 3 --resume "$tmp/ckpt" --out "$tmp/x"
expect 1 "$tmp/model/trainer_state.json: cannot open" -- \
  train "${r[@]}" --resume "$tmp/model" --out "$tmp/x"
expect 1 "fewer than one --batch of 64" -- train "${m[@]}" --batch 64 --text "$tmp/heldout.txt" --out "$tmp/x"
sed 's/"vocab_size": 256/"vocab_size": 128/' "$tmp/model/config.json" >"$tmp/v128.json"
expect 1 "--text gives byte tokens 0..255 but the model's vocab_size is 128" -- \
  train --model "$tmp/v128.json" --random-weights 1 --seq 32 --text "$tmp/train.txt" --out "$tmp/x"
expect 1 "--save-every needs --checkpoint-dir" -- train "${m[@]}" --text "$tmp/train.txt" --save-every 2 --out "$tmp/x"
expect 1 "--grad-accum '0'" -- train "${m[@]}" --text "$tmp/train.txt" --grad-accum 0 --out "$tmp/x"
expect 1 "unknown option --epochs" -- train "${m[@]}" --text "$tmp/train.txt" --epochs 2 --out "$tmp/x"
expect 1 "--backend 'gpu': expected auto, host or cuda" -- train "${m[@]}" --text "$tmp/train.txt" --backend gpu --out "$tmp/x"
expect 0 "backend: host (fp32 reference; --backend host)" -- train "${m[@]}" --text "$tmp/train.txt" --backend host --steps 1 --out "$tmp/x"
# --backend cuda without a usable GPU (or without the CUDA build) fails and says why.
if ! nvidia-smi >/dev/null 2>&1; then
  expect 1 "--backend cuda: " -- train "${m[@]}" --text "$tmp/train.txt" --backend cuda --out "$tmp/x"
fi
expect 0 "usage: lvt train" -- train --help
expect 0 "usage: lvt eval" -- eval --help

# --threads: a fixed count trains the same adapter, bit for bit, run after run; 0, more than the
# machine has and non-numbers are refused with the machine's count in the message.
cores=$(nproc)
for t in 1 "$cores"; do
  for i in 1 2; do
    expect 0 "step 3/3" -- train "${m[@]}" "${lr[@]}" --text "$tmp/train.txt" --steps 3 \
      --lora-dropout 0.1 --threads "$t" --out "$tmp/threads$t-$i"
  done
  if cmp -s "$tmp/threads$t-1/adapter_model.safetensors" "$tmp/threads$t-2/adapter_model.safetensors"; then
    echo "ok: --threads $t twice gives the same adapter"
  else
    fail "--threads $t: two runs wrote different adapters"
  fi
done
expect 1 "--threads '0': expected 1 to $cores (this machine lets lvt use $cores core" -- \
  train "${m[@]}" --text "$tmp/train.txt" --threads 0 --out "$tmp/x"
expect 1 "--threads '$((cores + 1))': expected 1 to $cores" -- \
  train "${m[@]}" --text "$tmp/train.txt" --threads $((cores + 1)) --out "$tmp/x"
expect 1 "--threads 'two': expected 1 to $cores" -- \
  train "${m[@]}" --text "$tmp/train.txt" --threads two --out "$tmp/x"
expect 1 "--threads '0': expected 1 to $cores" -- eval "${m[@]}" --text "$tmp/heldout.txt" --threads 0
expect 0 "eval loss" -- eval "${m[@]}" --text "$tmp/heldout.txt" --threads 1 --max-batches 2
expect 0 "--threads N" -- train --help

[ "$fails" = 0 ] || { echo "$fails failures"; exit 1; }
echo "all ok"
