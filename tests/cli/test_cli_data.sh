#!/usr/bin/env bash
# `lvt tokenize` (encode, decode, chat) against the committed tokenizer goldens, and `lvt train`
# / `lvt eval` on a JSONL file of training examples: tokenized once into a cache that is reused
# while nothing changes, packed rows, truncation counted, resume bit-identical, and every bad
# input stops with status 1 and a message naming the file and line (no cache, no adapter left).
# usage: test_cli_data.sh LVT SOURCE_ROOT
set -u
lvt=$1
root=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../cli_lib.sh"
command -v python3 >/dev/null || { echo "SKIP: python3 is needed to build the inputs"; exit 77; }
if ! "$lvt" --help | grep -q "^  tokenize"; then
  echo "SKIP: this lvt was built without the text libraries (no lvt tokenize)"
  exit 77
fi
tok=$root/tests/text/tokenizers/smollm2_style
tmpl=$root/tests/text/templates/smollm2.jinja

# 1. Encode: the first 120 corpus strings, with and without special tokens, equal the goldens
#    of the Rust tokenizers library; decode gives its text back.
python3 - "$root" "$tmp" <<'PY'
import json, sys
root, tmp = sys.argv[1:]
corpus = [json.loads(l) for l in open(f"{root}/tests/text/corpus.jsonl", encoding="utf-8")][:120]
gold = [json.loads(l) for l in open(f"{root}/tests/text/goldens/smollm2_style.jsonl", encoding="utf-8")][:120]
with open(f"{tmp}/texts.jsonl", "w", encoding="utf-8") as f:
    for s in corpus: f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
with open(f"{tmp}/ids.jsonl", "w") as f:
    for g in gold: f.write(json.dumps({"ids": g["n"]}) + "\n")
PY
"$lvt" tokenize --tokenizer "$tok" <"$tmp/texts.jsonl" >"$tmp/enc.jsonl" || fail "tokenize exited $?"
"$lvt" tokenize --tokenizer "$tok" --add-special <"$tmp/texts.jsonl" >"$tmp/enc_s.jsonl" || fail "tokenize --add-special exited $?"
"$lvt" tokenize --tokenizer "$tok" --decode <"$tmp/ids.jsonl" >"$tmp/dec.jsonl" || fail "tokenize --decode exited $?"
python3 - "$root" "$tmp" <<'PY' || fail "lvt tokenize differs from the goldens"
import json, sys
root, tmp = sys.argv[1:]
gold = [json.loads(l) for l in open(f"{root}/tests/text/goldens/smollm2_style.jsonl", encoding="utf-8")][:120]
enc = [json.loads(l) for l in open(f"{tmp}/enc.jsonl", encoding="utf-8")]
enc_s = [json.loads(l) for l in open(f"{tmp}/enc_s.jsonl", encoding="utf-8")]
dec = [json.loads(l) for l in open(f"{tmp}/dec.jsonl", encoding="utf-8")]
assert len(enc) == len(enc_s) == len(dec) == 120, (len(enc), len(enc_s), len(dec))
bad = [i for i in range(120) if enc[i]["ids"] != gold[i]["n"] or enc_s[i]["ids"] != gold[i]["s"] or dec[i]["text"] != gold[i]["d"]]
assert not bad, f"differ at lines {bad[:5]}"
print("ok: 120 strings encode (both ways) and decode as the tokenizers library does")
PY

# 2. Chat: the SmolLM2 template's rendering and ids, as the data golden (transformers) has them.
python3 - "$root" "$tmp" <<'PY'
import json, sys
root, tmp = sys.argv[1:]
lines = open(f"{root}/tests/text/data/examples.jsonl", encoding="utf-8").read().split("\n")
with open(f"{tmp}/chat.jsonl", "w", encoding="utf-8") as f:
    f.write(lines[14] + "\n\n" + lines[15] + "\n")  # two conversations and a blank line
PY
"$lvt" tokenize --tokenizer "$tok" --chat --chat-template "$tmpl" <"$tmp/chat.jsonl" >"$tmp/chat_out.jsonl" ||
  fail "tokenize --chat exited $?"
"$lvt" tokenize --tokenizer "$tok" --chat --add-generation-prompt --chat-template "$tmpl" <"$tmp/chat.jsonl" \
  >"$tmp/chat_gen.jsonl" || fail "tokenize --chat --add-generation-prompt exited $?"
