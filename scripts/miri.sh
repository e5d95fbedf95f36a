#!/usr/bin/env bash
# The runtime's kernels under Miri, which checks every pointer the kernels form and every
# access against its allocation (issue 19: no pointer arithmetic past an allocation).
# The kernel tests' buffers are exactly their sizes under Miri (see `packed::tests::Guarded`),
# and their shapes are cut to what Miri runs in minutes (`packed::tests::sizes`).
#
#   scripts/miri.sh            the portable kernels (what a CPU without AVX-512 runs)
#   scripts/miri.sh avx512     also the AVX-512F build of the f32 kernels (Miri emulates the
#                              intrinsics they use)
#
# Needs the nightly toolchain with the miri component (`rustup toolchain install nightly
# --component miri`); without it, prints SKIPPED and exits 0. AMX and inline assembly do
# not run under Miri (the AMX detection answers no there); the guard-page tests cover them
# natively.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "SKIPPED: Miri (no nightly toolchain with the miri component)"
  exit 0
fi
tests=(touch_nothing kernels_agree_bit_for_bit rounding_to_bf16 rows_quantise_to_hand_computed
  every_conversion_level every_quantiser_level)
echo "== Miri: portable kernels"
cargo +nightly miri test -p smartmixed-infer --lib -- "${tests[@]}"
if [ "${1:-}" = avx512 ]; then
  echo "== Miri: AVX-512F f32 kernels"
  RUSTFLAGS="-Ctarget-feature=+avx512f" cargo +nightly miri test -p smartmixed-infer --lib \
    -- packed::tests::packed_kernels_touch_nothing_past_their_slices
fi
