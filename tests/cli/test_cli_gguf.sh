#!/usr/bin/env bash
# A .gguf file wherever the `lvt` command takes a model folder (seconds, no Python): a tiny
# random-weight llama GGUF with a byte-level tokenizer and a chat template in its metadata
# (tests/cli/make_tiny_gguf.cpp) through plan, tokenize, generate, train and eval on JSONL
# examples (the GGUF's tokenizer and chat template), merge (a Hugging Face folder with config.json
# and tokenizer files from the metadata, which loads back to the same losses), export-gguf and
# merge --gguf (one .gguf that reads back as the same model, tokenizer and losses), and the errors.
# usage: test_cli_gguf.sh LVT MAKE_TINY_GGUF SOURCE_ROOT
set -u
lvt=$1
make=$2
root=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../cli_lib.sh"
if ! "$lvt" --help | grep -q "^  tokenize"; then
  echo "SKIP: this lvt was built without the text libraries (no lvt tokenize)"
  exit 77
fi
tok=$root/tests/text/tokenizers/smollm2_style
tmpl=$root/tests/text/templates/smollm2.jinja
g=$tmp/tiny.gguf
"$make" "$g" "$tok" --template "$tmpl" || { echo "FAIL: make_tiny_gguf"; exit 1; }
"$make" "$tmp/notok.gguf" "$tok" --no-tokenizer >/dev/null || { echo "FAIL: make_tiny_gguf --no-tokenizer"; exit 1; }

# 1. plan reads the config from the metadata.
expect 0 "model: llama, 2 layers, hidden 64, heads 4/2, ffn 96, vocab 1000" -- plan --model "$g" --seq 64

# 2. tokenize: the GGUF's tokenizer gives the folder's ids (its smollm pre-tokenizer splits digits
#    as the folder's tokenizer.json does), and its chat template renders.
printf '%s\n' '{"text": "Hello world, 12345 and  42 apples."}' '{"text": "<|im_start|>user\nHi<|im_end|>"}' \
  '{"text": "x  42\n\n  7 tabs\tand spaces   "}' >"$tmp/texts.jsonl"
"$lvt" tokenize --tokenizer "$g" <"$tmp/texts.jsonl" >"$tmp/a.jsonl" || fail "tokenize --tokenizer FILE.gguf exited $?"
"$lvt" tokenize --tokenizer "$tok" <"$tmp/texts.jsonl" >"$tmp/b.jsonl" || fail "tokenize --tokenizer DIR exited $?"
[ -s "$tmp/a.jsonl" ] && cmp -s "$tmp/a.jsonl" "$tmp/b.jsonl" && echo "ok: tokenize: the .gguf's ids equal its folder's" ||
  { fail "tokenize: the .gguf's ids differ from its folder's"; diff "$tmp/a.jsonl" "$tmp/b.jsonl" | head -5; }
"$lvt" tokenize --tokenizer "$g" --decode <<<'{"ids": [1, 300, 301, 2]}' >"$tmp/d.jsonl" || fail "tokenize --decode on a .gguf"
grep -q '"text":"<|im_start|>' "$tmp/d.jsonl" || fail "decode: $(cat "$tmp/d.jsonl")"
echo '{"messages": [{"role": "user", "content": "Hi"}]}' >"$tmp/chat.jsonl"
"$lvt" tokenize --tokenizer "$g" --chat --add-generation-prompt <"$tmp/chat.jsonl" >"$tmp/c1.jsonl" || fail "tokenize --chat on a .gguf"
"$lvt" tokenize --tokenizer "$tok" --chat --add-generation-prompt --chat-template "$tmpl" <"$tmp/chat.jsonl" >"$tmp/c2.jsonl"
[ -s "$tmp/c1.jsonl" ] && cmp -s "$tmp/c1.jsonl" "$tmp/c2.jsonl" && echo "ok: tokenize --chat: the .gguf's template" ||
  fail "tokenize --chat: the .gguf's template renders otherwise than its source"