python3 - "$root" "$tmp" <<'PY' || fail "lvt tokenize --chat differs from transformers' apply_chat_template"
import json, sys
root, tmp = sys.argv[1:]
gold = {g["line"]: g for g in map(json.loads, open(f"{root}/tests/text/goldens/data_smollm2.jsonl"))}
out = open(f"{tmp}/chat_out.jsonl", encoding="utf-8").read().split("\n")
assert out[1] == "", "a blank line stays blank"
a, b = json.loads(out[0]), json.loads(out[2])
assert a["ids"] == gold[15]["ids"] and b["ids"] == gold[16]["ids"], "ids"
assert a["text"] == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                     "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"), a["text"]
g = json.loads(open(f"{tmp}/chat_gen.jsonl").read().split("\n")[0])
assert g["text"] == a["text"] + "<|im_start|>assistant\n", g["text"]
print("ok: --chat renders and encodes as apply_chat_template; --add-generation-prompt appends the prompt")
PY

# 3. tokenize errors: status 1, the line named.
printf '{"text": "a"}\nnot json\n' >"$tmp/bad1.jsonl"
expect 1 "stdin:2: not JSON" -- tokenize --tokenizer "$tok" <"$tmp/bad1.jsonl"
printf '{"ids": [1, 2]}\n{"ids": [5, 999999]}\n' >"$tmp/bad2.jsonl"
expect 1 "stdin:2: ids[1] is 999999, not a token id of the tokenizer (vocab size 1000)" -- tokenize --tokenizer "$tok" --decode <"$tmp/bad2.jsonl"
printf '{"ids": [-1]}\n' >"$tmp/bad3.jsonl"
expect 1 "stdin:1: ids[0] is -1" -- tokenize --tokenizer "$tok" --decode <"$tmp/bad3.jsonl"
printf '{"txt": "a"}\n' >"$tmp/bad4.jsonl"
expect 1 "stdin:1: expected an object with \"text\"" -- tokenize --tokenizer "$tok" <"$tmp/bad4.jsonl"
printf '{"text": "caf\xc3"}\n' >"$tmp/bad5.jsonl"
expect 1 "stdin:1: invalid UTF-8 (byte 14 of the line)" -- tokenize --tokenizer "$tok" <"$tmp/bad5.jsonl"
printf '{"messages": [{"role": "user"}]}\n' >"$tmp/bad6.jsonl"
expect 1 "stdin:1: messages[0]: message without \"content\"" -- tokenize --tokenizer "$tok" --chat --chat-template "$tmpl" <"$tmp/bad6.jsonl"
expect 1 "has no \"chat_template\" (give --chat-template FILE)" -- tokenize --tokenizer "$tok" --chat </dev/null
expect 1 "--tokenizer DIR is required" -- tokenize </dev/null
expect 1 "no tokenizer.json there" -- tokenize --tokenizer "$tmp" </dev/null
expect 1 "--add-generation-prompt needs --chat" -- tokenize --tokenizer "$tok" --add-generation-prompt </dev/null
expect 1 "--decode and --chat exclude each other" -- tokenize --tokenizer "$tok" --decode --chat </dev/null

# 4. Training examples: a tiny model over the tokenizer's 1000 ids, every format in one file.
mkdir -p "$tmp/model" "$tmp/run"
cat >"$tmp/model/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
 "num_key_value_heads": 2, "vocab_size": 1000, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "max_position_embeddings": 512, "tie_word_embeddings": false}
JSON
cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" "$tmp/model/"
python3 - "$tmp/train.jsonl" <<'PY'
import json, random, sys
random.seed(5)
words = "the model trains a small adapter on text and writes it to a folder where another run loads it".split()
def s(n): return " ".join(random.choice(words) for _ in range(n))
with open(sys.argv[1], "w") as f:
    for i in range(60):
        k = i % 4
        if k == 0: e = {"text": s(12).capitalize() + "."}
        elif k == 1: e = {"prompt": "Q: " + s(5) + "?\nA:", "completion": " " + s(6) + "."}
        elif k == 2: e = {"messages": [{"role": "user", "content": s(6)}, {"role": "assistant", "content": s(8)}]}
        else: e = {"instruction": s(5), "input": s(3) if i % 8 == 3 else "", "output": s(7)}
        f.write(json.dumps(e) + "\n")
    f.write(json.dumps({"text": s(300)}) + "\n")  # longer than --seq 256: truncated
PY
m=(--model "$tmp/model/config.json" --random-weights 3 --init-std 0.08 --seq 256 --batch 2
   --tokenizer "$tmp/model" --chat-template "$tmpl" --lora-r 4 --lora-alpha 8 --lr 3e-3)
