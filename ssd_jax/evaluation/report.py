"""Rendering evaluation results: a per-class text table, JSON, and a PNG grid of PR curves.

All functions take the dict returned by :func:`ssd_jax.evaluation.voc_map` or
:meth:`ssd_jax.evaluation.Evaluator.result` (COCO keys optional). ``class_names`` lists the ``C``
class names with the background at index 0 (it is never shown); if None, classes are shown by
their label.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssd_jax.evaluation.coco import COCO_METRIC_NAMES


def _names(result: dict, class_names: Sequence[str] | None) -> list[str]:
    num_classes = len(result["ap"])
    names = class_names if class_names is not None else result.get("class_names")
    if names is None:
        return [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes (index 0 is background)")
    return list(names)


def _percent(x: float) -> str:
    return "   n/a" if x is None or not math.isfinite(x) else f"{100.0 * x:6.2f}"


def format_table(result: dict, class_names: Sequence[str] | None = None) -> str:
    """Per-class table (class, AP in %, number of non-difficult ground truths), the mean, then COCO.

    Classes without ground truth show ``n/a`` (their AP is NaN and is not in the mean). COCO numbers
    of -1 (nothing to average) show ``n/a`` too.
    """
    names = _names(result, class_names)
    width = max([len("class"), len("mean")] + [len(n) for n in names[1:]])
    metric = "VOC07 11-point" if result.get("use_07_metric", True) else "VOC area"
    iou = result.get("iou_threshold", 0.5)
    lines = [f"{metric} AP, IoU > {iou:g}",
             f"{'class':<{width}}  {'AP (%)':>6}  {'num_gt':>7}",
             "-" * (width + 17)]
    for c in range(1, len(names)):
        lines.append(f"{names[c]:<{width}}  {_percent(float(result['ap'][c]))}  {int(result['num_gt'][c]):>7d}")
    lines.append("-" * (width + 17))
    lines.append(f"{'mean':<{width}}  {_percent(float(result['mAP']))}  {int(np.sum(result['num_gt'])):>7d}")
    if all(k in result for k in COCO_METRIC_NAMES):
        lines.append("")
        lines.append("COCO (IoU 0.50:0.95 unless named)")
        for key in COCO_METRIC_NAMES:
            value = result[key]
            lines.append(f"{key:<6} {_percent(value if value >= 0 else float('nan'))}")
    if "num_images" in result:
        lines.append("")
        lines.append(f"images: {result['num_images']}")
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    """NumPy/JAX values -> plain Python; NaN and inf -> None (JSON null)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        arr = np.asarray(value)
        return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    raise TypeError(f"to_jsonable: cannot convert {type(value).__name__} to JSON")


def save_json(result: dict, path: str, include_curves: bool = False) -> None:
    """Write ``result`` as JSON (NaN -> null, arrays -> lists).

    The precision/recall curves are long (one point per detection); they are left out unless
    ``include_curves``.
    """
    data = dict(result)
    if not include_curves:
        data.pop("precision", None)
        data.pop("recall", None)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(to_jsonable(data), f, indent=2, allow_nan=False)
        f.write("\n")


def plot_pr_curves(result: dict, class_names: Sequence[str] | None, path: str, cols: int = 5) -> None:
    """Save a PNG grid with one precision-recall plot per object class (AP in each title)."""
    # A bare Figure on the Agg canvas: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = _names(result, class_names)
    num = len(names) - 1
    if num < 1:
        raise ValueError("plot_pr_curves: no object classes")
    cols = max(1, min(cols, num))
    rows = math.ceil(num / cols)
    fig = Figure(figsize=(2.6 * cols, 2.4 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for c in range(1, len(names)):
        ax = fig.add_subplot(rows, cols, c)
        recall = np.asarray(result["recall"][c], np.float64)
        precision = np.asarray(result["precision"][c], np.float64)
        if recall.size and np.all(np.isfinite(recall)):
            ax.plot(np.concatenate(([0.0], recall)), np.concatenate(([precision[0]], precision)), lw=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{names[c]}  AP {_percent(float(result['ap'][c])).strip()}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if (c - 1) % cols == 0:
            ax.set_ylabel("precision", fontsize=7)
        if c > num - cols:
            ax.set_xlabel("recall", fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")


def write_report(result: dict, out_dir: str, class_names: Sequence[str] | None = None,
                 prefix: str = "eval") -> dict:
    """Render everything for a CLI: ``{prefix}_table.txt``, ``{prefix}.json``, ``{prefix}_pr.png``.

    Returns:
      ``{"table": str, "table_path": ..., "json_path": ..., "pr_path": ...}``; the table text is
      returned so a caller can also print it. The PR plot is skipped (``pr_path`` None) when the
      result has no curves.
    """
    os.makedirs(out_dir, exist_ok=True)
    table = format_table(result, class_names)
    table_path = os.path.join(out_dir, f"{prefix}_table.txt")
    with open(table_path, "w") as f:
        f.write(table + "\n")
    json_path = os.path.join(out_dir, f"{prefix}.json")
    save_json(result, json_path)
    pr_path = None
    if "precision" in result and "recall" in result:
        pr_path = os.path.join(out_dir, f"{prefix}_pr.png")
        plot_pr_curves(result, class_names, pr_path)
    return {"table": table, "table_path": table_path, "json_path": json_path, "pr_path": pr_path}
