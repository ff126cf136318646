#!/usr/bin/env bash
# Multi-process training on one machine, the way it runs on a TPU pod or GPU cluster:
# 2 processes x 2 CPU devices talking through JAX's distributed runtime (gloo collectives over
# 127.0.0.1), then 1 process x 4 devices with the same global batch and seed; the training losses
# of the two runs are printed side by side and must agree (to float round-off).
#
#   bash experiments/multiprocess_demo.sh [workdir]     (default: /tmp/ssd_jax_multiprocess_demo)
#
# On a real cluster each host runs the same command with its own --process_id (or none at all
# under SLURM / Open MPI / TPU VM pods, where jax.distributed finds the cluster itself):
#   python -m ssd_jax.train --config shapes --workdir gs://bucket/run \
#       --coordinator_address=HOST0:PORT --num_processes=N --process_id=I
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/ssd_jax_multiprocess_demo}
rm -rf "$WORKDIR" && mkdir -p "$WORKDIR"
PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
TINY=(--config shapes --config.num_steps=6 --config.batch_size=8 --config.image_size=64 --config.log_every=1
      --config.checkpoint_every=3 --config.eval.every=0 --config.eval.batch_size=8 --config.eval.with_coco=False
      --config.data.shapes.num_train=48 --config.data.shapes.num_eval=8 --config.data.shapes.image_size=64
      --config.postprocess.max_detections=20 --config.optimizer.warmup_steps=2)
export TF_CPP_MIN_LOG_LEVEL=2 JAX_PLATFORMS=cpu

echo "== 2 processes x 2 CPU devices (coordinator 127.0.0.1:$PORT)"
pids=()
for id in 0 1; do
  XLA_FLAGS=--xla_force_host_platform_device_count=2 timeout 900 python -m ssd_jax.train "${TINY[@]}" \
    --workdir "$WORKDIR/two_processes" --coordinator_address=127.0.0.1:$PORT --num_processes=2 --process_id=$id \
    > "$WORKDIR/process_$id.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
grep -E "^(training|step|\[eval\]|trained)" "$WORKDIR/process_0.log"

echo "== 1 process x 4 CPU devices"
XLA_FLAGS=--xla_force_host_platform_device_count=4 timeout 900 python -m ssd_jax.train "${TINY[@]}" \
  --workdir "$WORKDIR/one_process" > "$WORKDIR/one_process.log" 2>&1
grep -E "^(training|step|\[eval\]|trained)" "$WORKDIR/one_process.log"

python - "$WORKDIR" <<'EOF'
import json, sys
def losses(d):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f"{sys.argv[1]}/{d}/metrics.jsonl")) if r["split"] == "train"}
two, one = losses("two_processes"), losses("one_process")
print("step  2 processes  1 process")
for s in sorted(one):
    print(f"{s:4d}  {two[s]:11.6f}  {one[s]:9.6f}")
worst = max(abs(two[s] - one[s]) / abs(one[s]) for s in one)
print(f"max relative difference {worst:.2e}")
sys.exit(0 if sorted(two) == sorted(one) and worst < 1e-5 else 1)
EOF