out=$("$lvt" train "${m[@]}" --data "$tmp/train.jsonl" --steps 4 --out "$tmp/run/a1" 2>&1)
rc=$?
echo "$out" | grep -E "^(tokeniz|tokens|data)"
[ "$rc" = 0 ] || { fail "train on examples exited $rc"; echo "$out" | tail -5; }
grep -qE "^tokenized $tmp/train.jsonl: 61 lines \([0-9]+ lines/s\), 61 examples, [0-9]+ tokens" <<<"$out" || fail "no tokenizing summary"
grep -qF "tokens: cache $tmp/run/train.jsonl.lvt-cache.safetensors: no cache yet; wrote" <<<"$out" || fail "cache not written next to --out"
grep -qE "^data: --data $tmp/train.jsonl: 61 examples, [0-9]+ tokens \([0-9]+ targets\) packed into [0-9]+ rows of 256 \([0-9.]+% padding\), 1 truncated to --seq" <<<"$out" ||
  fail "no packed data line with 1 truncated"
[ "$(grep -c '^step [0-9]/4  loss' <<<"$out")" = 4 ] || fail "not 4 progress lines"
[ -s "$tmp/run/train.jsonl.lvt-cache.safetensors" ] || fail "no cache file"
targets=$(sed -n 's/^data: .*tokens (\([0-9]*\) targets).*/\1/p' <<<"$out")

# The second run reuses the cache and trains to the same adapter, byte for byte.
out=$("$lvt" train "${m[@]}" --data "$tmp/train.jsonl" --steps 4 --out "$tmp/run/a2" 2>&1)
grep -qF "tokens: reused the cache $tmp/run/train.jsonl.lvt-cache.safetensors (data, tokenizer and options unchanged)" <<<"$out" ||
  fail "cache not reused"
grep -q "^tokenized" <<<"$out" && fail "tokenized again although the cache matches"
cmp -s "$tmp/run/a1/adapter_model.safetensors" "$tmp/run/a2/adapter_model.safetensors" || fail "cached run differs"
# --train-on-prompt: a rebuild, more targets.
out=$("$lvt" train "${m[@]}" --data "$tmp/train.jsonl" --steps 1 --train-on-prompt --out "$tmp/run/a3" 2>&1)
grep -qF "the data, tokenizer or format options changed; wrote" <<<"$out" || fail "--train-on-prompt did not rebuild the cache"
more=$(sed -n 's/^data: .*tokens (\([0-9]*\) targets).*/\1/p' <<<"$out")
[ -n "$more" ] && [ -n "$targets" ] && [ "$more" -gt "$targets" ] && echo "ok: --train-on-prompt: $targets -> $more targets" ||
  fail "--train-on-prompt targets '$targets' -> '$more'"
# --cache off: nothing written; --cache DIR: there.
mkdir -p "$tmp/cachedir"
expect 0 "tokens: no cache (--cache off)" -- train "${m[@]}" --data "$tmp/train.jsonl" --steps 1 --cache off --out "$tmp/run/a4"
expect 0 "wrote $tmp/cachedir/train.jsonl.lvt-cache.safetensors" -- train "${m[@]}" --data "$tmp/train.jsonl" --steps 1 --cache "$tmp/cachedir" --out "$tmp/run/a5"

# 5. Resume on packed rows: 2 steps + checkpoint + resume == 4 steps straight, bit for bit.
r=("${m[@]}" --data "$tmp/train.jsonl" --steps 4 --lora-dropout 0.1 --seed 9)
expect 0 "trained 4 steps" -- train "${r[@]}" --out "$tmp/run/straight"
expect 0 "trained 2 steps" -- train "${r[@]}" --stop-after 2 --checkpoint-dir "$tmp/run/ckpt" --out "$tmp/run/half"
expect 0 "resume: $tmp/run/ckpt at step 2" -- train "${r[@]}" --resume "$tmp/run/ckpt" --out "$tmp/run/resumed"
cmp -s "$tmp/run/straight/adapter_model.safetensors" "$tmp/run/resumed/adapter_model.safetensors" &&
  echo "ok: packed rows: resumed adapter == straight adapter" || fail "packed resume differs from the straight run"

# 6. eval on examples (the cache next to the data file), and on the adapter trained above.
expect 0 "eval loss" -- eval --model "$tmp/model/config.json" --random-weights 3 --init-std 0.08 --seq 256 --batch 2 \
  --chat-template "$tmpl" --data "$tmp/train.jsonl" --tokenizer "$tmp/model"
[ -s "$tmp/train.jsonl.lvt-cache.safetensors" ] || fail "eval: no cache next to the data file"
js=$("$lvt" eval --model "$tmp/model/config.json" --random-weights 3 --init-std 0.08 --seq 256 --batch 2 \
  --chat-template "$tmpl" --data "$tmp/train.jsonl" --tokenizer "$tmp/model" --json 2>/dev/null)
python3 -c "import json,sys; j=json.loads(sys.argv[1]); assert j['tokens'] > 0 and j['loss'] > 0, j" "$js" &&
  echo "ok: eval --json on examples" || fail "eval --json on examples: $js"

