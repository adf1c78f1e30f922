"""gguf-py (the peer) reads a GGUF file lvt wrote: every key and tensor must equal what lvt reads.

  python tools/peers/check_gguf_file.py FILE.gguf DUMP.json FLOATS [HF_FOLDER]

DUMP.json and FLOATS come from tests/cli/gguf_dump (lvt's reading). Checks, with gguf 0.19.0:
  - GGUFReader opens the file; the same keys in the same order, each value of the same GGUF type
    and equal (strings, numbers, bool, arrays element by element);
  - the same tensors in order, same ggml type, shape (ne) and data offset; each tensor
    dequantized by gguf.quants.dequantize equals lvt's dequantization bit for bit;
  - with HF_FOLDER (a float32 safetensors folder exported without an adapter): every tensor's
    bytes equal gguf-py's own quantize of the HF weight, q/k rows permuted as
    convert_hf_to_gguf.py's LlamaModel.permute does: lvt wrote what the converter would.
Prints one line per failed check and exits 1, or 'ok: ...' lines.
"""
import json
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize, quantize

TYPE_NAMES = {GGUFValueType.UINT8: "uint8", GGUFValueType.INT8: "int8", GGUFValueType.UINT16: "uint16",
              GGUFValueType.INT16: "int16", GGUFValueType.UINT32: "uint32", GGUFValueType.INT32: "int32",
              GGUFValueType.FLOAT32: "float32", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
              GGUFValueType.ARRAY: "array", GGUFValueType.UINT64: "uint64", GGUFValueType.INT64: "int64",
              GGUFValueType.FLOAT64: "float64"}

fails = []


def fail(msg):
    fails.append(msg)
    print("FAIL: " + msg)


def field_value(f):
    t = f.types[0]
    if t == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if t == GGUFValueType.ARRAY:
        et = f.types[1] if len(f.types) > 1 else None
        if et == GGUFValueType.STRING:
            vals = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        else:
            vals = [f.parts[i].tolist()[0] for i in f.data]
        return TYPE_NAMES.get(et, "uint8"), vals
    v = f.parts[f.data[0]].tolist()[0]
    return bool(v) if t == GGUFValueType.BOOL else v


def same_number(a, b, t):
    if t in ("float32", "float64"):
        return np.float64(a) == np.float64(b) or (np.isnan(a) and np.isnan(b))
    return a == b


