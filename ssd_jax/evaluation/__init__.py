"""Detection evaluation: PASCAL VOC AP (2007 11-point and 2010+ area), COCO metrics, reports.

Boxes are normalised corners ``(xmin, ymin, xmax, ymax)``; label 0 is background. NumPy only:
the pass of a model over an eval split (JAX, the input pipeline) is :mod:`ssd_jax.evaluation.split_pass`,
which this package does not import, and ``python -m ssd_jax.evaluate`` is the command line.
"""

from ssd_jax.evaluation.coco import COCO_METRIC_NAMES, build_coco_ground_truth, coco_metrics
from ssd_jax.evaluation.evaluator import Evaluator
from ssd_jax.evaluation.report import format_table, plot_pr_curves, save_json, to_jsonable, write_report
from ssd_jax.evaluation.voc import VOC07_RECALL_THRESHOLDS, average_precision, voc_map

__all__ = [
    "COCO_METRIC_NAMES", "VOC07_RECALL_THRESHOLDS", "Evaluator", "average_precision",
    "build_coco_ground_truth", "coco_metrics", "format_table", "plot_pr_curves", "save_json",
    "to_jsonable", "voc_map", "write_report",
]
