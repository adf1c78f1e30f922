"""Small random models saved as Hugging Face folders, and transformers' greedy generation on them.

usage: generate_reference.py OUT_DIR
Writes OUT_DIR/<name>/ (config.json, model.safetensors, generation_config.json) for each model
below and OUT_DIR/expected.json: {name: {"prompt": [...], "ids": [...], "max_new_tokens": N}},
the new ids of `generate(do_sample=False)` in float32 (the eos of generation_config.json stops it,
as it stops `lvt generate`). tests/cli/test_generate_transformers.sh compares lvt's ids with them.
"""
import json
import os
import sys

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

torch.set_num_threads(1)

MODELS = {
    # tied embeddings, GQA
    "llama_tied": (LlamaConfig, LlamaForCausalLM, dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-5)),
    # untied, multi-query, llama3 RoPE scaling with all three bands in use
    "llama3_rope": (LlamaConfig, LlamaForCausalLM, dict(
        vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=1, max_position_embeddings=512,
        tie_word_embeddings=False, rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="llama3", rope_theta=50.0, factor=4.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=32))),
    # q/k/v biases
    "qwen2_bias": (Qwen2Config, Qwen2ForCausalLM, dict(
        vocab_size=112, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, rms_norm_eps=1e-6)),
}
PROMPT = [5, 17, 3, 42, 9, 11, 30]
MAX_NEW = 40


def main(out):
    expected = {}
    for i, (name, (cfg_cls, model_cls, kw)) in enumerate(MODELS.items()):
        torch.manual_seed(100 + i)
        cfg = cfg_cls(initializer_range=0.15, bos_token_id=1, eos_token_id=2, **kw)
        model = model_cls(cfg).float().eval()
        with torch.no_grad():  # biases and norms away from their zero / one initialization
            for n, p in model.named_parameters():
                if n.endswith("bias") or "norm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
        d = os.path.join(out, name)
        model.save_pretrained(d)
        ids = torch.tensor([PROMPT])
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_NEW, pad_token_id=0)
        expected[name] = {"prompt": PROMPT, "ids": gen[0, len(PROMPT):].tolist(),
                          "max_new_tokens": MAX_NEW}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main(sys.argv[1])
