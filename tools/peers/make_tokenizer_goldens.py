#!/usr/bin/env python3
"""Golden ids for lvt::text::Tokenizer, made with the peer libraries.

Run with the peers venv:  $(bash tools/peers-venv)/bin/python tools/peers/make_tokenizer_goldens.py
Writes tests/text/corpus.jsonl (the strings) and tests/text/goldens/<name>.jsonl, one line per
string: ids with add_special_tokens true (s) and false (n) from tokenizers.Tokenizer.from_file,
transformers AutoTokenizer's encode(text) ids (hf), decode of n with and without skipping special
tokens (d, ds), and whether decode(encode(x)) == x (rt).
"""
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("LVT_SHARED_DATA") or next(
    (d for d in (os.path.join(ROOT, "..", "shared", "data"), os.path.join(ROOT, "..", "..", "shared", "data"))
     if os.path.isdir(d)), "")
SHARED = os.path.join(SHARED, "tokenizers")


def corpus():
    c = []
    c += ["", " ", "  ", "\t", "\n", "\r\n", "\n\n\n", " \n \n", "a", "A", "hello", " hello",
          "hello ", "Hello world", "Hello  world", "Hello\tworld", "Hello\r\nworld", "line1\nline2\n\nline4",
          "   leading spaces", "trailing spaces   ", "\t\ttabs\t\t", " \t \n mixed \r\n\t ",
          "x" * 3, " " * 200, "a" * 500, "ab" * 150, "\n" * 50, "-" * 100, "=" * 64, "!!!???...",
          "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "-17",
          "0x1F", "2024-01-15", "v1.2.3", "$100.00", "1e-10", "100%", "a1b2c3", "x=1+2*3"]
    for w in ["s", "t", "re", "ve", "m", "ll", "d"]:
        c += [f"it'{w}", f"IT'{w.upper()}", f"It'{w.capitalize()}", f"we '{w} go"]
    c += ["don't", "DON'T", "I'm", "you're", "they'LL", "She'S", "'s", "''", "'", "\"quoted\"",
          "O'Neil's", "rock 'n' roll"]
    c += ["你好，世界", "我爱自然语言处理。", "中文 English 混合", "日本語のテキストです。", "カタカナとひらがな",
          "こんにちは世界", "안녕하세요 세계", "한국어 문장입니다.", "مرحبا بالعالم", "السلام عليكم ورحمة الله",
          "नमस्ते दुनिया", "हिन्दी भाषा", "Привет, мир!", "Ελληνικά γράμματα", "שלום עולם", "ภาษาไทย",
          "Tiếng Việt có dấu", "Zürich Straße Ærøskøbing", "naïve café résumé", "façade coöperate"]
    c += ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷🇩🇪", "emoji 😀 in text", "👩🏿‍💻 codes", "🤖🤖🤖",
          "✨ sparkles ✨", "☃", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛", "\U0001F600\U0001F601\U0001F602"]
    c += ["e\u0301", "A\u030a", "\u00c5", "\u212b", "n\u0303o", "\ufb01", "\ufb01nance", "\ufb02ow",
          "\uff21\uff22\uff23", "\uff48\uff45\uff4c\uff4c\uff4f", "\uff11\uff12\uff13", "\u2460\u2461",
          "x\u00b2", "\u00bd", "\u2126", "\u1e9b\u0323", "\u0041\u0308\u0301", "Ko\u0308ln", "\u3000full space",
          "\u00a0nbsp\u00a0", "zero\u200bwidth", "soft\u00adhyphen", "\u2028line sep", "\ufeffbom",
          "\u0915\u094d\u0937", "a\u0300\u0301\u0302\u0303\u0304"]
    c += ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>",
          "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
          "text <s> inside </s> text", "<s>hello</s>", " <s> ", "<|im_start|><|im_end|>",
          "a<|endoftext|>b", "<|im_start", "im_start|>", "<<s>>", "</s></s></s>",
          "<think>\nreasoning\n</think>\n\nanswer", "<tool_call>{}</tool_call>", "[INST] hi [/INST]"]
    c += ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
          "#include <stdio.h>\nint main() { printf(\"hi\\n\"); }", "SELECT * FROM t WHERE id = 3;",
          "const x = () => { return `t${1}`; };", "if x:\n        pass\n    else:\n        y = 1",
          "<html><body class=\"a\">Hi</body></html>", "{\"key\": [1, 2, {\"n\": null}]}",
          "path/to/file.txt", "https://example.com/a?b=c&d=e#f", "user@example.com", "C:\\Windows\\System32",
          "    indented four", "\t\t\tdeep tabs", "a\n    b\n        c", "x  =  y", "foo_bar_baz", "CamelCaseName",
          "snake_case_VAR", "__init__", "@decorator", "#!/bin/bash\necho $HOME", "a||b&&c", "i++ --j",
          "λx.x", "∀x∈ℝ: x²≥0", "∑_{i=1}^{n} i", "→ ← ↑ ↓", "© ® ™", "€£¥₹", "«quotes» “smart” ‘single’"]
    prose = [
        "The quick brown fox jumps over the lazy dog.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
        "Tokenization is the process of splitting text into smaller units called tokens, which may be words, subwords or bytes.",
        "In 1969, Apollo 11 landed on the Moon; Neil Armstrong's first words were broadcast to 600 million people.",
        "Machine learning models, such as large language models (LLMs), are trained on trillions of tokens.",
        "She said, \"I'll be there at 5:30 p.m.\" — but she wasn't.",
        "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse...",
        "Fine-tuning with LoRA adapters keeps the base weights frozen and trains low-rank updates instead.",
        "Water boils at 100 °C (212 °F) at sea level; at altitude the boiling point drops.",
        "The mitochondria is the powerhouse of the cell.\n\nParagraphs are separated by blank lines.\n",
    ]
    c += prose
    c += [" ".join(prose[:4]), "\n\n".join(prose), prose[1].upper(), prose[2].lower(), prose[3] * 3]
    words = ["alpha", "Beta", "GAMMA", "delta's", "42", "x", "über", "日本", "🙂", "  ", "\n", "\t", ",", "."]
    import random
    rng = random.Random(1234)
    while len(c) < 330:
        n = rng.randint(1, 12)
        c.append("".join(rng.choice(words) + rng.choice(["", " ", " ", "  ", "\n"]) for _ in range(n)))
    return c


