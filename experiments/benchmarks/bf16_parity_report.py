"""Summarises the two runs of ``bf16_parity.sh``: ``python bf16_parity_report.py OUT_DIR``.

Reads ``OUT_DIR/{float32,bfloat16}/eval.json`` (the trainer's final evaluation), the
``/usr/bin/time`` JSON of each run and ``OUT_DIR/load.txt``, and writes
``results/bf16_parity.json`` and ``results/bf16_parity.md`` next to this file.
"""

from __future__ import annotations

import json
import os
import platform
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DTYPES = ("float32", "bfloat16")
TOLERANCE = 0.01  # |mAP(bf16) - mAP(f32)| allowed by issue 22


def run_summary(out_dir: str, dtype: str) -> dict:
    """Final metrics and times of one run."""
    with open(os.path.join(out_dir, dtype, "eval.json")) as f:
        result = json.load(f)
    with open(os.path.join(out_dir, f"{dtype}.time.json")) as f:
        times = json.load(f)
    steps = None
    with open(os.path.join(out_dir, f"{dtype}.log")) as f:
        for line in f:
            if line.startswith("trained "):
                steps = line.strip()
    return dict(dtype=dtype, voc07_map50=result["mAP"], coco_ap=result.get("AP"), coco_ap50=result.get("AP50"),
                wall_s=times["wall_s"], cpu_s=round(times["user_s"] + times["sys_s"], 1),
                max_rss_mib=round(times["max_rss_kb"] / 1024), trainer_line=steps)


def main(argv=None) -> int:
    out_dir = (argv or sys.argv[1:])[0]
    rows = [run_summary(out_dir, d) for d in DTYPES]
    with open(os.path.join(out_dir, "load.txt")) as f:
        load = f.read().strip()
    import jax
    diff = rows[1]["voc07_map50"] - rows[0]["voc07_map50"]
    summary = dict(rows=rows, map_difference_bf16_minus_f32=diff, within_tolerance=abs(diff) <= TOLERANCE,
                   tolerance=TOLERANCE, load=load, jax=jax.__version__,
                   machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   command="bash experiments/benchmarks/bf16_parity.sh")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bf16_parity.json"), "w") as f:
        json.dump(summary, f, indent=1)
    lines = ["# bfloat16 parity of the quick start (`shapes`, ssd_tiny 128 px, 1200 steps)", "",
             "`bash experiments/benchmarks/bf16_parity.sh`: the same command twice, `--config.dtype=float32` and "
             "`--config.dtype=bfloat16`, side by side on the same machine (XLA:CPU, JAX "
             f"{jax.__version__}, {summary['machine']}). Uptime and load average (1, 5, 15 min) around the runs:", "",
             *[f"- {line}" for line in load.splitlines()], "",
             "Wall time is the whole command (training, two evaluations, checkpoints); on a shared machine it "
             "mostly measures the load, CPU time (user+sys) the work.", "",
             "| dtype | VOC07 mAP@0.5 | COCO AP | COCO AP50 | wall | CPU (user+sys) | max RSS |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ap = "-" if r["coco_ap"] is None else f"{r['coco_ap']:.4f}"
        ap50 = "-" if r["coco_ap50"] is None else f"{r['coco_ap50']:.4f}"
        lines.append(f"| {r['dtype']} | {r['voc07_map50']:.4f} | {ap} | {ap50} | {r['wall_s'] / 60:.1f} min | "
                     f"{r['cpu_s'] / 60:.1f} min | {r['max_rss_mib']} MiB |")
    lines += ["", f"bf16 - f32 VOC07 mAP@0.5: {diff:+.4f} (issue 22 asks for |difference| <= {TOLERANCE}: "
              f"{'met' if summary['within_tolerance'] else 'NOT met'})."]
    with open(os.path.join(RESULTS, "bf16_parity.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
