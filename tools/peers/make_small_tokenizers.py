#!/usr/bin/env python3
"""Small real-format tokenizer folders under tests/text/tokenizers/, for the families not in the
shared data: trained with tokenizers' BpeTrainer on tests/text/corpus.jsonl, then given the real
components' JSON (Llama-3's Split regex and post-processor, a TinyLlama-style Metaspace +
byte_fallback pipeline, Digits + NFKC, SmolLM2's Digits + ByteLevel).

Run with the peers venv, then tools/peers/make_tokenizer_goldens.py for their goldens.
"""
import json, os
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, normalizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "text", "tokenizers")
CORPUS = [json.loads(l) for l in open(os.path.join(ROOT, "tests", "text", "corpus.jsonl"), encoding="utf-8")]
# Llama-3's pre-tokenizer regex (tokenizer.json of meta-llama/Llama-3.2-1B).
LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
             "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def added(tid, content, special=True, **kw):
    d = {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": special}
    d.update(kw)
    return d


def train(pre, normalizer, specials, vocab_size, byte_level, limit_alphabet=None):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    kw = dict(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    if byte_level:
        kw["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    if limit_alphabet:
        kw["limit_alphabet"] = limit_alphabet
    tok.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(**kw))
    return json.loads(tok.to_str())


def write(name, j, config):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    Tokenizer.from_str(json.dumps(j))  # the library must accept it
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    print(name, os.path.getsize(os.path.join(d, "tokenizer.json")), "bytes")


def llama3():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    j = train(pre_tokenizers.ByteLevel(add_prefix_space=False), None, specials, 1200, True)
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False}, BL]}
    j["model"]["ignore_merges"] = True
    j["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in j["model"]["merges"]]  # [a, b] pairs
    j["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [0], "tokens": ["<|begin_of_text|>"]}}}]}
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    write("llama3_style", j, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                              "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": True})


def tinyllama():
    specials = ["<unk>", "<s>", "</s>"]
    j = train(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False), None, specials, 900,
              False, limit_alphabet=120)
    # Byte tokens after the specials, the trained tokens after them (ids renumbered in order).
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in old:
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"].update({"vocab": vocab, "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                       "ignore_merges": False, "continuing_subword_prefix": None, "end_of_word_suffix": None})
    j["added_tokens"] = [added(i, t) for i, t in enumerate(specials)]
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    j["post_processor"] = {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    write("metaspace_byte_fallback", j, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                         "add_bos_token": True, "add_eos_token": True,
                                         "tokenizer_class": "PreTrainedTokenizerFast"})


def digits_nfkc():
    specials = ["<s>", "</s>", "<pad>", "[MASK]"]
    nf = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" ", " ")])
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=False), pre_tokenizers.ByteLevel(add_prefix_space=True)])
    j = train(pre, nf, specials, 800, True)
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": "\n"}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\p{P}+"}, "behavior": "Contiguous", "invert": False},
        {"type": "Digits", "individual_digits": False},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
    j["added_tokens"] = [added(0, "<s>"), added(1, "</s>"), added(2, "<pad>"),
                         added(3, "[MASK]", lstrip=True, rstrip=True),
                         added(len(j["model"]["vocab"]), "hello", special=False, normalized=True, single_word=True)]
    j["post_processor"] = {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}}
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    write("digits_nfkc", j, {"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"})


def smollm2():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    j = train(pre, None, specials, 1000, True)
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    j["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    write("smollm2_style", j, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                               "tokenizer_class": "PreTrainedTokenizerFast"})


def split_behaviors():
    specials = ["<|endoftext|>"]
    j = train(pre_tokenizers.ByteLevel(add_prefix_space=False), None, specials, 600, True)
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[a-z]+"}, "behavior": "Isolated", "invert": True},
        {"type": "Split", "pattern": {"String": "x"}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "MergedWithPrevious", "invert": True},
        BL]}
    j["post_processor"] = None
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    write("split_behaviors", j, {"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"})


if __name__ == "__main__":
    llama3()
    tinyllama()
    digits_nfkc()
    smollm2()
    split_behaviors()