def folders():
    out = []
    for name in ["qwen3", "mistral"]:
        d = os.path.join(SHARED, name)
        if os.path.isdir(d):
            out.append((name, d))
    tdir = os.path.join(ROOT, "tests", "text", "tokenizers")
    if os.path.isdir(tdir):
        for name in sorted(os.listdir(tdir)):
            out.append((name, os.path.join(tdir, name)))
    return out


def main():
    strings = corpus()
    with open(os.path.join(ROOT, "tests", "text", "corpus.jsonl"), "w", encoding="utf-8") as f:
        for s in strings:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    only = set(sys.argv[1:])
    for name, d in folders():
        if only and name not in only:
            continue
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        hf = AutoTokenizer.from_pretrained(d)
        path = os.path.join(ROOT, "tests", "text", "goldens", name + ".jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for i, s in enumerate(strings):
                s_ids = tok.encode(s, add_special_tokens=True).ids
                n_ids = tok.encode(s, add_special_tokens=False).ids
                hf_ids = hf.encode(s)
                dec = tok.decode(n_ids, skip_special_tokens=False)
                decs = tok.decode(s_ids, skip_special_tokens=True)
                hf_dec = hf.decode(hf_ids)
                rec = {"i": i, "s": s_ids, "n": n_ids, "hf": hf_ids, "d": dec, "ds": decs,
                       "hd": hf_dec, "rt": dec == s}
                f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(name, len(strings), "strings ->", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
