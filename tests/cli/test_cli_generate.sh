#!/usr/bin/env bash
# `lvt generate` end to end on tiny random-weight models (seconds): text streams to stdout with
# a summary line on stderr, --chat renders the chat template, sampling is reproducible per seed,
# eos from generation_config.json stops, generation_config.json's do_sample sets the default,
# `lvt plan --generate-context` shows the KV cache, bad input stops with a clear message, and
# --backend cuda runs on a GPU or says why it cannot.
# usage: test_cli_generate.sh LVT SOURCE_ROOT
set -u
lvt=$1
root=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../cli_lib.sh"

mkdir -p "$tmp/model" "$tmp/tok"
cat >"$tmp/model/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2,
 "num_key_value_heads": 2, "vocab_size": 1024, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "max_position_embeddings": 256, "tie_word_embeddings": true}
JSON
# A byte-level tokenizer (1000 tokens) with a ChatML template.
cp "$root/tests/text/tokenizers/smollm2_style/tokenizer.json" "$tmp/tok/"
cat >"$tmp/tok/tokenizer_config.json" <<'JSON'
{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast",
 "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}
JSON
m=(--model "$tmp/model" --random-weights 3 --init-std 0.3 --tokenizer "$tmp/tok")

# 1. Greedy text on stdout, the summary on stderr.
out=$("$lvt" generate "${m[@]}" --prompt "Hello world" --max-new-tokens 12 --ignore-eos 2>"$tmp/err")
rc=$?
[ "$rc" = 0 ] || { fail "generate exited $rc"; cat "$tmp/err"; }
[ -n "$out" ] || fail "no text on stdout"
grep -qE "^generated: [0-9]+ prompt tokens, 12 new tokens; prefill [0-9.]+ tok/s \([0-9.]+ s\), decode [0-9.]+ tok/s \(11 steps, [0-9.]+ s\); stop: max_new_tokens$" "$tmp/err" ||
  { fail "no summary line"; cat "$tmp/err"; }
grep -q "^generate: KV cache .* for [0-9]* tokens; greedy" "$tmp/err" || fail "no KV cache line"
grep -qF "RANDOM frozen weights" "$tmp/err" || fail "random weights not said"
echo "ok: greedy text: $(head -c 60 <<<"$out" | tr '\n' ' ')"
again=$("$lvt" generate "${m[@]}" --prompt "Hello world" --max-new-tokens 12 --ignore-eos 2>/dev/null)
[ "$out" = "$again" ] || fail "greedy text differs between runs"
# The streamed text is the decode of the ids --print-ids gives (same run otherwise).
ids=$("$lvt" generate "${m[@]}" --prompt "Hello world" --max-new-tokens 12 --ignore-eos --print-ids 2>/dev/null)
[ "$(wc -w <<<"$ids")" = 12 ] || fail "--print-ids: '$ids' is not 12 ids"

# 2. Sampling: the same seed gives the same text, another seed other text.
s=(--prompt "Once upon" --max-new-tokens 24 --ignore-eos --temperature 1.2 --top-k 50 --top-p 0.95)
a1=$("$lvt" generate "${m[@]}" "${s[@]}" --seed 1 --print-ids 2>"$tmp/err")
a2=$("$lvt" generate "${m[@]}" "${s[@]}" --seed 1 --print-ids 2>/dev/null)
b1=$("$lvt" generate "${m[@]}" "${s[@]}" --seed 2 --print-ids 2>/dev/null)
grep -q "sampling (temperature 1.2" "$tmp/err" || fail "no sampling line"
[ -n "$a1" ] && [ "$a1" = "$a2" ] || fail "same seed, different ids: '$a1' vs '$a2'"
[ "$a1" != "$b1" ] || fail "seeds 1 and 2 gave the same 24 ids"
echo "ok: sampling reproducible per seed"

# 3. --chat: the user message inside the template (more prompt tokens than the text alone).
"$lvt" generate "${m[@]}" --chat "Hello world" --max-new-tokens 4 --ignore-eos >/dev/null 2>"$tmp/err" ||
  { fail "--chat failed"; cat "$tmp/err"; }
plain=$("$lvt" generate "${m[@]}" --prompt "Hello world" --max-new-tokens 1 2>&1 >/dev/null | sed -n 's/^generated: \([0-9]*\) prompt.*/\1/p')
chat=$(sed -n 's/^generated: \([0-9]*\) prompt.*/\1/p' "$tmp/err")
[ -n "$chat" ] && [ "$chat" -gt $((plain + 4)) ] || fail "--chat prompt tokens '$chat' vs plain '$plain'"
echo "ok: --chat: $chat prompt tokens (plain prompt $plain)"

# 4. eos from generation_config.json (a list) stops after that token; do_sample sets sampling.
first=${ids%% *}
echo "{\"eos_token_id\": [999, $first]}" >"$tmp/model/generation_config.json"
"$lvt" generate "${m[@]}" --prompt "Hello world" --max-new-tokens 12 >/dev/null 2>"$tmp/err"
grep -q "^generated: .* 1 new tokens;.*stop: eos$" "$tmp/err" || { fail "eos did not stop"; cat "$tmp/err"; }
echo '{"do_sample": true, "temperature": 0.7, "top_p": 0.9}' >"$tmp/model/generation_config.json"
"$lvt" generate "${m[@]}" --prompt "Hi" --max-new-tokens 3 >/dev/null 2>"$tmp/err"
grep -q "sampling (temperature 0.70*, top-k 50, top-p 0.90*" "$tmp/err" || { fail "do_sample default not taken"; cat "$tmp/err"; }
"$lvt" generate "${m[@]}" --prompt "Hi" --max-new-tokens 3 --temperature 0 >/dev/null 2>"$tmp/err"
grep -q "; greedy$" "$tmp/err" || fail "--temperature 0 is not greedy"
rm "$tmp/model/generation_config.json"
echo "ok: generation_config.json eos and do_sample"

# 5. Without a tokenizer: ids in, ids out; an NF4 model (the default quantization).
expect 0 "stop: max_new_tokens" -- generate --model "$tmp/model/config.json" --random-weights 1 \
  --prompt-ids 1,2,3 --max-new-tokens 5
# 6. The KV cache in the plan report.
expect 0 "kv_cache" -- plan --model "$tmp/model/config.json" --seq 64 --generate-context 200
expect 0 "KV cache for 200 tokens" -- plan --model "$tmp/model/config.json" --seq 64 --generate-context 200

# 7. Bad input.
expect 1 "give one of --prompt TEXT, --chat TEXT or --prompt-ids LIST" -- generate "${m[@]}"
expect 1 "--backend 'gpu': expected auto, host or cuda" -- generate "${m[@]}" --prompt x --backend gpu
expect 1 "needs a tokenizer" -- generate --model "$tmp/model" --random-weights 1 --prompt x
expect 1 "--prompt-ids '5000': expected an integer from 0 to 1023" -- generate "${m[@]}" --prompt-ids 1,5000
expect 1 "--top-p must be in (0, 1]" -- generate "${m[@]}" --prompt x --top-p 0
expect 1 "--context 300 exceeds the model's max_position_embeddings 256" -- generate "${m[@]}" --prompt x --context 300
expect 1 "no tokenizer.json there" -- generate "${m[@]}" --tokenizer "$tmp" --prompt x
expect 1 "--threads '0': expected 1 to $(nproc)" -- generate "${m[@]}" --prompt x --threads 0
expect 1 "--threads '$(($(nproc) + 1))': expected 1 to $(nproc)" -- generate "${m[@]}" --prompt x --threads $(($(nproc) + 1))
expect 0 "stop: max_new_tokens" -- generate --model "$tmp/model/config.json" --random-weights 1 \
  --prompt-ids 1,2,3 --max-new-tokens 5 --threads 1

# 8. --backend: auto and host run on the host; cuda on the GPU when one is usable (the backend
# line says so), else it stops with the reason (no GPU, or an lvt built without CUDA).
"$lvt" generate "${m[@]}" --prompt x --max-new-tokens 2 >/dev/null 2>"$tmp/err"
grep -q "^backend: host (fp32 reference" "$tmp/err" || { fail "auto: no host backend line"; cat "$tmp/err"; }
"$lvt" generate "${m[@]}" --prompt x --max-new-tokens 2 --backend host >/dev/null 2>"$tmp/err"
grep -q "^backend: host (fp32 reference; --backend host)" "$tmp/err" || { fail "--backend host line"; cat "$tmp/err"; }
out=$("$lvt" generate "${m[@]}" --prompt "Hello world" --max-new-tokens 6 --ignore-eos --print-ids --backend cuda 2>"$tmp/err")
rc=$?
if [ "$rc" = 0 ]; then
  grep -q "^backend: cuda (" "$tmp/err" && grep -q "6 new tokens;.*stop: max_new_tokens$" "$tmp/err" &&
    [ "$(wc -w <<<"$out")" = 6 ] || { fail "--backend cuda ran but said otherwise"; cat "$tmp/err"; }
  echo "ok: --backend cuda generated on the GPU: $out"
else
  [ "$rc" = 1 ] && grep -qF -- "--backend cuda: " "$tmp/err" ||
    { fail "--backend cuda: status $rc without the reason"; cat "$tmp/err"; }
  echo "ok: --backend cuda refused here: $(tail -1 "$tmp/err")"
fi

[ "$fails" = 0 ] || exit 1
echo "all generate checks passed"
