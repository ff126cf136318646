#!/usr/bin/env bash
# One prepared benchmark for a machine with an NVIDIA GPU, under 8 minutes in total:
#   install from this checkout -> the quick start (shortened) -> the ssd300_vgg16 training step,
#   ours (float32, bfloat16) against torchvision's (float32, AMP) -> the Detector at batch 1 and 8
#   -> one JSON, OUT_DIR/accelerator.json (fields: experiments/benchmarks/README_accelerator.md).
#
#   bash experiments/benchmarks/accelerator.sh [OUT_DIR]        # default: $OUT, else ./accel_results
#
# Every phase runs under its own timeout, and the phases' caps add up to ACCEL_BUDGET_S (440 s);
# a phase that fails or times out is recorded in the JSON and the next one still runs. The script
# exits 0 when the JSON was written, whatever the phases did (their exit codes are in it).
#
# Environment:
#   SSD_JAX_NO_VENV=1     use $PYTHON (default python3) as it is instead of a new virtual environment
#                         (also chosen automatically when the package index cannot be reached)
#   ACCEL_VENV=DIR        where the virtual environment goes (default /tmp/ssd_jax_accel_venv);
#                         made with --system-site-packages, so preinstalled CUDA torch / jax count
#   ACCEL_INSTALL=0       no pip at all (the environment already has everything)
#   ACCEL_JAX_EXTRA=X     jax's pip extra (default cuda13 when nvidia-smi reports CUDA >= 13, else cuda12)
#   ACCEL_WHEELS=DIR      wheels to install first with --no-index --no-deps (offline machines)
#   ACCEL_OFFLINE=1       do not try the package index (what a failed probe download of ml-collections
#                         also concludes): no venv, ACCEL_WHEELS and the checkout with --no-deps only
#   ACCEL_QS_STEPS=N      quick-start training steps (default 600, half the shapes schedule; 0 = all 1200)
#   ACCEL_SMOKE=1         CPU plumbing check: ssd_tiny, batch 2, 2 steps, no GPU packages, a 20-step
#                         quick start on 50 eval images (numbers mean nothing)
#   ACCEL_BUDGET_S, ACCEL_CAP_INSTALL, ACCEL_CAP_QS, ACCEL_CAP_TRAIN, ACCEL_CAP_DETECTOR: seconds
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT_DIR="${1:-${OUT:-./accel_results}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ssd_jax_accel.XXXXXX")"   # quick-start workdir: checkpoints stay out of OUT_DIR
BUDGET="${ACCEL_BUDGET_S:-440}"   # + up to 10 s of SIGKILL grace per phase + the merge: < 8 minutes
CAP_INSTALL="${ACCEL_CAP_INSTALL:-140}"
CAP_QS="${ACCEL_CAP_QS:-90}"
CAP_TRAIN="${ACCEL_CAP_TRAIN:-145}"
CAP_DETECTOR="${ACCEL_CAP_DETECTOR:-60}"
SMOKE="${ACCEL_SMOKE:-0}"
PY="${PYTHON:-python3}"
PIP_NET=(--retries 1 --timeout 20 --disable-pip-version-check)
: > "$OUT_DIR/phases.tsv"
rm -f "$OUT_DIR"/{train,detector,probe,accelerator}.json "$OUT_DIR"/{accelerator,install,quickstart,train,detector}.log
SECONDS=0

