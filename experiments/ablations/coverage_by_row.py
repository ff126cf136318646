"""Default-box coverage of the ground truth for every row of the sweeps that change the default boxes.

    python -m experiments.ablations.coverage_by_row [--images 1000] [--out experiments/ablations/results]

For each row of ``paper_table2`` and ``paper_table3`` (the rows whose config changes ``anchors.*``
and the baselines), builds the row's config exactly as ``experiments.ablate`` does, its default
boxes, and measures on the first ``--images`` training images of the base config's data:
the fraction of ground-truth boxes whose best default box has IoU >= the matching threshold
(coverage), the mean best IoU and the mean number of positives per box, overall, per COCO size
bucket and for elongated boxes (long side / short side >= 2). This is the measurement the
ablation README uses to explain which of the paper's trends reproduce. Writes
``coverage_by_row.md`` and ``coverage_by_row.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from experiments import ablate
from experiments.ablations import sweeps as sweeps_lib
from ssd_jax import anchors as anchor_lib
from ssd_jax import coverage, diagnose, models

ELONGATED = 2.0  # long side / short side at or above which a ground-truth box counts as elongated


def elongation(boxes: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
    """``float64 [G]``: long side over short side of each box in pixels (``boxes [G, 4]`` corners in
    [0, 1], ``image_hw [G, 2]`` each box's image (height, width))."""
    w = (boxes[:, 2] - boxes[:, 0]) * image_hw[:, 1]
    h = (boxes[:, 3] - boxes[:, 1]) * image_hw[:, 0]
    return np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-9)


def row_coverage(cfg, split: coverage.SplitBoxes, elongated: np.ndarray) -> dict:
    spec = models.config_spec(cfg)
    result = coverage.coverage(split, anchor_lib.default_boxes(spec), float(cfg.matching.iou_threshold))
    out = {"default_boxes": int(spec.num_boxes), "all": coverage.summarize(result),
           "elongated": coverage.summarize(result, elongated), "square_ish": coverage.summarize(result, ~elongated)}
    for b, name in enumerate(coverage.SIZE_BUCKETS):
        out[name] = coverage.summarize(result, result["bucket"] == b)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--out", default="experiments/ablations/results")
    args = p.parse_args(argv)

    table, split_cache = {}, {}
    for sweep in (sweeps_lib.PAPER_TABLE2, sweeps_lib.PAPER_TABLE3):
        configs = ablate.build_configs(sweep, list(sweep.rows))
        for row in sweep.rows:
            if row is not sweep.baseline and not any(k.startswith("anchors.") for k in row.overrides):
                continue
            cfg = configs[row.name]
            key = (sweep.base, int(cfg.image_size))
            if key not in split_cache:
                split, _, _ = diagnose.read_split(cfg.data, cfg.data.train_split, args.images)
                split_cache[key] = (split, elongation(split.boxes, split.image_hw[split.image]) >= ELONGATED)
            split, elongated = split_cache[key]
            table[f"{sweep.name}/{row.name}"] = dict(row_coverage(cfg, split, elongated), note=row.note)
            print(f"{sweep.name}/{row.name}: coverage {table[f'{sweep.name}/{row.name}']['all']['coverage']:.3f}")

    split, elongated = next(iter(split_cache.values()))
    lines = [f"Ground truth: the first {split.num_images} training images of `{sweeps_lib.PAPER_TABLE2.base}`, "
             f"{len(split.boxes)} boxes ({int(elongated.sum())} elongated, long/short side >= {ELONGATED:g}). "
             "Coverage: fraction of boxes whose best default box has IoU >= the matching threshold (0.5); "
             "best IoU: mean over boxes; positives: mean default boxes matched per box (IoU >= 0.5).", "",
             "| row | default boxes | coverage | best IoU | positives | coverage elongated | coverage small | "
             "coverage medium | coverage large |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        lines.append(f"| {name} | {r['default_boxes']} | {r['all']['coverage']:.3f} | {r['all']['mean_best_iou']:.3f} "
                     f"| {r['all']['mean_positives']:.2f} | {r['elongated']['coverage']:.3f} | "
                     f"{r['small']['coverage']:.3f} ({r['small']['boxes']}) | {r['medium']['coverage']:.3f} "
                     f"({r['medium']['boxes']}) | {r['large']['coverage']:.3f} ({r['large']['boxes']}) |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "coverage_by_row.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "coverage_by_row.json"), "w") as f:
        json.dump(table, f, indent=2)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
