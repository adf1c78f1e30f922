#!/usr/bin/env python3
"""Encode throughput of the Rust `tokenizers` library (the peer of lvt::text::Tokenizer), one thread,
on the documents bench/text/bench_tokenizer.cpp encodes; with --lvt, side by side with that
benchmark's JSON output.

  $(bash tools/peers-venv)/bin/python tools/peers/bench_tokenizers.py [--lvt bench_text.json]
  tools/bench-tokenizer            # builds and runs both, prints the table

Same rule for the documents as the C++ benchmark:
  docs   README.md then docs/*.md in name order, each file one document
  mixed  the 330 strings of tests/text/corpus.jsonl, each one document
Each tokenizer folder under $LVT_SHARED_DATA/tokenizers (default ../shared/data or
../../shared/data from the source root) is loaded with Tokenizer.from_file(tokenizer.json), as lvt
loads it with from_files(tokenizer.json), and every document is encoded with
add_special_tokens=True, as lvt's encode(doc, true).

Two ways of calling tokenizers, both on one thread:
  encode        tok.encode(doc) per document (what a Python data loop does)
  encode_batch  tok.encode_batch(docs), RAYON_NUM_THREADS=1 (set before tokenizers is imported,
                so its rayon pool has one thread; TOKENIZERS_PARALLELISM is left alone)
Timing: process CPU time (time.process_time: every thread of the process), as Google Benchmark's
CPU time on lvt's side, so that other load on a shared machine does not count. A repetition runs
whole passes over the corpus for at least --min-time seconds; the figure is the median of
--repetitions repetitions (lvt's side: --benchmark_repetitions, its median). The word cache is warm
after the first pass on both sides.
"""
import argparse, glob, json, os, statistics, sys, time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
from tokenizers import Tokenizer, __version__ as tokenizers_version  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shared_dir():
    env = os.environ.get("LVT_SHARED_DATA")
    if env:
        return env
    for d in (os.path.join(ROOT, "..", "shared", "data"), os.path.join(ROOT, "..", "..", "shared", "data")):
        if os.path.isdir(d):
            return d
    return ""


def corpora():
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    # Bytes as the C++ side reads them; the files are UTF-8.
    docs = [open(f, "rb").read().decode("utf-8") for f in files]
    with open(os.path.join(ROOT, "tests", "text", "corpus.jsonl"), encoding="utf-8") as f:
        mixed = [json.loads(line) for line in f if line.strip()]
    return {"docs": docs, "mixed": mixed}


def ids_hash(encodings):
    h = 0
    for e in encodings:
        for i in e.ids:
            h = (h * 1000003 + i + 1) & ((1 << 48) - 1)
    return h


def measure(run, min_time, repetitions):
    """Median over repetitions of CPU seconds per pass."""
    run()  # warm the word cache
    per_pass = []
    for _ in range(repetitions):
        passes = 0
        t0 = time.process_time()
        while True:
            run()
            passes += 1
            dt = time.process_time() - t0
            if dt >= min_time:
                break
        per_pass.append(dt / passes)
    return statistics.median(per_pass)


def peer_results(min_time, repetitions):
    tokdir = os.path.join(shared_dir(), "tokenizers")
    if not os.path.isdir(tokdir):
        print(f"bench_tokenizers: no tokenizer folders under {tokdir!r} (set LVT_SHARED_DATA); nothing measured",
              file=sys.stderr)
        sys.exit(77)
    names = sorted(n for n in os.listdir(tokdir) if os.path.isfile(os.path.join(tokdir, n, "tokenizer.json")))
    out = []
    for name in names:
        tok = Tokenizer.from_file(os.path.join(tokdir, name, "tokenizer.json"))
        for cname, docs in corpora().items():
            nbytes = sum(len(d.encode("utf-8")) for d in docs)
            encs = [tok.encode(d, add_special_tokens=True) for d in docs]
            ntok = sum(len(e.ids) for e in encs)
            row = {"folder": name, "corpus": cname, "docs": len(docs), "bytes": nbytes, "tokens": ntok,
                   "ids_hash": ids_hash(encs)}
            s = measure(lambda: [tok.encode(d, add_special_tokens=True) for d in docs], min_time, repetitions)
            row["encode_s"] = s
            s = measure(lambda: tok.encode_batch(docs, add_special_tokens=True), min_time, repetitions)
            row["batch_s"] = s
            out.append(row)
    return out


def lvt_results(path):
    """{(folder, corpus): row} from bench_text's --benchmark_format=json output (medians)."""
    data = json.load(open(path))
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        parts = b["run_name"].split("/") if "run_name" in b else b["name"].split("/")
        if len(parts) < 3 or parts[0] != "BM_encode":
            continue
        rows[(parts[1], parts[2])] = b
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lvt", help="bench_text --benchmark_format=json output to compare with")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition (default 0.5)")
    ap.add_argument("--repetitions", type=int, default=5, help="repetitions, the median is reported (default 5)")
    ap.add_argument("--json", help="also write the peer's figures here")
    a = ap.parse_args()
    peer = peer_results(a.min_time, a.repetitions)
    if a.json:
        json.dump({"tokenizers": tokenizers_version, "rows": peer}, open(a.json, "w"), indent=1)
    mb = lambda nbytes, s: nbytes / s / 1e6
    ktok = lambda ntok, s: ntok / s / 1e3
    print(f"tokenizers {tokenizers_version}, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS')}, "
          f"CPU time, median of {a.repetitions} x >= {a.min_time} s; MB = 10^6 bytes of UTF-8 input")
    lvt = lvt_results(a.lvt) if a.lvt else {}
    hdr = f"{'folder':<10} {'corpus':<6} {'bytes':>7} {'tokens':>6} | {'lvt MB/s':>8} {'ktok/s':>7} | " \
          f"{'tok encode':>10} {'ktok/s':>7} | {'tok batch':>9} {'ktok/s':>7} | {'lvt/encode':>10} {'lvt/batch':>9} | ids"
    print(hdr)
    print("-" * len(hdr))
    bad = 0
    for r in peer:
        e, bt = r["encode_s"], r["batch_s"]
        line = f"{r['folder']:<10} {r['corpus']:<6} {r['bytes']:>7} {r['tokens']:>6} | "
        l = lvt.get((r["folder"], r["corpus"]))
        if l:
            lrate = l["bytes_per_second"]
            line += f"{lrate / 1e6:>8.2f} {l['tokens_per_s'] / 1e3:>7.0f} | "
        else:
            line += f"{'-':>8} {'-':>7} | "
        line += f"{mb(r['bytes'], e):>10.2f} {ktok(r['tokens'], e):>7.0f} | {mb(r['bytes'], bt):>9.2f} {ktok(r['tokens'], bt):>7.0f} | "
        if l:
            same = int(l["tokens"]) == r["tokens"] and int(l["ids_hash"]) == r["ids_hash"]
            bad += not same
            line += f"{lrate / (r['bytes'] / e):>9.2f}x {lrate / (r['bytes'] / bt):>8.2f}x | {'same' if same else 'DIFFER'}"
        else:
            line += f"{'-':>10} {'-':>9} | -"
        print(line)
    if bad:
        print(f"bench_tokenizers: {bad} row(s) where lvt's ids differ from tokenizers' (tokens or ids_hash)")
        sys.exit(1)


if __name__ == "__main__":
    main()