expect 1 "notok.gguf: key 'tokenizer.ggml.model': missing: this GGUF file carries no tokenizer" -- tokenize --tokenizer "$tmp/notok.gguf" </dev/null

# 3. generate: the weights requantized on load (NF4 default and none), tokenizer and chat template
#    from the metadata; eos from the tokenizer.
out=$("$lvt" generate --model "$g" --prompt "Hello world" --max-new-tokens 6 --ignore-eos 2>"$tmp/err")
rc=$?
[ "$rc" = 0 ] && grep -q "^generated: [0-9]* prompt tokens, 6 new tokens" "$tmp/err" && echo "ok: generate --model FILE.gguf" ||
  { fail "generate on a .gguf exited $rc"; tail -5 "$tmp/err"; }
"$lvt" generate --model "$g" --chat "Hi" --max-new-tokens 2 --quant none >/dev/null 2>"$tmp/err" || fail "generate --chat on a .gguf"
chat=$(sed -n 's/^generated: \([0-9]*\) prompt.*/\1/p' "$tmp/err")
[ -n "$chat" ] && [ "$chat" -gt 10 ] && echo "ok: generate --chat: $chat prompt tokens (the .gguf's template)" ||
  { fail "generate --chat prompt '$chat'"; tail -3 "$tmp/err"; }
expect 1 "--prompt needs a tokenizer" -- generate --model "$tmp/notok.gguf" --prompt "Hi" --max-new-tokens 1
expect 0 "stop: max_new_tokens" -- generate --model "$tmp/notok.gguf" --prompt-ids 1,2,3 --max-new-tokens 2

# 4. train and eval on JSONL examples: the tokenizer and chat template of the .gguf.
examples() {
  local i
  for i in 1 2 3 4 5 6 7 8; do
    echo '{"messages": [{"role": "user", "content": "What is '$i' plus '$i'?"}, {"role": "assistant", "content": "It is '$((i + i))'."}]}'
    echo '{"text": "The model trains a small adapter on text number '$i' and writes it."}'
  done
}
examples >"$tmp/train.jsonl"
m=(--model "$g" --seq 64 --batch 2 --lora-r 4 --lora-alpha 8 --lr 3e-3 --quant none)
out=$("$lvt" train "${m[@]}" --data "$tmp/train.jsonl" --steps 3 --out "$tmp/adapter" 2>&1)
rc=$?
[ "$rc" = 0 ] || { fail "train --model FILE.gguf exited $rc"; echo "$out" | tail -5; }
grep -qE "^tokenized $tmp/train.jsonl: 16 lines" <<<"$out" && grep -q "^trained 3 steps" <<<"$out" &&
  echo "ok: train --model FILE.gguf on examples" || { fail "train: no tokenizing or trained line"; echo "$out" | tail -5; }
[ -s "$tmp/adapter/adapter_model.safetensors" ] || fail "train: no adapter"
out=$("$lvt" train "${m[@]}" --data "$tmp/train.jsonl" --steps 1 --out "$tmp/adapter2" 2>&1)
grep -qF "reused the cache" <<<"$out" && echo "ok: the token cache keyed on the .gguf's metadata" || fail "cache not reused"
e1=$("$lvt" eval --model "$g" --seq 64 --batch 2 --quant none --data "$tmp/train.jsonl" --adapter "$tmp/adapter" --json 2>/dev/null)
loss1=$(sed -n 's/.*"loss": *\([0-9.eE+-]*\).*/\1/p' <<<"$e1")
[ -n "$loss1" ] && echo "ok: eval --model FILE.gguf --adapter: loss $loss1" || fail "eval on a .gguf: '$e1'"
expect 1 "holds training examples: give --tokenizer DIR (the --model .gguf file has no tokenizer metadata)" -- train --model "$tmp/notok.gguf" --data "$tmp/train.jsonl" --steps 1 --seq 64 --out "$tmp/x"
expect 0 "trained 1 steps" -- train --model "$tmp/notok.gguf" --tokenizer "$g" --data "$tmp/train.jsonl" --steps 1 --seq 64 --batch 2 --lora-r 4 --out "$tmp/x2"

