"""Pairs the JSON lines of ours.rs and reference.py into the README's table (medians over
rounds, with the spread) and the ratios. Usage: table.py OURS.jsonl THEIRS.jsonl THREADS

With --precision, pairs `ours.rs precision` and openvino_bench.py into issue 22's table
(ours f32 and bf16 on the mixed network against OpenVINO and ONNX Runtime) and the ratios
against issue 22's targets. Usage: table.py --precision OURS.jsonl THEIRS.jsonl THREADS"""
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


def machine():
    """The CPU's name, its widest vector ISA and bf16 units, and today's date (UTC)."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    isa += "".join(f", {name}" for flag, name in [("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")]
                   if flag in flags.split())
    date = subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
    return cpu, isa, date


def precision(ours, theirs, threads):
    """Issue 22's table: samples/s (batch 1: ms a call), medians over rounds (min-max)."""
    cpu, isa, date = machine()
    print(f"CPU: {cpu} ({isa}), {threads} threads; {date}; medians over "
          f"{len(ours.get('infer_b256_t2_bf16', []))} rounds (min-max)")
    t = f"t{threads}"
    cols = [("ours f32 (mixed)", ours, "f32"), ("ours bf16 (mixed)", ours, "bf16"),
            ("ORT f32 (ReLU)", theirs, "ort_f32_relu"), ("OpenVINO f32 (ReLU)", theirs, "ov_f32_relu"),
            ("OpenVINO bf16 (ReLU)", theirs, "ov_default_relu"),
            ("OpenVINO f32 (mixed)", theirs, "ov_f32_mixed"),
            ("OpenVINO bf16 (mixed)", theirs, "ov_default_mixed")]
    print(f"| {threads} threads | " + " | ".join(c[0] for c in cols) + " | ours bf16 / OpenVINO ReLU (target) |")
    print("|---" * (len(cols) + 2) + "|")
    med = lambda d, k: statistics.median(d[k]) if d.get(k) else None
    targets = {1: 1.0, 32: 1.2, 256: 1.2, 4096: 1.0}
    for b in [1, 32, 256, 4096]:
        unit = "ms" if b == 1 else "s"
        cells = [fmt(d.get(f"infer_b{b}_{t}_{k}"), unit) for _, d, k in cols]
        o = med(ours, f"infer_b{b}_{t}_bf16")
        # The faster of OpenVINO's two precisions on the ReLU network.
        ov = [v for v in (med(theirs, f"infer_b{b}_{t}_ov_{p}_relu") for p in ["f32", "default"]) if v]
        if o and ov:
            # Latency: OpenVINO's time over ours; throughput: ours over OpenVINO's.
            r = min(ov) / o if b == 1 else o / max(ov)
            ratio = f"{r:.2f}x (>= {targets[b]}x{' latency' if b == 1 else ''})"
        else:
            ratio = "-"
        print(f"| b{b} | " + " | ".join(cells) + f" | {ratio} |")
    for net in ["relu", "mixed"]:
        d = theirs.get(f"maxdiff_{net}_ov_default")
        if d:
            print(f"OpenVINO bf16's largest logit difference from its f32 ({net}, batch 256): {max(d):.2g}")


def main():
    if sys.argv[1] == "--precision":
        precision(load(sys.argv[2]), load(sys.argv[3]), sys.argv[4])
        return
    ours, theirs, threads = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
    cpu, isa, date = machine()
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
