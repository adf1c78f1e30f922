#!/usr/bin/env python3
"""Writes the GGUF goldens of tests/io/gguf/ with the real gguf-py package (pinned in
tools/peers/requirements.txt), which lvt's reader, dequantizers and quantizers must match bit
for bit:

  quants.gguf    for each ggml type lvt dequantizes, a tensor `<TYPE>` of random blocks (the
                 fp16 scales drawn finite, every other byte uniform) and `<TYPE>.deq`, gguf-py's
                 `quants.dequantize` of it as F32; `quant.input` (F32, edge-case and random
                 blocks) and `quant.<TYPE>` = gguf-py's `quants.quantize` of it for Q8_0, Q4_0,
                 F16, BF16.
  metadata.gguf  every metadata value type, arrays of ints / strings / nested arrays, written by
                 GGUFWriter with general.alignment 64, two small tensors.

  venv=$(bash tools/peers-venv) && "$venv/bin/python" tools/peers/make_gguf_goldens.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "io", "gguf")

# Byte offsets of the fp16 scale fields inside one block (ggml-common.h block_* structs).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCKS = {t: (1 if GGML_QUANT_SIZES[t][0] == 256 else 4) for t in F16_FIELDS}


def random_blocks(rng, t):
    block_elems, block_bytes = GGML_QUANT_SIZES[t]
    n = BLOCKS[t]
    b = rng.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[t]:
        # finite scales over many binades (a few subnormal, one negative, one zero)
        d = (rng.standard_normal(n) * np.exp2(rng.integers(-20, 2, size=n))).astype(np.float16)
        d[0] = np.float16(0.0) if off == F16_FIELDS[t][-1] and n > 1 else d[0]
        b[:, off:off + 2] = d.reshape(n, 1).view(np.uint8).reshape(n, 2)
    return b


def quant_input(rng):
    blocks = [
        np.zeros(32, np.float32),                                     # d = 0
        np.concatenate([[127.0], np.arange(31) - 15 + 0.5]),          # Q8_0: d = 1, exact ties
        np.concatenate([[-8.0], (np.arange(31) - 15) * 0.5]),         # Q4_0: d = 1, halves
        np.concatenate([[-3.0], [3.0], rng.standard_normal(30)]),     # +-max tie: first wins
        np.full(32, -0.0),                                            # negative zeros
        rng.standard_normal(32) * 1e-6,
        rng.standard_normal(32) * 1e4,
    ]
    blocks += [rng.standard_normal(32) * np.exp2(rng.integers(-8, 8)) for _ in range(9)]
    return np.concatenate(blocks).astype(np.float32).reshape(2, -1)  # 2 rows of 256


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261203)

    w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), "lvt-goldens")
    plain = rng.standard_normal(64).astype(np.float32) * 3
    plain[:4] = [0.0, -0.0, 1e-30, 6.1e-5]  # zero, -0, fp16 underflow, near fp16 subnormal
    w.add_tensor("F32", plain)
    w.add_tensor("F32.deq", gguf.quants.dequantize(plain.view(np.uint8), T.F32))
    h = plain.astype(np.float16)
    w.add_tensor("F16", h)
    w.add_tensor("F16.deq", gguf.quants.dequantize(h.view(np.uint8), T.F16))
    bf = gguf.quants.quantize(plain, T.BF16)
    w.add_tensor("BF16", bf, raw_dtype=T.BF16)
    w.add_tensor("BF16.deq", gguf.quants.dequantize(bf, T.BF16))
    for t in F16_FIELDS:
        b = random_blocks(rng, t)
        w.add_tensor(t.name, b.reshape(1, -1), raw_dtype=t)
        deq = gguf.quants.dequantize(b.reshape(1, -1), t).astype(np.float32)
        w.add_tensor(t.name + ".deq", deq)
    x = quant_input(rng)
    w.add_tensor("quant.input", x)
    for t in (T.Q8_0, T.Q4_0, T.F16, T.BF16):
        q = gguf.quants.quantize(x, t)
        w.add_tensor("quant." + t.name, q.view(np.uint8) if t != T.BF16 else q, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    m = gguf.GGUFWriter(os.path.join(OUT, "metadata.gguf"), "llama")
    m.add_custom_alignment(64)
    m.add_uint8("t.u8", 200)
    m.add_int8("t.i8", -100)
    m.add_uint16("t.u16", 60000)
    m.add_int16("t.i16", -30000)
    m.add_uint32("t.u32", 4000000000)
    m.add_int32("t.i32", -2000000000)
    m.add_float32("t.f32", 0.1)
    m.add_bool("t.bool", True)
    m.add_string("t.string", "héllo ✓")
    m.add_uint64("t.u64", 2**63 + 5)
    m.add_int64("t.i64", -(2**62))
    m.add_float64("t.f64", 1.0 / 3.0)
    m.add_array("t.ints", [1, -2, 3])
    m.add_array("t.strings", ["a", "", "<s>", "日本"])
    m.add_array("t.nested", [[1, 2], [3]])
    m.add_tensor("a", np.arange(6, dtype=np.float32).reshape(2, 3))
    m.add_tensor("b", np.arange(5, dtype=np.float16))
    m.write_header_to_file()
    m.write_kv_data_to_file()
    m.write_tensors_to_file()
    m.close()
    for f in ("quants.gguf", "metadata.gguf"):
        print(f, os.path.getsize(os.path.join(OUT, f)), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
