"""How well default boxes cover a dataset's ground truth, and default boxes fitted to it.

Pure NumPy on host arrays: ground-truth boxes are corners ``(xmin, ymin, xmax, ymax)`` in [0, 1],
default boxes ``(cx, cy, w, h)`` in [0, 1] as :func:`ssd_jax.anchors.default_boxes` gives them.
``python -m ssd_jax.diagnose`` prints and draws these numbers for a config's training split.

Definitions (per ground-truth box ``g``, with the matching threshold ``t``, 0.5 in the paper):
  best IoU: ``max_a IoU(g, a)`` over all default boxes; ``g`` is *covered* when it is ``>= t``.
  positives: the default boxes matched to ``g`` by the paper's / torchvision's argmax matching on
    its image: boxes whose best ground truth is ``g`` with IoU ``>= t`` (ties to the first ground
    truth), plus ``g``'s own best default box, which matching forces (so at least 1).
Size buckets are COCO's, on the box area in the image's own pixels: small < 32^2, medium < 96^2,
large otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from ssd_jax import anchors as anchor_lib

SIZE_BUCKETS = ("small", "medium", "large")
_CHUNK = 4096  # ground-truth boxes per IoU block: [chunk, A] float32 stays small


def _corners(default_boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.asarray(default_boxes, np.float64).T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def iou_matrix(gt: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """IoU ``float64 [G, A]`` of corner boxes ``gt [G, 4]`` and ``corners [A, 4]``."""
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    lt = np.maximum(gt[:, None, :2], corners[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], corners[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_g = np.prod(gt[:, 2:] - gt[:, :2], axis=1)
    area_a = np.prod(corners[:, 2:] - corners[:, :2], axis=1)
    return inter / np.maximum(area_g[:, None] + area_a[None, :] - inter, 1e-12)


def best_iou(gt: np.ndarray, default_boxes: np.ndarray) -> np.ndarray:
    """``float64 [G]``: each ground-truth box's best IoU over ``default_boxes [A, 4]`` (cx, cy, w, h)."""
    corners = _corners(default_boxes)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    best = np.zeros(len(gt))
    for start in range(0, len(gt), _CHUNK):
        best[start:start + _CHUNK] = iou_matrix(gt[start:start + _CHUNK], corners).max(axis=1)
    return best