def main():
    path, dump_path, floats_path = sys.argv[1:4]
    hf = sys.argv[4] if len(sys.argv) > 4 else None
    dump = json.load(open(dump_path))
    floats = np.fromfile(floats_path, dtype=np.float32)
    r = GGUFReader(path)
    keys = [k for k in r.fields.keys() if not k.startswith("GGUF.")]
    want_keys = [m["key"] for m in dump["metadata"]]
    if keys != want_keys:
        fail(f"keys differ: gguf-py {keys[:8]}... lvt {want_keys[:8]}...")
    n_values = 0
    for m in dump["metadata"]:
        f = r.fields.get(m["key"])
        if f is None:
            fail(f"key {m['key']}: gguf-py does not see it")
            continue
        t = TYPE_NAMES[f.types[0]]
        if t != m["type"]:
            fail(f"key {m['key']}: gguf-py type {t}, lvt {m['type']}")
            continue
        v = field_value(f)
        if t == "array":
            et, vals = v
            if et != m["value"]["elem_type"] or len(vals) != len(m["value"]["values"]):
                fail(f"key {m['key']}: array of {len(vals)} {et}, lvt {len(m['value']['values'])} {m['value']['elem_type']}")
                continue
            for i, (a, b) in enumerate(zip(vals, m["value"]["values"])):
                if not same_number(a, b, et) if et != "string" else a != b:
                    fail(f"key {m['key']}[{i}]: gguf-py {a!r}, lvt {b!r}")
                    break
            n_values += len(vals)
        elif not (same_number(v, m["value"], t) if t not in ("string", "bool") else v == m["value"]):
            fail(f"key {m['key']}: gguf-py {v!r}, lvt {m['value']!r}")
        n_values += 1
    print(f"ok: gguf-py reads {len(dump['metadata'])} keys ({n_values} values) as lvt does" if not fails else "")

    if [t.name for t in r.tensors] != [t["name"] for t in dump["tensors"]]:
        fail("tensor names or order differ")
    at = 0
    n_floats = 0
    for t, w in zip(r.tensors, dump["tensors"]):
        numel = int(np.prod(w["ne"]))
        mine = floats[at:at + numel]
        at += numel
        if t.tensor_type.name != w["type"]:
            fail(f"tensor {t.name}: gguf-py type {t.tensor_type.name}, lvt {w['type']}")
            continue
        if [int(x) for x in t.shape] != w["ne"]:
            fail(f"tensor {t.name}: gguf-py ne {list(t.shape)}, lvt {w['ne']}")
            continue
        if int(t.data_offset) - int(r.data_offset) != w["offset"]:
            fail(f"tensor {t.name}: gguf-py offset {int(t.data_offset) - int(r.data_offset)}, lvt {w['offset']}")
        theirs = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        if theirs.tobytes() != mine.tobytes():
            bad = int(np.argmax(theirs.view(np.uint32) != mine.view(np.uint32)))
            fail(f"tensor {t.name}: value {bad}: gguf-py {theirs[bad]!r}, lvt {mine[bad]!r}")
        n_floats += numel
    if at != floats.size:
        fail(f"lvt dumped {floats.size} floats, the tensors hold {at}")
    if not fails:
        print(f"ok: gguf-py dequantizes {len(r.tensors)} tensors ({n_floats} values) bit for bit as lvt")

    if hf:
        from safetensors.numpy import load_file
        import glob
        cfg = json.load(open(hf + "/config.json"))
        n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])

        def permute(w, n):  # convert_hf_to_gguf.py LlamaModel.permute
            return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
        sub = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
        hf_tensors = {}
        for f in sorted(glob.glob(hf + "/*.safetensors")):
            hf_tensors.update(load_file(f))
        by_name = {t.name: t for t in r.tensors}
        n = 0
        for name, w in hf_tensors.items():
            if name in names:
                g = names[name]
            else:
                parts = name.split(".")  # model.layers.N.<sub>.weight
                g = f"blk.{parts[2]}.{sub['.'.join(parts[3:-1])]}.weight"
            w = w.astype(np.float32)
            if name.endswith("q_proj.weight"):
                w = permute(w, n_head)
            elif name.endswith("k_proj.weight"):
                w = permute(w, n_kv)
            t = by_name.get(g)
            if t is None:
                fail(f"{name}: no tensor {g} in the file")
                continue
            want = quantize(w, t.tensor_type)
            if want.tobytes() != bytes(t.data.tobytes()):
                fail(f"{g} ({t.tensor_type.name}): bytes differ from gguf-py's quantize of {name}")
            n += 1
        rs = cfg.get("rope_scaling") or {}
        if rs.get("rope_type") == "llama3":  # LlamaModel.generate_extra_tensors, in float32 as torch
            import math
            dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
            freqs = np.float32(1.0) / (np.float32(cfg["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
            factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            want = []
            for f in freqs:
                wl = np.float32(2 * math.pi) / f
                if wl < old / high:
                    want.append(1)
                elif wl > old / low:
                    want.append(factor)
                else:
                    sm = (np.float32(old) / wl - np.float32(low)) / np.float32(high - low)
                    want.append(1 / ((1 - sm) / np.float32(factor) + sm))
            want = np.array(want, dtype=np.float32)
            got = dequantize(by_name["rope_freqs.weight"].data, by_name["rope_freqs.weight"].tensor_type).reshape(-1)
            err = float(np.max(np.abs(got / want - 1)))
            if got.shape != want.shape or err > 1e-6:
                fail(f"rope_freqs.weight: relative difference {err} from the converter's formula")
            else:
                print(f"ok: rope_freqs.weight is the converter's llama3 formula ({want.size} factors, max rel diff {err:.1e})")
        if not fails:
            print(f"ok: {n} tensors are gguf-py's own quantize of the HF weights (q/k permuted as the converter)")
    sys.exit(1 if fails else 0)


main()
