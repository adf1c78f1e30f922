#!/usr/bin/env python3
"""Writes tools/gpu-check's summary.md: the device, pass / fail per GPU suite (meson's
testlog.json), and each CUDA benchmark's figures (bench_NAME.json, Google Benchmark's JSON; a
file cut short by a time limit is read up to its last complete entry) as markdown tables ready
for docs/benchmarks.md. Standard library only (the GPU machine has python3, not our venv)."""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys


def read_json_lenient(path):
    """Google Benchmark's JSON, or as much of it as was written before a time limit."""
    text = open(path, encoding="utf-8", errors="replace").read()
    try:
        return json.loads(text), False
    except ValueError:
        pass
    # Cut after the last complete benchmark object and close the array and the document.
    for end in (m.end() for m in reversed(list(re.finditer(r"\n    }", text)))):
        try:
            return json.loads(text[:end] + "\n  ]\n}\n"), True
        except ValueError:
            continue
    return None, True


def fmt(v):
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def suites_table(build):
    path = os.path.join(build, "gpu-testlog.json")
    if not os.path.isfile(path):
        path = os.path.join(build, "meson-logs", "testlog.json")
    rows, counts = [], {}
    if os.path.isfile(path):
        for line in open(path, encoding="utf-8", errors="replace"):
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            name = t.get("name", "?").split(" / ")[-1]  # meson names them "lvt / gpu_step"
            if not (name.startswith("gpu_") or name == "cuda_device"):
                continue
            result = t.get("result", "?")
            counts[result] = counts.get(result, 0) + 1
            note = ""
            if result == "SKIP":
                m = re.search(r"SKIP[^\n]*", t.get("stdout", "") or "")
                note = m.group(0) if m else "skipped"
            elif result != "OK":
                lines = [l for l in (t.get("stdout", "") or "").splitlines()
                         if "ERROR" in l or "FAILED" in l or "test cases:" in l]
                note = "; ".join(lines[:3])[:300]
            else:
                m = re.search(r"\[doctest\] test cases:[^\n]*", t.get("stdout", "") or "")
                note = re.sub(r"\s+", " ", m.group(0)) if m else ""
            rows.append((name, result, t.get("duration", 0.0), note.replace("|", "\\|")))
    return rows, counts


def bench_tables(out):
    sections = []
    for f in sorted(os.listdir(out)):
        m = re.match(r"bench_(.+)\.json$", f)
        if not m:
            continue
        data, partial = read_json_lenient(os.path.join(out, f))
        title = m.group(1)
        if data is None:
            sections.append(f"### {title}\n\nno results (the JSON could not be read)\n")
            continue
        bms = [b for b in data.get("benchmarks", []) if b.get("run_type", "iteration") == "iteration"]
        std = {"name", "family_index", "per_family_instance_index", "run_name", "run_type",
               "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
               "time_unit", "aggregate_name", "aggregate_unit", "label", "error_occurred",
               "error_message", "skipped", "skip_message"}
        lines = [f"### {title}" + (" (cut short by its time limit: the rows it finished)" if partial else ""), ""]
        ctx = data.get("context", {})
        if ctx.get("gpu"):
            lines.append(f"context: {ctx.get('gpu')}, {ctx.get('host_name', '')}, "
                         f"{ctx.get('num_cpus', '?')} CPUs, library {ctx.get('library_build_type', '?')}")
            lines.append("")
        lines.append("| benchmark | time | counters | note |")
        lines.append("| --- | --- | --- | --- |")
        for b in bms:
            counters = ", ".join(f"{k} {fmt(v)}" for k, v in b.items() if k not in std and isinstance(v, (int, float)))
            note = b.get("error_message") or b.get("skip_message") or b.get("label") or ""
            t = f"{fmt(b.get('real_time', 0))} {b.get('time_unit', '')}" if not b.get("error_occurred") else "error"
            lines.append(f"| `{b.get('name')}` | {t} | {counters} | {str(note).replace('|', '/')} |")
        if not bms:
            lines.append("| (none) | | | |")
        sections.append("\n".join(lines) + "\n")
    return sections


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--gpu", default="?")
    ap.add_argument("--sm", default="?")
    ap.add_argument("--driver", default="?")
    ap.add_argument("--build-s", default="?")
    ap.add_argument("--total-s", default="?")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--build-failed", action="store_true")
    a = ap.parse_args()

    def cmd(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return ""

    nvcc = re.search(r"release ([0-9.]+)", cmd("nvcc", "--version"))
    cxx = cmd("c++", "--version").splitlines()
    commit = cmd("git", "rev-parse", "--short", "HEAD") or "unknown (no git checkout)"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# lvt gpu-check, {now}", "",
          f"- device: {a.gpu} (sm_{a.sm}), driver {a.driver}; nvcc {nvcc.group(1) if nvcc else '?'}; "
          f"host compiler {cxx[0] if cxx else '?'}; {os.cpu_count()} CPUs",
          f"- tree: {commit}; mode: {'quick (tests only)' if a.quick == '1' else 'full'}",
          f"- build of the CUDA targets for sm_{a.sm}: {a.build_s} s; whole run: {a.total_s} s", ""]
    if a.build_failed:
        md += ["**The build failed**: build.log has the compiler's messages.", ""]
    rows, counts = suites_table(a.build)
    md += ["## GPU suites", "",
           "totals: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none ran"), "",
           "| suite | result | seconds | note |", "| --- | --- | --- | --- |"]
    md += [f"| {n} | {r} | {d:.1f} | {note} |" for n, r, d, note in rows]
    md.append("")
    benches = bench_tables(a.out)
    if benches:
        md += ["## Benchmarks", ""] + benches
    cli = os.path.join(a.out, "bench.log")
    if os.path.isfile(cli):
        ok = [l for l in open(cli, errors="replace") if l.startswith(("ok:", "FAIL:", "train:"))]
        if ok:
            md += ["## lvt on the CUDA backend", ""] + [f"- {l.strip()}" for l in ok] + [""]
    open(os.path.join(a.out, "summary.md"), "w").write("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