log() { echo "[accelerator.sh $(printf '%3d' "$SECONDS")s] $*" | tee -a "$OUT_DIR/accelerator.log" >&2; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$OUT_DIR/phases.tsv"; }

# run_phase NAME CAP RESERVE CMD...: runs CMD with a timeout of min(CAP, budget left - RESERVE) seconds,
# output to OUT_DIR/NAME.log; SIGINT first (the trainer saves and stops cleanly), SIGKILL 10 s later.
run_phase() {
  local name="$1" cap="$2" reserve="$3" limit rc start
  shift 3
  limit=$(( BUDGET - SECONDS - reserve ))
  (( limit > cap )) && limit=$cap
  if (( limit < 15 )); then
    log "$name: skipped, ${limit}s left in the budget"; record "$name" skipped 0 "out of time budget"; return 0
  fi
  log "$name: up to ${limit}s: $*"
  start=$SECONDS
  set +e
  timeout --signal=INT --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  set -e
  local note=""
  (( rc == 124 || rc == 137 )) && note="stopped by its ${limit}s timeout"
  log "$name: exit $rc after $(( SECONDS - start ))s ${note:+($note)}"
  record "$name" "$rc" "$(( SECONDS - start ))" "$note"
  return 0
}

# ---------------------------------------------------------------- the machine
if command -v nvidia-smi > /dev/null; then
  { nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit \
      --format=csv 2>&1 || true; nvidia-smi 2>&1 | grep -o 'CUDA Version: *[0-9.]*' || true; } > "$OUT_DIR/nvidia_smi.txt"
else
  echo "nvidia-smi not found" > "$OUT_DIR/nvidia_smi.txt"
fi
CUDA_MAJOR="$(grep -o 'CUDA Version: *[0-9]*' "$OUT_DIR/nvidia_smi.txt" | grep -o '[0-9]*$' || echo 0)"
JAX_EXTRA="${ACCEL_JAX_EXTRA:-$( (( CUDA_MAJOR >= 13 )) && echo cuda13 || echo cuda12)}"
JAX_PIN="$(grep -E '^\s*jax>=' "$REPO/setup.cfg" | tr -d ' ')"    # jax>=0.10,<0.11
log "output $OUT_DIR, checkout $REPO, nvidia-smi CUDA ${CUDA_MAJOR}, jax extra $JAX_EXTRA, smoke $SMOKE"

# ---------------------------------------------------------------- install
# Each pip call gets what is left of the install phase's cap; none of them stops the script.
install_end=$(( SECONDS + CAP_INSTALL ))
left() { local t=$(( install_end - SECONDS )); (( t > 5 )) && echo "$t" || echo 5; }
install() {
  local online=1 probe_dir venv jax_spec=()
  if [[ "${ACCEL_INSTALL:-1}" == 0 ]]; then
    echo "ACCEL_INSTALL=0: no pip"; return 0
  fi
  probe_dir="$(mktemp -d)"
  if [[ "${ACCEL_OFFLINE:-0}" == 1 ]]; then
    online=0; echo "ACCEL_OFFLINE=1: no virtual environment, no downloads"
  elif ! timeout 40 "$PY" -m pip download "${PIP_NET[@]}" --no-deps --no-cache-dir -d "$probe_dir" ml-collections \
      > /dev/null 2>&1; then
    online=0; echo "WARNING: package index not reachable: no virtual environment, no downloads"
  fi
  if [[ "${SSD_JAX_NO_VENV:-0}" != 1 && $online == 1 ]]; then
    venv="${ACCEL_VENV:-/tmp/ssd_jax_accel_venv}"
    [[ -x "$venv/bin/python" ]] || timeout "$(left)" "$PY" -m venv --system-site-packages "$venv"
    PY="$venv/bin/python"; echo "virtual environment $venv"
  fi
  if [[ -n "${ACCEL_WHEELS:-}" ]]; then
    timeout "$(left)" "$PY" -m pip install --no-index --no-deps "$ACCEL_WHEELS"/*.whl \
      || echo "WARNING: wheels from $ACCEL_WHEELS failed"
  fi
  [[ "$SMOKE" == 1 ]] || jax_spec=("jax[$JAX_EXTRA]${JAX_PIN#jax}")
  if (( online )) && timeout "$(left)" "$PY" -m pip install "${PIP_NET[@]}" -e "$REPO" "${jax_spec[@]}"; then
    echo "installed: -e $REPO ${jax_spec[*]}"
  else
    echo "WARNING: pip install -e $REPO ${jax_spec[*]} failed or was not tried; the checkout alone (--no-deps)"
    timeout "$(left)" "$PY" -m pip install --no-deps --no-build-isolation --no-index -e "$REPO" \
      || echo "WARNING: the checkout is not installed either; it is imported through PYTHONPATH"
  fi
  if [[ "$SMOKE" != 1 ]]; then
    if (( online )) && timeout "$(left)" "$PY" -m pip install "${PIP_NET[@]}" -e "$REPO[torch]" torchvision; then
      echo "installed: torch, torchvision"
    else
      echo "WARNING: torch/torchvision not installed (the comparison is skipped unless they are already there)"
    fi
  fi
}
log "install: up to ${CAP_INSTALL}s"
install_start=$SECONDS
set +e
install > "$OUT_DIR/install.log" 2>&1
install_rc=$?
set -e
record install "$install_rc" "$(( SECONDS - install_start ))" \
  "python $PY; $(grep -c WARNING "$OUT_DIR/install.log" || true) warnings in install.log"
log "install: exit $install_rc after $(( SECONDS - install_start ))s, python $PY"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's ssd_jax, installed or not
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
"$PY" "$HERE/accelerator_report.py" probe "$OUT_DIR/probe.json" > /dev/null 2>&1 || true

# ---------------------------------------------------------------- quick start, benchmarks
if [[ "$SMOKE" == 1 ]]; then
  QS_ARGS=(--config.num_steps=20 --config.log_every=10 --config.eval.every=0 --config.data.shapes.num_eval=50
           --config.eval.num_sample_images=2)
  BENCH_ARGS=(--device cpu --model ssd_tiny --batch 2 --steps 2 --rounds 2)
else
  QS_STEPS="${ACCEL_QS_STEPS:-600}"
  QS_ARGS=()
  (( QS_STEPS > 0 )) && QS_ARGS=(--config.num_steps="$QS_STEPS")
  BENCH_ARGS=(--device gpu --batch 32 --steps 10 --rounds 5)
fi
run_phase quickstart "$CAP_QS" $(( CAP_TRAIN + CAP_DETECTOR + 5 )) \
  "$PY" -m ssd_jax.train --config shapes --workdir "$WORK/shapes" "${QS_ARGS[@]}"
run_phase train "$CAP_TRAIN" $(( CAP_DETECTOR + 5 )) \
  "$PY" "$HERE/bench_accelerator.py" --parts train --out "$OUT_DIR/train.json" "${BENCH_ARGS[@]}"
run_phase detector "$CAP_DETECTOR" 5 \
  "$PY" "$HERE/bench_accelerator.py" --parts detector --out "$OUT_DIR/detector.json" "${BENCH_ARGS[@]}"

# ---------------------------------------------------------------- one JSON
"$PY" "$HERE/accelerator_report.py" merge "$OUT_DIR" --quickstart-workdir "$WORK/shapes" \
  || python3 "$HERE/accelerator_report.py" merge "$OUT_DIR" --quickstart-workdir "$WORK/shapes"
log "done in ${SECONDS}s: $OUT_DIR/accelerator.json"
