"""Pairs the JSON lines of ours.rs and reference.py into the README's table (medians over
rounds, with the spread) and the ratios. Usage: table.py OURS.jsonl THEIRS.jsonl THREADS"""
import collections
import json
import platform
import statistics
import subprocess
import sys


def load(path):
    runs = collections.defaultdict(list)
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            runs[r["work"]].append(r["value"])
    return runs


def fmt(values, unit):
    if not values:
        return "-"
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    if unit == "ms":
        return f"{med:.3f} ms ({lo:.3f}-{hi:.3f})"
    return f"{med / 1e3:.1f}k/s ({lo / 1e3:.1f}-{hi / 1e3:.1f})"


def main():
    ours, theirs, threads = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    date = subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
    print(f"CPU: {cpu} ({isa}), {threads} threads for training; {date}")
    print("| work | this project | PyTorch | ONNX Runtime | ratio |")
    print("|---|---|---|---|---|")
    med = lambda d, k: statistics.median(d[k]) if d.get(k) else None
    rows = [
        ("train phase 1", "train_phase1", "train_phase1", None),
        ("train phase 2 (vs contiguous)", "train_phase2", "train_phase2_contiguous", None),
        ("train phase 2 (vs gather/scatter)", "train_phase2", "train_phase2_gather", None),
        ("train fixed ReLU", "train_relu", "train_relu", None),
    ]
    for label, ok, tk, _ in rows:
        o, t = med(ours, ok), med(theirs, tk)
        ratio = f"{o / t:.2f}x PyTorch" if o and t else "-"
        print(f"| {label} | {fmt(ours.get(ok), 's')} | {fmt(theirs.get(tk), 's')} | - | {ratio} |")
    for t in [1, 2]:
        for b in [1, 32, 256]:
            key = f"infer_b{b}_t{t}"
            unit = "ms" if b == 1 else "s"
            o, ort, pt = med(ours, key), med(theirs, key + "_ort"), med(theirs, key + "_torch")
            if o and ort:
                # Latency: ORT's time over ours; throughput: ours over ORT's.
                r = ort / o if b == 1 else o / ort
                ratio = f"{r:.2f}x ORT" + (" (latency)" if b == 1 else "")
            else:
                ratio = "-"
            print(f"| infer b{b}, {t} thread{'s' if t > 1 else ''} | {fmt(ours.get(key), unit)} | "
                  f"{fmt(theirs.get(key + '_torch'), unit)} | {fmt(theirs.get(key + '_ort'), unit)} | {ratio} |")


main()
