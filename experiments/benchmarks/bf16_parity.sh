#!/usr/bin/env bash
# bfloat16 parity of the quick start: trains the `shapes` config in float32 and in bfloat16 on the
# same machine at the same time (both runs side by side, so they see the same load), then writes
# experiments/benchmarks/results/bf16_parity.{json,md} with the final VOC07 mAP@0.5, COCO AP, wall
# time and CPU time (user+sys, from /usr/bin/time) of each.
#
#   bash experiments/benchmarks/bf16_parity.sh              # both at once (default)
#   SEQUENTIAL=1 bash experiments/benchmarks/bf16_parity.sh # one after the other
#   OUT=/tmp/my_parity bash experiments/benchmarks/bf16_parity.sh
#
# Each run gets a fresh workdir ($OUT/float32, $OUT/bfloat16; removed first, so nothing resumes).
# Run from the repository root with the virtual environment active.
set -euo pipefail
OUT=${OUT:-/tmp/ssd_jax_bf16_parity}
mkdir -p "$OUT"

run() {  # run DTYPE: the quick-start command with --config.dtype=DTYPE
  local dtype=$1
  rm -rf "${OUT:?}/$dtype"
  /usr/bin/time -f '{"wall_s": %e, "user_s": %U, "sys_s": %S, "max_rss_kb": %M}' -o "$OUT/$dtype.time.json" \
    python -m ssd_jax.train --config shapes --workdir "$OUT/$dtype" --config.dtype="$dtype" \
    >"$OUT/$dtype.log" 2>&1
}

echo "load before: $(uptime)" | tee "$OUT/load.txt"
if [[ "${SEQUENTIAL:-0}" == 1 ]]; then
  run float32
  run bfloat16
else
  run float32 & pf=$!
  run bfloat16 & pb=$!
  wait "$pf"; wait "$pb"
fi
echo "load after: $(uptime)" | tee -a "$OUT/load.txt"
python experiments/benchmarks/bf16_parity_report.py "$OUT"
