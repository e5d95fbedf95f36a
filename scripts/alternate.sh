#!/usr/bin/env bash
# Runs benchmark commands in alternation, ROUNDS times (the order reversed every other
# round), each under `chrt -r 1` when run as root (so no compile job preempts it), and
# prints before each output a header with the CPU time the hypervisor stole meanwhile
# (/proc/stat's steal column, in 1/100 s): on a shared virtual machine that steal is what
# makes rates vary 2-4x, so compare the runs with little of it.
#
#   scripts/alternate.sh 4 'target/release/examples/concurrency 1' 'old/concurrency 1'
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 ROUNDS COMMAND [COMMAND ...]" >&2
  exit 2
fi
rounds=$1
shift
case $rounds in
  '' | *[!0-9]*) echo "$0: ROUNDS must be a whole number, got '$rounds'" >&2; exit 2 ;;
esac
steal() { awk '/^cpu /{print $9}' /proc/stat 2>/dev/null || echo 0; }
prefix=()
if [ "$(id -u)" = 0 ] && command -v chrt > /dev/null; then
  prefix=(chrt -r 1)
fi
for r in $(seq 1 "$rounds"); do
  order=("$@")
  if [ $((r % 2)) = 0 ]; then
    order=()
    for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done
  fi
  for cmd in "${order[@]}"; do
    s0=$(steal)
    out=$("${prefix[@]}" bash -c "$cmd" 2>&1) || out="$out
(exit status $?)"
    s1=$(steal)
    echo "== round $r steal $((s1 - s0)): $cmd"
    echo "$out"
  done
done
