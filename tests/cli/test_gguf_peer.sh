#!/usr/bin/env bash
# GGUF files lvt writes, read by the peer: gguf-py 0.19.0 (llama.cpp's own Python package) opens
# each file `lvt export-gguf` writes (f32, f16, bf16, q8_0, q4_0; from a float32 Hugging Face
# folder with llama3 RoPE scaling and a tokenizer, and from a .gguf with tokenizer metadata and a
# chat template) and every key and tensor equals what lvt reads (tests/cli/gguf_dump): values of
# the same GGUF type, tensors dequantized by gguf.quants.dequantize bit for bit; and each tensor's
# bytes are gguf-py's own quantize of the HF weight with the q/k rows permuted as
# convert_hf_to_gguf.py does, rope_freqs.weight the converter's formula
# (tools/peers/check_gguf_file.py). Needs the peers venv (tools/peers-venv, made when PyPI is
# reachable) or LVT_PEERS_PYTHON; otherwise SKIP (exit 77).
# usage: test_gguf_peer.sh LVT MAKE_TINY_GGUF GGUF_DUMP SOURCE_ROOT
set -u
lvt=$1
make=$2
dump=$3
root=$4
py=${LVT_PEERS_PYTHON:-}
if [ -z "$py" ]; then
  venv=$(bash "$root/tools/peers-venv")
  rc=$?
  [ "$rc" = 0 ] || { echo "SKIP: tools/peers-venv could not make the peers venv (exit $rc; see above)"; exit 77; }
  py=$venv/bin/python
fi
"$py" -c "import gguf, numpy, safetensors" 2>/dev/null ||
  { echo "SKIP: $py cannot import gguf, numpy and safetensors"; exit 77; }
if ! "$lvt" --help | grep -q "^  tokenize"; then
  echo "SKIP: this lvt was built without the text libraries (no tokenizer to write)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/../cli_lib.sh"
tok=$root/tests/text/tokenizers/smollm2_style

# A float32 llama folder: GQA, ffn 80 (ffn_down rows not a multiple of 32: the F16 fallback),
# llama3 RoPE scaling with enough medium frequencies to fit, untied; the smollm2_style tokenizer.
"$py" - "$tmp/hf" "$tok" <<'PY' || { echo "FAIL: making the HF folder"; exit 1; }
import json, os, shutil, sys
import numpy as np
from safetensors.numpy import save_file
out, tok = sys.argv[1:3]
os.makedirs(out)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tok, f), out)
tj = json.load(open(os.path.join(tok, "tokenizer.json")))
vocab = max(list(tj["model"]["vocab"].values()) + [a["id"] for a in tj["added_tokens"]]) + 1
h, heads, kv, hd, ffn, layers = 256, 2, 1, 128, 80, 2
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h, "intermediate_size": ffn,
       "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
       "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
       "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32",
       "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192}}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
rng = np.random.default_rng(7)
w = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,), "lm_head.weight": (vocab, h)}
for l in range(layers):
    p = f"model.layers.{l}."
    w.update({p + "self_attn.q_proj.weight": (heads * hd, h), p + "self_attn.k_proj.weight": (kv * hd, h),
              p + "self_attn.v_proj.weight": (kv * hd, h), p + "self_attn.o_proj.weight": (h, heads * hd),
              p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
              p + "mlp.down_proj.weight": (h, ffn), p + "input_layernorm.weight": (h,),
              p + "post_attention_layernorm.weight": (h,)})
save_file({k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in w.items()}, os.path.join(out, "model.safetensors"))
PY

check() {  # FILE [HF]
  if ! "$dump" "$1" "$tmp/floats" >"$tmp/dump.json"; then fail "gguf_dump $1"; return; fi
  if "$py" "$root/tools/peers/check_gguf_file.py" "$1" "$tmp/dump.json" "$tmp/floats" ${2:+"$2"} >"$tmp/check.out" 2>&1; then
    sed "s|^|$(basename "$1"): |" "$tmp/check.out"
  else
    fail "gguf-py's reading of $(basename "$1") differs from lvt's"
    tail -12 "$tmp/check.out"
  fi
}

for t in f16 bf16 q8_0 q4_0 f32; do
  "$lvt" export-gguf --model "$tmp/hf" --out "$tmp/hf_$t.gguf" --type "$t" >"$tmp/out" 2>"$tmp/err" ||
    { fail "export-gguf --type $t exited $?"; tail -3 "$tmp/err"; continue; }
  check "$tmp/hf_$t.gguf" "$tmp/hf"
done

# From a .gguf: the tokenizer metadata and chat template copied through.
"$make" "$tmp/tiny.gguf" "$tok" --template "$root/tests/text/templates/smollm2.jinja" >/dev/null || fail "make_tiny_gguf"
"$lvt" export-gguf --model "$tmp/tiny.gguf" --out "$tmp/tiny_q8.gguf" --type q8_0 >/dev/null 2>&1 || fail "export-gguf from .gguf"
check "$tmp/tiny_q8.gguf"

[ "$fails" = 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all gguf-py checks passed"
