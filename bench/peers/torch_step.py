#!/usr/bin/env python3
"""The LoRA training step of bench/backend/bench_step.cpp in PyTorch, on the CPU, for the
tokens/s comparison in docs/benchmarks.md.

Same model shapes (the small Llama, or SmolLM2-135M's), same batch, fp32 everywhere, frozen
random base weights, LoRA r 16 / alpha 32 on all seven projections (A random, B zero: PEFT's
initialization), no dropout, mean cross-entropy over the whole vocabulary, global-norm clip 1.0
and torch.optim.AdamW (lr 1e-4, torch's defaults otherwise, as lvt's OptimizerSettings), one
optimizer step per micro-batch. The model is written out in plain PyTorch as transformers'
LlamaForCausalLM computes it (RMSNorm, rotate-half RoPE, grouped-query attention through
F.scaled_dot_product_attention(is_causal=True), SwiGLU) so no transformers / peft version is
involved and nothing but the step is timed.

  python bench/peers/torch_step.py --model smollm2 --batch 4 --seq 256 --threads 2
  python bench/peers/torch_step.py --all --threads 1     # every shape of bench_step.cpp

Prints one JSON object per configuration: tokens/s (mean over the timed steps after one warm-up
step), ms per step, the resident memory after the steps and the process's peak so far: run
one configuration per process for its own peak.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F
from torch import nn

MODELS = {
    # bench_step.cpp's small_model
    "small": dict(layers=4, hidden=256, heads=8, kv_heads=4, head_dim=32, ffn=688, vocab=32000,
                  tied=False, rope_theta=10000.0, eps=1e-5),
    # SmolLM2-135M
    "smollm2": dict(layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, ffn=1536,
                    vocab=49152, tied=True, rope_theta=100000.0, eps=1e-5),
}


class LoraLinear(nn.Module):
    """PEFT's lora.Linear without dropout: y = x W^T + scale (x A^T) B^T, W frozen."""

    def __init__(self, n_in, n_out, r, alpha, gen):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in, generator=gen) * 0.02,
                                   requires_grad=False)
        bound = 1 / math.sqrt(n_in)  # kaiming_uniform(a=sqrt(5)), as PEFT's lora_A
        self.lora_A = nn.Parameter(torch.empty(r, n_in).uniform_(-bound, bound, generator=gen))
        self.lora_B = nn.Parameter(torch.zeros(n_out, r))
        self.scale = alpha / r

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, c, r, alpha, gen):
        super().__init__()
        H, D, KV, C, Fd = c["heads"], c["head_dim"], c["kv_heads"], c["hidden"], c["ffn"]
        self.c = c
        mk = lambda i, o: LoraLinear(i, o, r, alpha, gen)
        self.q, self.k, self.v, self.o = mk(C, H * D), mk(C, KV * D), mk(C, KV * D), mk(H * D, C)
        self.gate, self.up, self.down = mk(C, Fd), mk(C, Fd), mk(Fd, C)
        self.n1 = nn.Parameter(torch.ones(C), requires_grad=False)
        self.n2 = nn.Parameter(torch.ones(C), requires_grad=False)

    def forward(self, x, cos, sin):
        c = self.c
        B, T, C = x.shape
        H, KV, D = c["heads"], c["kv_heads"], c["head_dim"]
        h = rms_norm(x, self.n1, c["eps"])
        q = self.q(h).view(B, T, H, D).transpose(1, 2)
        k = self.k(h).view(B, T, KV, D).transpose(1, 2)
        v = self.v(h).view(B, T, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, H * D))
        h = rms_norm(x, self.n2, c["eps"])
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, c, r=16, alpha=32, seed=1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.c = c
        self.embed = nn.Parameter(torch.randn(c["vocab"], c["hidden"], generator=gen) * 0.02,
                                  requires_grad=False)
        self.head = self.embed if c["tied"] else nn.Parameter(
            torch.randn(c["vocab"], c["hidden"], generator=gen) * 0.02, requires_grad=False)
        self.blocks = nn.ModuleList(Block(c, r, alpha, gen) for _ in range(c["layers"]))
        self.norm = nn.Parameter(torch.ones(c["hidden"]), requires_grad=False)

    def forward(self, tokens, targets):
        c = self.c
        T = tokens.shape[1]
        D = c["head_dim"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = F.embedding(tokens, self.embed)
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = F.linear(rms_norm(x, self.norm, c["eps"]), self.head)
        return F.cross_entropy(logits.view(-1, c["vocab"]), targets.view(-1))


def status_mib(field):
    """A field of /proc/self/status in MiB (the peak from getrusage elsewhere)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(name, batch, seq, threads, steps):
    torch.set_num_threads(threads)
    torch.manual_seed(3)
    c = MODELS[name]
    m = Model(c)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tokens = torch.randint(0, c["vocab"], (batch, seq))
    targets = torch.randint(0, c["vocab"], (batch, seq))

    def step():
        loss = m(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up: allocator, thread pool, AdamW state
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    dt = (time.perf_counter() - t0) / steps
    return {"model": name, "batch": batch, "seq": seq, "threads": threads,
            "tokens_per_s": round(batch * seq / dt, 1), "ms_per_step": round(dt * 1e3, 1),
            "loss": round(loss, 4), "lora_params": sum(p.numel() for p in params),
            "rss_mib": status_mib("VmRSS:"), "peak_rss_mib": status_mib("VmHWM:"),
            "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=MODELS, default="small")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="every shape bench_step.cpp measures")
    a = ap.parse_args()
    shapes = ([("small", 4, 256), ("smollm2", 4, 256), ("smollm2", 1, 1024)] if a.all
              else [(a.model, a.batch, a.seq)])
    for name, b, t in shapes:
        print(json.dumps(run(name, b, t, a.threads, a.steps)), flush=True)


if __name__ == "__main__":
    main()
