#!/usr/bin/env bash
# CPU time a row of one configuration of `compare probe` (perf stat's task-clock, the
# model's setup subtracted): robust to a shared machine's load where wall-clock rates are
# not (the VM has no hardware counters, so no cycles). Threads' CPU time adds up, so use 1
# thread to compare kernels. Needs /usr/bin/perf and the release compare example.
#
#   benches/compare/rowcost.sh [BIN=target/release/examples/compare] BATCH [THREADS=1] [SECONDS=2] [PRECISION=bf16]
set -euo pipefail
bin=${1:-target/release/examples/compare}
b=$2
t=${3:-1}
s=${4:-2}
p=${5:-bf16}
clock() { /usr/bin/perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | grep task-clock | cut -d, -f1; }
setup=$(clock "$bin" probe "$b" "$t" 0 "$p")
out=$(/usr/bin/perf stat -x, -e task-clock "$bin" probe "$b" "$t" "$s" "$p" 2>&1)
total=$(echo "$out" | grep task-clock | cut -d, -f1)
rows=$(echo "$out" | awk '/^calls/ {print $4}')
python3 -c "print(f'$(basename "$bin") b$b t$t $p: {($total - $setup) * 1e6 / $rows:.0f} ns CPU a row ($rows rows)')"
