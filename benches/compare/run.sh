#!/usr/bin/env bash
# Side-by-side speed: this project against PyTorch (training, inference) and ONNX Runtime
# (inference) on the same machine, alternating ours and theirs, ROUNDS times; prints the
# medians and the ratios. Needs network access to PyPI once, for the virtual environment
# (VENV, default target/compare-venv): torch, onnxruntime, onnx, numpy. Not used by tests
# or CI.
#
#   benches/compare/run.sh [STEPS=300] [ROUNDS=3] [INFER_SECONDS=5]
#
# `precision` runs issue 22's comparison instead: ours in f32 and bf16 against OpenVINO
# (f32 and its default precision, bf16 on AMX) and ONNX Runtime f32 on ONNX exports of the
# ReLU and mixed networks, 2 threads, batches 1 to 4096, alternating, ROUNDS times, with
# SECONDS of timing per configuration; its own virtual environment (OV_VENV, default
# target/openvino-venv): openvino, onnxruntime, onnx, numpy (no torch).
#
#   benches/compare/run.sh precision [ROUNDS=3] [SECONDS=2]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = precision ]; then
  rounds=${2:-3}
  secs=${3:-2}
  venv=${OV_VENV:-target/openvino-venv}
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check openvino onnxruntime onnx numpy
  fi
  cargo build --release --quiet --example compare
  out=$(mktemp -d)
  for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    target/release/examples/compare precision "$secs" >> "$out/ours.jsonl"
    "$venv/bin/python" benches/compare/openvino_bench.py "$secs" 2 >> "$out/theirs.jsonl"
  done
  "$venv/bin/python" benches/compare/table.py --precision "$out/ours.jsonl" "$out/theirs.jsonl" 2
  exit
fi
steps=${1:-300}
rounds=${2:-3}
secs=${3:-5}
venv=${VENV:-target/compare-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch onnxruntime onnx numpy
fi
cargo build --release --quiet --example compare
ours=target/release/examples/compare
py="$venv/bin/python benches/compare/reference.py"
out=$(mktemp -d)
threads=$(nproc)
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds" >&2
  $ours train "$steps" >> "$out/ours.jsonl"
  $py train "$steps" "$threads" >> "$out/theirs.jsonl"
  $ours infer "$secs" >> "$out/ours.jsonl"
  $py infer "$secs" >> "$out/theirs.jsonl" 2>/dev/null
done
"$venv/bin/python" benches/compare/table.py "$out/ours.jsonl" "$out/theirs.jsonl" "$threads"
