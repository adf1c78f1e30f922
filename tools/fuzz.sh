#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang++ -fsanitize=fuzzer,address,undefined) and
# runs each for a bounded time. Fails (non-zero) on any crash, sanitizer report or leak.
#   tools/fuzz.sh [SECONDS_PER_TARGET=60] [JOBS=1]
# Needs clang (Debian: clang, libclang-rt-dev / the clang package's libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
jobs=${2:-1}
cxx=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14 || true)}
[ -n "$cxx" ] || { echo "fuzz.sh: clang++ not found (apt-get install clang)"; exit 2; }
out=build-fuzz
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -Iinclude -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# Seed corpora: config texts, tokenizer files, chat templates, training-example lines and GGUF
# files from the repo; small valid and broken safetensors built here.
mkdir -p "$out/corpus/config" "$out/corpus/safetensors" "$out/corpus/tokenizer" "$out/corpus/chat_template" \
         "$out/corpus/examples" "$out/corpus/gguf" "$out/corpus/gguf_tokenizer"
cp tests/fuzz/corpus/config/*.json "$out/corpus/config/"
# GGUF: gguf-py's metadata file (every value type) and two small files written by gguf_serialize
# (a llama-shaped v3 with Q8_0 / Q4_0 / Q4_K tensors, a v2 with alignment 16).
cp tests/fuzz/corpus/gguf/*.gguf "$out/corpus/gguf/"
# GGUF tokenizer metadata: small byte-level and SentencePiece vocabularies (gguf-py).
cp tests/fuzz/corpus/gguf_tokenizer/*.gguf "$out/corpus/gguf_tokenizer/"
cp tests/fuzz/corpus/tokenizer/* "$out/corpus/tokenizer/"
cp tests/text/templates/*.jinja "$out/corpus/chat_template/"  # the real ones the goldens use
# Training examples: one file per line of the golden input (every format).
n=0
while IFS= read -r line; do
  n=$((n + 1))
  printf '%s' "$line" > "$out/corpus/examples/line$n.json"
done < tests/text/data/examples.jsonl
st_seed() {  # st_seed NAME HEADER DATA_BYTES
  local hdr=$2 n=${#2}
  { printf "$(printf '\\x%02x' $((n & 255)) $((n >> 8 & 255)) 0 0 0 0 0 0)"; printf '%s' "$hdr";
    head -c "$3" /dev/urandom; } > "$out/corpus/safetensors/$1"
}
st_seed ok '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
st_seed two '{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F16","shape":[3],"data_offsets":[12,18]}}' 18
st_seed overlap '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}}' 8
st_seed empty '{}' 0

# Each target is built and then fuzzed in its own background job, at most $(nproc) at a time
# (libFuzzer's -jobs=1 runs in-process): the targets are independent, so the stage takes about
# ceil(targets / cores) x (build + SECONDS) rather than the sum.
targets=(safetensors config tokenizer chat_template examples gguf gguf_tokenizer)
declare -A libs=([tokenizer]="-lonig -lutf8proc" [examples]="-lonig -lutf8proc" [gguf_tokenizer]="-lonig -lutf8proc")
par=${LVT_FUZZ_PARALLEL:-$(nproc)}
one() {  # one TARGET: build, fuzz; the log in $out/TARGET.log
  local target=$1 exe="$out/fuzz_$1"
  {
    echo "== building $exe"
    # shellcheck disable=SC2086
    "$cxx" "${flags[@]}" -DLVT_SOURCE_ROOT="\"$PWD\"" "tests/fuzz/fuzz_$target.cpp" -o "$exe" ${libs[$target]:-} || return 1
    echo "== fuzzing $target for ${secs}s"
    mkdir -p "$out/work_$target"
    "$exe" -max_total_time="$secs" -jobs="$jobs" -workers="$jobs" -print_final_stats=1 \
      -artifact_prefix="$out/crash_${target}_" "$out/work_$target" "$out/corpus/$target"
  } >"$out/$target.log" 2>&1
}
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$par" ]; do wait -n || true; done
  rm -f "$out/$target.rc"
  { one "$target"; echo $? >"$out/$target.rc"; } &
done
wait
status=0
for target in "${targets[@]}"; do
  if [ "$(cat "$out/$target.rc" 2>/dev/null)" = 0 ]; then
    echo "fuzz.sh: $target clean for ${secs}s ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$target.log" | tail -1 | grep -o '[0-9]*$') inputs)"
  else
    cat "$out/$target.log"
    echo "fuzz.sh: $target FAILED (log above; artifacts: $out/crash_${target}_*)"
    status=1
  fi
done
[ $status -eq 0 ] && echo "fuzz.sh: all targets clean for ${secs}s each"
exit $status
