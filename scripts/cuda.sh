#!/usr/bin/env bash
# cargo for the `cuda` feature: dfdx 0.13 lends no view of a tensor's device buffer, which
# the trainer's CUDA kernels need, so this builds against a copy of dfdx patched with
# `Tensor::storage` (scripts/dfdx-0.13-storage.patch, six lines). The copy lives in
# target/patched, the build in target/cuda (CARGO_TARGET_DIR overrides), and Cargo.lock is
# restored afterwards. Examples:
#   scripts/cuda.sh build --release -p smartmixed-cli --features cuda
#   scripts/cuda.sh test --release -p smartmixed-train --features cuda --test cuda
#   scripts/cuda.sh check -p smartmixed-cli --features cuda,ci-check   # no CUDA toolkit needed
set -euo pipefail
cd "$(dirname "$0")/.."
dst=target/patched/dfdx-0.13.0
if [ ! -f "$dst/.patched" ]; then
  cargo fetch --quiet
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/dfdx-0.13.0.crate | head -n 1)
  rm -rf "$dst" && mkdir -p target/patched
  tar xzf "$crate" -C target/patched
  patch --quiet -d "$dst" -p1 < scripts/dfdx-0.13-storage.patch
  # A path dependency's warnings are not capped as a registry crate's are.
  sed -i '1s/^/#![allow(warnings)]\n/' "$dst/src/lib.rs"
  touch "$dst/.patched"
fi
cp Cargo.lock target/patched/Cargo.lock.orig
trap 'cp target/patched/Cargo.lock.orig Cargo.lock' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
# After the subcommand, so that cargo clippy hands it on to the cargo check it runs.
cmd=$1
shift
cargo "$cmd" --config "patch.crates-io.dfdx.path=\"$dst\"" "$@"
