#!/usr/bin/env python3
"""Golden token ids and loss masks of training examples, made with transformers (TRL's rules).

Run with the peers venv:  $(bash tools/peers-venv)/bin/python tools/peers/make_data_goldens.py
Reads tests/text/data/examples.jsonl (one training example per line, every format lvt reads)
and writes tests/text/goldens/data_<name>.jsonl for each (tokenizer folder, chat template) pair
below, one line per example: {"line", "ids", "mask"} or {"line", "mismatch": true} where the
prompt's tokens are not a prefix of the whole example's (lvt must reject that example).

The rules are TRL's SFTTrainer (trl/trainer/sft_trainer.py, `add_eos` and `tokenize`), with
transformers 5.23 doing the tokenizing:
  text:               ids = tok(text + eos_token)["input_ids"] (eos_token appended unless the text
                      already ends with it); loss on every token.
  prompt/completion:  P = tok(prompt), F = tok(prompt + completion + eos_token); P must be a
                      prefix of F; loss on F[len(P):].
  alpaca:             prompt/completion with Stanford Alpaca's prompt text (PROMPT_DICT of
                      tatsu-lab/stanford_alpaca train.py), completion = output.
  messages:           F = apply_chat_template(messages, tokenize=True) (transformers encodes the
                      rendering with add_special_tokens=False: the template's own bos only); for
                      each assistant message i: P_i = apply_chat_template(messages[:i],
                      add_generation_prompt=True), E_i = apply_chat_template(messages[:i+1]);
                      both must be prefixes of F; loss on F[len(P_i):len(E_i)].
  conversational prompt/completion (prompt and completion are message lists): P =
                      apply_chat_template(prompt, add_generation_prompt=True), F = that of
                      prompt + completion; loss on F[len(P):].
"""
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("LVT_SHARED_DATA") or next(
    (d for d in (os.path.join(ROOT, "..", "shared", "data"), os.path.join(ROOT, "..", "..", "shared", "data"))
     if os.path.isdir(d)), "")
TESTS = os.path.join(ROOT, "tests", "text")

# name: (tokenizer folder, chat template file)
PAIRS = {
    "smollm2": (os.path.join(TESTS, "tokenizers", "smollm2_style"), "smollm2.jinja"),
    "qwen2.5": (os.path.join(SHARED, "tokenizers", "qwen3"), "qwen2.5.jinja"),
    "tinyllama": (os.path.join(SHARED, "tokenizers", "mistral"), "tinyllama.jinja"),
}

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:")


def chat(tok, messages, agp=False, tools=None):
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=agp, tools=tools,
                                  return_dict=False)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def encode(tok, ex):
    eos = tok.eos_token
    if "messages" in ex:
        msgs, tools = ex["messages"], ex.get("tools")
        full = chat(tok, msgs, tools=tools)
        mask = [0] * len(full)
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            p = chat(tok, msgs[:i], agp=True, tools=tools) if i else []
            e = chat(tok, msgs[:i + 1], tools=tools)
            if full[:len(p)] != p or full[:len(e)] != e:
                return None
            for k in range(len(p), len(e)):
                mask[k] = 1
        return full, mask
    if "prompt" in ex and isinstance(ex["prompt"], list):
        p = chat(tok, ex["prompt"], agp=True, tools=ex.get("tools"))
        full = chat(tok, ex["prompt"] + ex["completion"], tools=ex.get("tools"))
        if full[:len(p)] != p:
            return None
        return full, [0] * len(p) + [1] * (len(full) - len(p))
    if "text" in ex:
        t = ex["text"] if ex["text"].endswith(eos) else ex["text"] + eos
        ids = tok(t)["input_ids"]
        return ids, [1] * len(ids)
    if "instruction" in ex:
        tmpl = ALPACA_INPUT if ex.get("input") else ALPACA_NO_INPUT
        prompt = tmpl.format(instruction=ex["instruction"], input=ex.get("input", ""))
        completion = ex["output"]
    else:
        prompt, completion = ex["prompt"], ex["completion"]
    if not completion.endswith(eos):
        completion += eos
    p = tok(prompt)["input_ids"]
    full = tok(prompt + completion)["input_ids"]
    if full[:len(p)] != p:
        return None
    return full, [0] * len(p) + [1] * (len(full) - len(p))


def main():
    lines = open(os.path.join(TESTS, "data", "examples.jsonl"), encoding="utf-8").read().split("\n")
    for name, (folder, template) in PAIRS.items():
        if not os.path.isdir(folder):
            print(f"skip {name}: no {folder}")
            continue
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = open(os.path.join(TESTS, "templates", template), encoding="utf-8").read()
        out, agree = [], 0
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            r = encode(tok, json.loads(line))
            if r is None:
                out.append({"line": n, "mismatch": True})
                continue
            ids, mask = r
            out.append({"line": n, "ids": ids, "mask": mask})
        path = os.path.join(TESTS, "goldens", f"data_{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for o in out:
                f.write(json.dumps(o, separators=(",", ":")) + "\n")
        print(f"{path}: {len(out)} examples, {sum(1 for o in out if o.get('mismatch'))} mismatches")


if __name__ == "__main__":
    main()