# 5. merge: a Hugging Face folder (weights, config.json, tokenizer files from the metadata) that
#    evaluates as the .gguf + adapter does (bf16 rounding apart) and tokenizes as the .gguf.
expect 0 "tokenizer.json + tokenizer_config.json from its tokenizer metadata and chat template" -- \
  merge --model "$g" --adapter "$tmp/adapter" --out "$tmp/merged"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -s "$tmp/merged/$f" ] || fail "merge: no $f"
done
e2=$("$lvt" eval --model "$tmp/merged" --seq 64 --batch 2 --quant none --data "$tmp/train.jsonl" --json 2>/dev/null)
loss2=$(sed -n 's/.*"loss": *\([0-9.eE+-]*\).*/\1/p' <<<"$e2")
awk -v a="$loss1" -v b="$loss2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d < 0.02 * a) }' &&
  echo "ok: merged folder loss $loss2 ~ .gguf + adapter loss $loss1" || fail "merged loss '$loss2' vs '$loss1'"
"$lvt" tokenize --tokenizer "$tmp/merged" <"$tmp/texts.jsonl" >"$tmp/m.jsonl"
cmp -s "$tmp/a.jsonl" "$tmp/m.jsonl" && echo "ok: the merged folder tokenizes as the .gguf" || fail "merged tokenizer differs"
"$lvt" tokenize --tokenizer "$tmp/merged" --chat --add-generation-prompt <"$tmp/chat.jsonl" >"$tmp/c3.jsonl"
cmp -s "$tmp/c1.jsonl" "$tmp/c3.jsonl" && echo "ok: the merged folder has the .gguf's chat template" || fail "merged chat template differs"

# 6. quantize has nothing to do for a .gguf: a clear error.
expect 1 "a .gguf model needs no such step" -- quantize "$g" "$tmp/q"

# 7. GGUF out: export-gguf and merge --gguf write one llama .gguf that lvt reads back as the
#    same model (plan), the same tokenizer, and the merged losses.
expect 0 "wrote $tmp/q8.gguf: 20 tensors" -- export-gguf --model "$g" --out "$tmp/q8.gguf" --type q8_0
expect 0 "model: llama, 2 layers, hidden 64, heads 4/2, ffn 96, vocab 1000" -- plan --model "$tmp/q8.gguf" --seq 64
"$lvt" export-gguf --model "$g" --out "$tmp/q8.gguf" 2>"$tmp/err" >/dev/null
grep -q "^\[20/20\] output_norm.weight F32" "$tmp/err" && echo "ok: progress on stderr" || fail "no progress lines: $(tail -2 "$tmp/err")"
"$lvt" tokenize --tokenizer "$tmp/q8.gguf" <"$tmp/texts.jsonl" >"$tmp/q8.jsonl"
cmp -s "$tmp/a.jsonl" "$tmp/q8.jsonl" && echo "ok: the exported .gguf tokenizes as its base" || fail "exported tokenizer differs"
expect 0 "LoRA pairs" -- merge --model "$g" --adapter "$tmp/adapter" --gguf "$tmp/merged.gguf" --type f32
e3=$("$lvt" eval --model "$tmp/merged.gguf" --seq 64 --batch 2 --quant none --data "$tmp/train.jsonl" --json 2>/dev/null)
loss3=$(sed -n 's/.*"loss": *\([0-9.eE+-]*\).*/\1/p' <<<"$e3")
awk -v a="$loss1" -v b="$loss3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d < 1e-3 * a) }' &&
  echo "ok: merge --gguf (f32) loss $loss3 = .gguf + adapter loss $loss1" || fail "merge --gguf loss '$loss3' vs '$loss1'"
