#!/usr/bin/env bash
# The GPU checks of the `cuda` feature, in two halves.
#   scripts/gpu-check.sh stage   here: builds the CUDA tests, the step-rate example and the
#                                CLI (scripts/cuda.sh, release) and strips them into target/gpu
#   scripts/gpu-check.sh run     on the GPU machine (the device tool, carrying target/gpu):
#                                the tests, step rates, and the quick config end to end;
#                                logs and metrics go to $OUT (default target/gpu/out)
# A toolkit-less machine can stage after scripts/cuda-toolkit-from-pypi.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=target/gpu
case "${1:-}" in
stage)
  mkdir -p "$gpu"
  scripts/cuda.sh test --release -p smartmixed-train --features cuda --test cuda --no-run 2>&1 |
    tee "$gpu/build.log"
  built=${CARGO_TARGET_DIR:-target/cuda}/release
  tests=$(grep -o "$built/deps/cuda-[0-9a-f]*" "$gpu/build.log" | tail -n 1)
  scripts/cuda.sh build --release -p smartmixed-train --features cuda --example step_rate
  scripts/cuda.sh build --release -p smartmixed-cli --features cuda
  strip -o "$gpu/cuda-tests" "$tests"
  strip -o "$gpu/step_rate" "$built/examples/step_rate"
  strip -o "$gpu/smartmixed-cli" "$built/smartmixed-cli"
  ls -l "$gpu"
  ;;
run)
  out=${OUT:-$gpu/out}
  mkdir -p "$out"
  exec > >(tee "$out/log.txt") 2>&1
  date
  nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader
  # The CUDA 13 libraries the binaries link (NVRTC, cuBLAS, cuRAND), wherever they are.
  libs=$(for l in libnvrtc.so.13 libcublas.so.13 libcurand.so.10; do
    find / -xdev -name "$l" 2>/dev/null | head -n 1; done | xargs -r -n 1 dirname | sort -u |
    paste -sd:)
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The tests find data/mnist by the path they were built at.
  built=$(strings "$gpu/cuda-tests" | grep -o '/[^ ]*/crates/smartmixed-train' | head -n 1)
  if [ -n "$built" ] && [ ! -e "$built" ]; then
    mkdir -p "$(dirname "$(dirname "$(dirname "$built")")")"
    ln -s "$PWD" "$(dirname "$(dirname "$built")")"
  fi
  echo "== tests"
  (cd crates/smartmixed-train && "../../$gpu/cuda-tests" --test-threads=1 --nocapture)
  echo "== step rates"
  "$gpu/step_rate" 1.5
  echo "== quick config"
  run=$(mktemp -d)/quick
  "$gpu/smartmixed-cli" train --config configs/quick.toml --out "$run"
  cp "$run/metrics.csv" "$run/summary.json" "$out/"
  ;;
*)
  echo "usage: scripts/gpu-check.sh stage|run" >&2
  exit 2
  ;;
esac