# 7. Errors: file and line named, status 1, no cache and no adapter written.
bad() {  # bad NAME LINE...: a data file of these lines
  printf '%s\n' "${@:2}" >"$tmp/$1"
}
bad e1.jsonl '{"text": "a"}' '' '{"text": "b"'
bad e2.jsonl '{"text": "a"}' '{"foo": 1}'
bad e3.jsonl '{"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}'
bad e4.jsonl '{"prompt": "a"}'
printf '{"text": "ok"}\n{"text": "\xff"}\n' >"$tmp/e6.jsonl"
mkdir -p "$tmp/err"
expect 1 "$tmp/e1.jsonl:3: not JSON" -- train "${m[@]}" --data "$tmp/e1.jsonl" --out "$tmp/err/o"
expect 1 "$tmp/e2.jsonl:2: no known format" -- train "${m[@]}" --data "$tmp/e2.jsonl" --out "$tmp/err/o"
expect 1 "$tmp/e3.jsonl:1: messages[1]: message without \"role\"" -- train "${m[@]}" --data "$tmp/e3.jsonl" --out "$tmp/err/o"
expect 1 "$tmp/e4.jsonl:1: field 'prompt' without 'completion'" -- train "${m[@]}" --data "$tmp/e4.jsonl" --out "$tmp/err/o"
expect 1 "$tmp/e6.jsonl:2: invalid UTF-8" -- train "${m[@]}" --data "$tmp/e6.jsonl" --out "$tmp/err/o"
expect 1 "$tmp/train.jsonl:61: example of" -- train "${m[@]}" --data "$tmp/train.jsonl" --no-truncate --out "$tmp/err/o"
expect 1 "longer than seq 256 (truncation is off)" -- train "${m[@]}" --data "$tmp/train.jsonl" --no-truncate --out "$tmp/err/o"
[ -e "$tmp/err/o" ] && fail "an adapter folder was left behind after an error"
# A file that fails to tokenize leaves no cache (a --no-truncate failure comes after tokenizing:
# its cache is valid and stays).
ls "$tmp/err" | grep -q "^e[0-9].*cache" && fail "a cache was written for a bad file"
ls "$tmp" | grep -q "tmp\." && fail "a temporary file was left behind"
# No exact loss mask: an error naming the line, or --skip-mismatched leaves it out and counts it.
printf '%s' "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %} PROMPT:{% endif %}" >"$tmp/differs.jinja"
head -3 "$tmp/train.jsonl" >"$tmp/mixed.jsonl"
mx=("${m[@]}" --chat-template "$tmp/differs.jinja" --batch 1 --data "$tmp/mixed.jsonl" --steps 1)
expect 1 "$tmp/mixed.jsonl:3: message 1: the conversation rendered up to it (with add_generation_prompt) is not a prefix" -- train "${mx[@]}" --out "$tmp/err/o"
expect 1 "(--skip-mismatched leaves such examples out, counted)" -- train "${mx[@]}" --out "$tmp/err/o"
expect 0 "tokens: 1 examples skipped (--skip-mismatched): no exact loss mask; the first: $tmp/mixed.jsonl:3: message 1" -- train "${mx[@]}" --skip-mismatched --out "$tmp/run/skip"
expect 0 "tokens: 1 examples skipped" -- train "${mx[@]}" --skip-mismatched --out "$tmp/run/skip"  # from the cache
rm -rf "$tmp/run/skip"
mm=(--model "$tmp/model/config.json" --random-weights 3 --seq 64)
expect 1 "holds training examples: give --tokenizer DIR" -- train "${mm[@]}" --data "$tmp/train.jsonl" --out "$tmp/err/o"
expect 1 "a messages example needs a chat template" -- train "${mm[@]}" --tokenizer "$tok" --data "$tmp/train.jsonl" --out "$tmp/err/o"
expect 1 "--tokenizer is for a --data JSONL file of training examples" -- train "${mm[@]}" --tokenizer "$tok" --text "$tmp/texts.jsonl" --out "$tmp/err/o"
expect 1 "--cache '$tmp/nope': not a folder" -- train "${m[@]}" --data "$tmp/train.jsonl" --cache "$tmp/nope" --out "$tmp/err/o"
printf '{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 1, "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 256}\n' >"$tmp/small.json"
expect 1 "not below the model's vocab_size 300" -- train --model "$tmp/small.json" --random-weights 1 --seq 64 \
  --tokenizer "$tmp/model" --chat-template "$tmpl" --data "$tmp/train.jsonl" --out "$tmp/err/o"

echo "$fails failure(s)"
[ "$fails" = 0 ]