"$lvt" tokenize --tokenizer "$tmp/merged.gguf" --chat --add-generation-prompt <"$tmp/chat.jsonl" >"$tmp/c4.jsonl"
cmp -s "$tmp/c1.jsonl" "$tmp/c4.jsonl" && echo "ok: merge --gguf keeps the chat template" || fail "merged .gguf chat template differs"
#    From a Hugging Face folder (the merged one: tokenizer.json from the .gguf's metadata).
expect 0 "tokenizer metadata from $tmp/merged/tokenizer.json" -- export-gguf --model "$tmp/merged" --out "$tmp/fromdir.gguf" --type bf16
"$lvt" tokenize --tokenizer "$tmp/fromdir.gguf" <"$tmp/texts.jsonl" >"$tmp/f.jsonl"
cmp -s "$tmp/a.jsonl" "$tmp/f.jsonl" && echo "ok: a folder's tokenizer.json as GGUF metadata tokenizes the same" || fail "folder -> gguf tokenizer differs"
e4=$("$lvt" eval --model "$tmp/fromdir.gguf" --seq 64 --batch 2 --quant none --data "$tmp/train.jsonl" --json 2>/dev/null)
loss4=$(sed -n 's/.*"loss": *\([0-9.eE+-]*\).*/\1/p' <<<"$e4")
awk -v a="$loss2" -v b="$loss4" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d < 1e-4 * a) }' &&
  echo "ok: the bf16 folder as a bf16 .gguf: loss $loss4 = $loss2" || fail "fromdir loss '$loss4' vs '$loss2'"
#    From a bnb 4-bit folder (lvt quantize of the merged folder): the projections dequantized,
#    so the f32 .gguf evaluates as the folder does with --quant none.
"$lvt" quantize "$tmp/merged" "$tmp/bnb" >/dev/null 2>&1 || fail "quantize the merged folder"
expect 0 "wrote $tmp/frombnb.gguf" -- export-gguf --model "$tmp/bnb" --out "$tmp/frombnb.gguf" --type f32
e5=$("$lvt" eval --model "$tmp/bnb" --seq 64 --batch 2 --quant none --data "$tmp/train.jsonl" --json 2>/dev/null)
e6=$("$lvt" eval --model "$tmp/frombnb.gguf" --seq 64 --batch 2 --quant none --data "$tmp/train.jsonl" --json 2>/dev/null)
loss5=$(sed -n 's/.*"loss": *\([0-9.eE+-]*\).*/\1/p' <<<"$e5")
loss6=$(sed -n 's/.*"loss": *\([0-9.eE+-]*\).*/\1/p' <<<"$e6")
awk -v a="$loss5" -v b="$loss6" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d < 1e-6 * a) }' &&
  echo "ok: a bnb 4-bit folder as an f32 .gguf: loss $loss6 = $loss5" || fail "frombnb loss '$loss6' vs '$loss5'"
#    Errors, each naming the flag or file; no partial output.
expect 1 "--type: unknown GGUF type 'q5_k' (lvt writes f32, f16, bf16, q8_0, q4_0)" -- export-gguf --model "$g" --out "$tmp/x.gguf" --type q5_k
expect 1 "--gguf and --out: give one" -- merge --model "$g" --adapter "$tmp/adapter" --gguf "$tmp/x.gguf" --out "$tmp/y"
expect 1 "--type applies to --gguf" -- merge --model "$g" --adapter "$tmp/adapter" --out "$tmp/y" --type q8_0
expect 1 "$tmp/nodir/x.gguf: cannot create the file" -- export-gguf --model "$g" --out "$tmp/nodir/x.gguf"
expect 1 "--out $g: must differ from --model" -- export-gguf --model "$g" --out "$g"
expect 1 "--model $tmp/none: not a Hugging Face folder or a .gguf file" -- export-gguf --model "$tmp/none" --out "$tmp/x.gguf"
expect 1 "--model and --out are required" -- export-gguf --model "$g"
[ ! -e "$tmp/x.gguf" ] && [ ! -e "$tmp/y" ] && echo "ok: no output left by the failures" || fail "a failed command left output"

[ "$fails" = 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all .gguf CLI checks passed"
