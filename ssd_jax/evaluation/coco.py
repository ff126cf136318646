"""COCO box metrics (the 12 numbers of ``COCOeval.summarize``) for any dataset, via pycocotools.

Boxes come in as corners ``(xmin, ymin, xmax, ymax)`` normalised to [0, 1]; they are converted to
COCO's absolute ``[x, y, w, h]`` in pixels with each image's original ``(height, width)``, so the
small/medium/large split (32^2 and 96^2 pixel areas) means what it means in COCO. The ground truth
is built in memory as a COCO object (image ids are the positions in the input lists, annotation ids
start at 1, ``area`` is the box area in pixels, ``iscrowd`` is 0 unless a ground-truth dict gives an
``"iscrowd"`` array), so COCO AP is available for VOC folders and synthetic data alike.

Labels are contiguous (1..C-1, 0 is background); ``category_ids`` maps them to COCO category ids
(default: identity). The categories evaluated are the values of ``category_ids`` when given, else
every label present in the ground truth or the detections; categories without ground truth are
left out of the means by COCOeval itself (their entries stay -1).

COCO has no ``difficult`` flag: difficult boxes, if any, are ordinary ground truths here.

pycocotools prints progress; it is captured and dropped, the numbers are kept. With no detections
at all ``COCO.loadRes`` cannot be used (it fails on an empty list), so an empty result object is
built directly: COCOeval then gives 0 for every number whose area range has ground truth and -1
for those without any (the same values it gives when all detections miss).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                     "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _label_to_category(labels: np.ndarray, category_ids) -> np.ndarray:
    if category_ids is None:
        return labels.astype(np.int64)
    out = np.empty(labels.shape, np.int64)
    for i, label in enumerate(labels.tolist()):
        try:
            out[i] = int(category_ids[label])
        except (KeyError, IndexError):
            raise ValueError(f"coco_metrics: label {label} has no entry in category_ids") from None
    return out


def _to_xywh_pixels(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], np.float64)
    absolute = boxes * scale
    return np.concatenate([absolute[:, :2], absolute[:, 2:] - absolute[:, :2]], axis=1)


def _check_sizes(image_sizes, num_images) -> np.ndarray:
    sizes = np.asarray(image_sizes, np.float64)
    if sizes.shape != (num_images, 2):
        raise ValueError(f"coco_metrics: image_sizes must have shape [{num_images}, 2] "
                         f"(height, width per image), got {sizes.shape}")
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError("coco_metrics: image_sizes must be positive and finite")
    return sizes


def build_coco_ground_truth(ground_truths: Sequence[Mapping[str, Any]], image_sizes,
                            category_ids=None, extra_category_ids=()) -> COCO:
    """An in-memory pycocotools ``COCO`` ground truth from normalised per-image dicts.

    Args:
      ground_truths: one dict per image, ``{"boxes": [M, 4] normalised corners, "labels": [M],
        "iscrowd": [M] (optional)}``.
      image_sizes: ``[N, 2]`` original ``(height, width)`` per image.
      category_ids: optional label -> category id mapping (dict or sequence); identity if None.
      extra_category_ids: further category ids to declare (e.g. those only detections use).

    Returns:
      A ``COCO`` object with image ids ``0..N-1``.
    """
    sizes = _check_sizes(image_sizes, len(ground_truths))
    images, annotations, seen = [], [], {int(c) for c in extra_category_ids}
    for i, gt in enumerate(ground_truths):
        height, width = sizes[i]
        images.append({"id": i, "height": float(height), "width": float(width)})
        try:
            boxes, labels = gt["boxes"], np.asarray(gt["labels"]).reshape(-1)
        except KeyError as e:
            raise ValueError(f"coco_metrics: ground_truths[{i}] is missing key {e}") from None
        xywh = _to_xywh_pixels(boxes, height, width)
        if xywh.shape[0] != labels.shape[0]:
            raise ValueError(f"coco_metrics: ground_truths[{i}] has {xywh.shape[0]} boxes but "
                             f"{labels.shape[0]} labels")
        if not np.all(np.isfinite(xywh)):
            raise ValueError(f"coco_metrics: ground_truths[{i}]['boxes'] contains non-finite values")
        crowd = gt.get("iscrowd")
        crowd = np.zeros(labels.shape[0], np.int64) if crowd is None else np.asarray(crowd).reshape(-1)
        cats = _label_to_category(labels, category_ids)
        for box, cat, is_crowd in zip(xywh.tolist(), cats.tolist(), crowd.tolist()):
            seen.add(cat)
            annotations.append({"id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                                "image_id": i, "category_id": cat, "bbox": box,
                                "area": max(box[2], 0.0) * max(box[3], 0.0), "iscrowd": int(is_crowd)})
    if category_ids is not None:
        values = category_ids.values() if isinstance(category_ids, Mapping) else category_ids
        seen.update(int(v) for v in values)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": c, "name": str(c)} for c in sorted(seen)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _detection_array(detections, sizes, category_ids) -> np.ndarray:
    """``[D, 7]`` rows ``(image_id, x, y, w, h, score, category_id)`` as ``COCO.loadRes`` takes."""
    rows = []
    for i, det in enumerate(detections):
        try:
            boxes, scores, classes = det["boxes"], det["scores"], det["classes"]
        except KeyError as e:
            raise ValueError(f"coco_metrics: detections[{i}] is missing key {e}") from None
        xywh = _to_xywh_pixels(boxes, *sizes[i])
        scores = np.asarray(scores, np.float64).reshape(-1)
        classes = np.asarray(classes).reshape(-1)
        if not (xywh.shape[0] == scores.shape[0] == classes.shape[0]):
            raise ValueError(f"coco_metrics: detections[{i}] has {xywh.shape[0]} boxes, "
                             f"{scores.shape[0]} scores and {classes.shape[0]} classes")
        if not (np.all(np.isfinite(xywh)) and np.all(np.isfinite(scores))):
            raise ValueError(f"coco_metrics: detections[{i}] contains non-finite boxes or scores")
        cats = _label_to_category(classes, category_ids)
        rows.append(np.column_stack([np.full(scores.shape[0], i, np.float64), xywh, scores, cats]))
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def coco_metrics(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
                 image_sizes, category_ids=None) -> dict:
    """The 12 standard COCO box metrics, computed by pycocotools' ``COCOeval``.

    Args:
      detections: one dict per image, ``{"boxes": [K, 4] normalised corners, "scores": [K],
        "classes": [K] int labels}``.
      ground_truths: one dict per image (same order), ``{"boxes": [M, 4] normalised corners,
        "labels": [M] int, "iscrowd": [M] (optional)}``; ``"difficult"`` is not used.
      image_sizes: ``[N, 2]`` original ``(height, width)`` in pixels per image.
      category_ids: optional label -> COCO category id mapping (dict, or sequence indexed by
        label); identity if None.

    Returns:
      dict with float keys ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl``
      (fractions in [0, 1]; -1 where COCOeval has nothing to average, e.g. no small objects).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"coco_metrics: {len(detections)} detection entries but "
                         f"{len(ground_truths)} ground-truth entries (one of each per image)")
    sizes = _check_sizes(image_sizes, len(ground_truths))
    rows = _detection_array(detections, sizes, category_ids)
    coco_gt = build_coco_ground_truth(ground_truths, sizes, category_ids,
                                      extra_category_ids=np.unique(rows[:, 6]).astype(np.int64))
    with contextlib.redirect_stdout(io.StringIO()):
        if rows.shape[0]:
            coco_dt = coco_gt.loadRes(rows)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                               "categories": list(coco_gt.dataset["categories"])}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)}