def positives_per_box(gt: np.ndarray, default_boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """``int64 [G]``: default boxes argmax matching gives each of one image's ``gt [G, 4]`` boxes."""
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    if len(gt) == 0:
        return np.zeros(0, np.int64)
    iou = iou_matrix(gt, _corners(default_boxes))  # [G, A]
    owner = np.argmax(iou, axis=0)  # first maximum: ties go to the first ground truth
    matched = iou[owner, np.arange(iou.shape[1])] >= iou_threshold
    owner = np.where(matched, owner, -1)
    owner[np.argmax(iou, axis=1)] = np.arange(len(gt))  # forced best boxes (a later box wins a shared one)
    return np.bincount(owner[owner >= 0], minlength=len(gt)).astype(np.int64)


def size_buckets(boxes: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
    """``int [G]`` index into :data:`SIZE_BUCKETS` of corner boxes in images of ``image_hw [G, 2]`` pixels."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    hw = np.asarray(image_hw, np.float64).reshape(-1, 2)
    area = (boxes[:, 2] - boxes[:, 0]) * hw[:, 1] * (boxes[:, 3] - boxes[:, 1]) * hw[:, 0]
    return np.digitize(area, [32.0 ** 2, 96.0 ** 2])


@dataclasses.dataclass(frozen=True)
class SplitBoxes:
    """The ground truth of one split, flattened over images.

    Attributes:
      boxes: ``float32 [G, 4]`` corners in [0, 1]; labels ``int32 [G]`` (1..C-1); image ``int [G]``:
        the index of each box's image; image_hw ``int [N, 2]``: each image's (height, width) in
        pixels; num_images: N (images without boxes count: they are background-only examples).
    """
    boxes: np.ndarray
    labels: np.ndarray
    image: np.ndarray
    image_hw: np.ndarray
    num_images: int

    @classmethod
    def from_images(cls, boxes: Sequence, labels: Sequence, image_hw: Sequence) -> SplitBoxes:
        """From per-image ``boxes [n_i, 4]``, ``labels [n_i]`` and ``(height, width)``."""
        counts = [len(np.asarray(b).reshape(-1, 4)) for b in boxes]
        flat = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        return cls(boxes=np.concatenate(flat) if flat else np.zeros((0, 4), np.float32),
                   labels=np.concatenate([np.asarray(x, np.int32).reshape(-1) for x in labels])
                   if len(labels) else np.zeros(0, np.int32),
                   image=np.repeat(np.arange(len(counts)), counts),
                   image_hw=np.asarray(image_hw, np.int64).reshape(-1, 2), num_images=len(counts))


def coverage(split: SplitBoxes, default_boxes: np.ndarray, iou_threshold: float) -> dict:
    """Per-box best IoU, covered flag and positives of ``split`` under ``default_boxes``.

    Returns ``{"best_iou": float64 [G], "covered": bool [G], "positives": int64 [G],
    "bucket": int [G]}``.
    """
    best = best_iou(split.boxes, default_boxes)
    positives = np.zeros(len(split.boxes), np.int64)
    order = np.argsort(split.image, kind="stable")
    starts = np.searchsorted(split.image[order], np.arange(split.num_images + 1))
    for i in range(split.num_images):
        rows = order[starts[i]:starts[i + 1]]
        if len(rows):
            positives[rows] = positives_per_box(split.boxes[rows], default_boxes, iou_threshold)
    bucket = size_buckets(split.boxes, split.image_hw[split.image]) if len(split.boxes) else np.zeros(0, int)
    return {"best_iou": best, "covered": best >= iou_threshold, "positives": positives, "bucket": bucket}


def summarize(result: dict, rows: np.ndarray | None = None) -> dict:
    """``{"boxes", "coverage", "mean_best_iou", "mean_positives"}`` over ``rows`` (all boxes if None)."""
    rows = slice(None) if rows is None else rows
    best, covered, positives = result["best_iou"][rows], result["covered"][rows], result["positives"][rows]
    n = len(best)
    return {"boxes": n, "coverage": float(covered.mean()) if n else float("nan"),
            "mean_best_iou": float(best.mean()) if n else float("nan"),
            "mean_positives": float(positives.mean()) if n else float("nan")}


def report(split: SplitBoxes, default_boxes: np.ndarray, iou_threshold: float, class_names: Sequence[str]) -> dict:
    """Coverage overall, per class (by name) and per size bucket, plus the uncovered boxes' indices."""
    result = coverage(split, default_boxes, iou_threshold)
    per_class = {name: summarize(result, split.labels == c) for c, name in enumerate(class_names) if c > 0}
    per_size = {name: summarize(result, result["bucket"] == b) for b, name in enumerate(SIZE_BUCKETS)}
    images_with_boxes = len(np.unique(split.image))
    return {"all": summarize(result), "per_class": per_class, "per_size": per_size,
            "num_images": split.num_images, "images_without_boxes": split.num_images - images_with_boxes,
            "uncovered": np.flatnonzero(~result["covered"]), "result": result}


# ----------------------------------------------------------------------------- fitting

SCALE_GRID_MIN = (0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3)
SCALE_GRID_MAX = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
RATIO_SETS = ((), (2.0,), (2.0, 3.0), (1.5, 3.0), (2.0, 4.0), (1.5, 2.5, 4.0))


def _sample(split: SplitBoxes, max_boxes: int, seed: int = 0) -> np.ndarray:
    if len(split.boxes) <= max_boxes:
        return split.boxes
    return split.boxes[np.random.default_rng(seed).choice(len(split.boxes), max_boxes, replace=False)]


def fit_spec(model_spec: anchor_lib.DefaultBoxSpec, split: SplitBoxes, iou_threshold: float,
             max_growth: float = 1.5, max_boxes: int = 20_000) -> tuple[anchor_lib.DefaultBoxSpec, dict]:
    """Default boxes on the model's own maps fitted to ``split``: the paper's formula over a grid of
    ``(s_min, s_max)`` and one set of aspect ratios for every map.

    Picks the highest coverage among specs with at most ``max_growth`` times the model's default
    boxes (ties: higher mean best IoU, then fewer boxes); the model's own spec competes too, so the
    result never covers less than it on the boxes scored. Up to ``max_boxes`` ground-truth boxes are
    scored (a fixed random sample beyond that).

    Returns:
      ``(spec, overrides)``: the spec and the ``config.anchors`` fields that give it (empty when the
      model's own spec wins).
    """
    gt = _sample(split, max_boxes)
    current = anchor_lib.default_boxes(model_spec)

    def score(boxes):
        best = best_iou(gt, boxes)
        return float(np.mean(best >= iou_threshold)) if len(best) else 0.0, float(np.mean(best)) if len(best) else 0.0

    best_key = (*score(current), -len(current))
    best_spec, best_overrides = model_spec, {}
    limit = max_growth * len(current)
    for s_min, s_max, ratios in itertools.product(SCALE_GRID_MIN, SCALE_GRID_MAX, RATIO_SETS):
        overrides = {"s_min": s_min, "s_max": s_max, "aspect_ratios": (ratios,)}
        spec, _ = anchor_lib.spec_from_config(model_spec, overrides)
        if spec.num_boxes > limit:
            continue
        boxes = anchor_lib.default_boxes(spec)
        key = (*score(boxes), -len(boxes))
        if key > best_key:
            best_key, best_spec, best_overrides = key, spec, overrides
    return best_spec, best_overrides


def overrides_to_flags(overrides: dict) -> str:
    """``--config.anchors.FIELD=VALUE`` flags (shell-quoted where needed) for :func:`fit_spec`'s overrides."""
    parts = []
    for key, value in overrides.items():
        text = repr(value).replace(" ", "")
        parts.append(f"--config.anchors.{key}=" + (f"'{text}'" if any(c in text for c in "(),") else text))
    return " ".join(parts)
