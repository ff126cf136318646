"""PASCAL VOC detection average precision (VOC2007 11-point and VOC2010+ area), vectorised NumPy.

The protocol is the official devkit's (``VOCevaldet.m``, ported to Python as py-faster-rcnn's
``voc_eval.py``), per class:

  1. Detections of the class over the whole split are ranked by score, highest first. Ties keep
     their input order: image order (the order of the ``detections`` list), then the order within
     the image. This is a stable sort, like MATLAB's ``sort`` in the official devkit (py-faster-rcnn
     uses NumPy's unstable quicksort, whose tie order is unspecified).
  2. Each detection is compared with every ground truth of the class in its image, difficult ones
     included, and takes the one of largest IoU (``ovmax``, first one on ties).
  3. If ``ovmax > iou_threshold`` (strictly greater, as the devkit): a difficult ground truth makes
     the detection *ignored* (neither true nor false positive); otherwise the detection is a true
     positive if it is the first (in rank order) to take that ground truth, and a false positive
     (a duplicate) if not. If ``ovmax <= iou_threshold`` it is a false positive.
  4. ``recall = cumTP / num_gt`` with ``num_gt`` the non-difficult ground truths; ``precision =
     cumTP / (cumTP + cumFP)``. AP is either the VOC2007 11-point AP (mean over t in
     ``np.arange(0, 1.1, 0.1)`` of the largest precision at recall >= t, exactly the thresholds of
     the Python devkit) or the area under the monotone precision envelope (VOC2010+).

Because step 2 does not depend on earlier matches, step 3 reduces to "first detection per ground
truth wins", which is what makes the whole computation vectorisable: no Python loop over
detections, only over classes.

Boxes are corners ``(xmin, ymin, xmax, ymax)`` normalised to [0, 1] and IoU is computed on these
continuous coordinates. The devkit works in integer pixel coordinates and adds 1 to widths and
heights (a box from pixel 1 to pixel 10 is 10 pixels wide); we do not, so overlaps of small boxes
differ slightly from the devkit's (to reproduce it exactly, convert to pixels and add 1 to
``xmax``/``ymax`` before normalising).

A class with no non-difficult ground truth has AP NaN and is left out of the mean, as is the
background class 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Recall thresholds of the VOC2007 11-point AP, exactly as the Python devkit builds them (so 0.3 is
# 0.30000000000000004: a recall of exactly 0.3 does not reach it).
VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of two aligned arrays of corner boxes.

    Args:
      a: ``[P, 4]`` corners.
      b: ``[P, 4]`` corners.

    Returns:
      ``[P]`` float64 IoU; 0 where the union is empty.
    """
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0)
    inter = iw * ih
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a ranked precision/recall curve (the devkit's ``voc_ap``).

    Args:
      recall: ``[N]`` non-decreasing recall after each ranked detection.
      precision: ``[N]`` precision after each ranked detection.
      use_07_metric: True for the VOC2007 11-point AP, False for the area under the monotone
        precision envelope (VOC2010+).

    Returns:
      AP in [0, 1]; 0 for an empty curve.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        # Largest precision at recall >= t == the envelope at the first index with recall >= t.
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, VOC07_RECALL_THRESHOLDS, side="left")
        reached = first < recall.size
        return float(np.sum(envelope[np.minimum(first, recall.size - 1)] * reached) / 11.0)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _flatten(items: Sequence[Mapping[str, Any]], kind: str, num_classes: int):
    """Concatenate per-image dicts into flat arrays with an image index, validating them."""
    box_key, label_key = ("boxes", "classes") if kind == "detections" else ("boxes", "labels")
    boxes, labels, scores, difficult, image = [], [], [], [], []
    for i, item in enumerate(items):
        try:
            b = np.asarray(item[box_key], np.float64).reshape(-1, 4)
            lab = np.asarray(item[label_key]).reshape(-1)
        except KeyError as e:
            raise ValueError(f"{kind}[{i}] is missing key {e}") from None
        except ValueError:
            raise ValueError(f"{kind}[{i}]['{box_key}'] must have shape [K, 4], "
                             f"got {np.shape(item[box_key])}") from None
        if lab.shape[0] != b.shape[0]:
            raise ValueError(f"{kind}[{i}]: {b.shape[0]} boxes but {lab.shape[0]} {label_key}")
        if lab.size and not np.issubdtype(lab.dtype, np.integer) and not np.all(lab == np.round(lab)):
            raise ValueError(f"{kind}[{i}]['{label_key}'] must be integers, got {lab.dtype}")
        lab = lab.astype(np.int64)
        if not np.all(np.isfinite(b)):
            raise ValueError(f"{kind}[{i}]['{box_key}'] contains non-finite values")
        if lab.size and (lab.min() < 1 or lab.max() >= num_classes):
            raise ValueError(f"{kind}[{i}]['{label_key}'] must be in [1, {num_classes - 1}] "
                             f"(0 is background), got values in [{lab.min()}, {lab.max()}]")
        if kind == "detections":
            s = np.asarray(item["scores"], np.float64).reshape(-1) if "scores" in item else None
            if s is None:
                raise ValueError(f"{kind}[{i}] is missing key 'scores'")
            if s.shape[0] != b.shape[0]:
                raise ValueError(f"{kind}[{i}]: {b.shape[0]} boxes but {s.shape[0]} scores")
            if not np.all(np.isfinite(s)):
                raise ValueError(f"{kind}[{i}]['scores'] contains non-finite values")
            scores.append(s)
        else:
            d = item.get("difficult")
            d = np.zeros(b.shape[0], bool) if d is None else np.asarray(d, bool).reshape(-1)
            if d.shape[0] != b.shape[0]:
                raise ValueError(f"{kind}[{i}]: {b.shape[0]} boxes but {d.shape[0]} difficult flags")
            difficult.append(d)
        boxes.append(b)
        labels.append(lab)
        image.append(np.full(b.shape[0], i, np.int64))
    cat = lambda xs, shape, dtype: np.concatenate(xs) if xs else np.zeros(shape, dtype)
    out = {"boxes": cat(boxes, (0, 4), np.float64), "labels": cat(labels, (0,), np.int64),
           "image": cat(image, (0,), np.int64)}
    if kind == "detections":
        out["scores"] = cat(scores, (0,), np.float64)
    else:
        out["difficult"] = cat(difficult, (0,), bool)
    return out


def _best_overlap(det_boxes, det_image, gt_boxes, gt_image):
    """For each detection, the largest IoU with a ground truth of its image and that ground truth.

    Both inputs must be sorted by image index. Returns ``ovmax [D]`` (``-inf`` where the image has
    no ground truth) and ``jmax [D]`` (index into the ground truths, first one on ties; -1 where
    there is none).
    """
    num_det = det_boxes.shape[0]
    start = np.searchsorted(gt_image, det_image, side="left")
    count = np.searchsorted(gt_image, det_image, side="right") - start
    ovmax = np.full(num_det, -np.inf)
    jmax = np.full(num_det, -1, np.int64)
    total = int(count.sum())
    if total == 0:
        return ovmax, jmax
    offsets = np.cumsum(count) - count
    pair_det = np.repeat(np.arange(num_det), count)
    pair_gt = start[pair_det] + (np.arange(total) - offsets[pair_det])
    overlaps = pairwise_iou(det_boxes[pair_det], gt_boxes[pair_gt])
    has_gt = count > 0
    ovmax[has_gt] = np.maximum.reduceat(overlaps, offsets[has_gt])
    hits = np.flatnonzero(overlaps == ovmax[pair_det])
    first_hit = hits[np.concatenate(([True], pair_det[hits[1:]] != pair_det[hits[:-1]]))]
    jmax[pair_det[first_hit]] = pair_gt[first_hit]
    return ovmax, jmax


def _class_curve(det, gt, iou_threshold):
    """Ranked precision/recall of one class. ``det``/``gt`` are flat dicts of that class only."""
    num_gt = int(np.count_nonzero(~gt["difficult"]))
    ovmax, jmax = _best_overlap(det["boxes"], det["image"], gt["boxes"], gt["image"])
    order = np.argsort(-det["scores"], kind="stable")
    ovmax, jmax = ovmax[order], jmax[order]
    above = ovmax > iou_threshold
    hit_difficult = np.zeros_like(above)
    hit_difficult[above] = gt["difficult"][jmax[above]]
    kept = ~(above & hit_difficult)  # detections on difficult ground truths are ignored
    candidate = (above & ~hit_difficult)[kept]
    target = jmax[kept]
    tp = np.zeros(candidate.shape[0], bool)
    cand_idx = np.flatnonzero(candidate)
    _, first = np.unique(target[cand_idx], return_index=True)  # first detection per gt wins
    tp[cand_idx[first]] = True
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(~tp)
    recall = cum_tp / num_gt if num_gt > 0 else np.full(cum_tp.shape, np.nan)
    precision = cum_tp / np.maximum(cum_tp + cum_fp, 1)
    return num_gt, recall, precision


def voc_map(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
            num_classes: int, iou_threshold: float = 0.5, use_07_metric: bool = True) -> dict:
    """PASCAL VOC mean average precision over a split.

    Args:
      detections: one dict per image, ``{"boxes": [K, 4] corners in [0, 1], "scores": [K],
        "classes": [K] int in [1, num_classes)}``; ``K`` may be 0.
      ground_truths: one dict per image (same order), ``{"boxes": [M, 4], "labels": [M] int in
        [1, num_classes), "difficult": [M] bool (optional, default all False)}``.
      num_classes: ``C``, including the background class 0.
      iou_threshold: a detection matches when its IoU with the ground truth is strictly greater.
      use_07_metric: VOC2007 11-point AP if True, else area under the precision envelope.

    Returns:
      dict with
        ``"mAP"``: float, mean of ``ap`` over classes that have ground truth (NaN, with a warning,
          if none has);
        ``"ap"``: float64 ``[C]``, NaN for class 0 and for classes without non-difficult ground
          truth;
        ``"num_gt"``: int64 ``[C]``, non-difficult ground truths per class;
        ``"num_detections"``: int64 ``[C]``, detections per class, ignored ones included;
        ``"precision"``, ``"recall"``: lists of ``C`` float64 arrays, the ranked curves (ignored
          detections removed; empty for class 0; recall NaN for classes without ground truth);
        ``"iou_threshold"``, ``"use_07_metric"``: the settings used.

    Raises:
      ValueError: on mismatched lengths, missing keys, bad shapes, non-finite values or labels
        outside ``[1, C)``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"voc_map: {len(detections)} detection entries but {len(ground_truths)} "
                         "ground-truth entries (one of each per image)")
    if num_classes < 2:
        raise ValueError(f"voc_map: num_classes must include background and >= 1 class, got {num_classes}")
    det = _flatten(detections, "detections", num_classes)
    gt = _flatten(ground_truths, "ground_truths", num_classes)
    return _voc_map_flat(det, gt, num_classes, iou_threshold, use_07_metric)


def _split_by_label(flat, num_classes):
    """Per-class views of a flat dict, keeping the (image-sorted) order within each class."""
    order = np.argsort(flat["labels"], kind="stable")
    bounds = np.searchsorted(flat["labels"][order], np.arange(num_classes + 1))
    return [{k: v[order[bounds[c]:bounds[c + 1]]] for k, v in flat.items()} for c in range(num_classes)]


def _voc_map_flat(det, gt, num_classes, iou_threshold, use_07_metric):
    det_by_class = _split_by_label(det, num_classes)
    gt_by_class = _split_by_label(gt, num_classes)
    ap = np.full(num_classes, np.nan)
    num_gt = np.zeros(num_classes, np.int64)
    num_det = np.zeros(num_classes, np.int64)
    precisions, recalls = [np.zeros(0)], [np.zeros(0)]
    for c in range(1, num_classes):
        n, recall, precision = _class_curve(det_by_class[c], gt_by_class[c], iou_threshold)
        num_gt[c] = n
        num_det[c] = det_by_class[c]["scores"].shape[0]
        precisions.append(precision)
        recalls.append(recall)
        if n > 0:
            ap[c] = average_precision(recall, precision, use_07_metric)
    if np.all(np.isnan(ap)):
        warnings.warn("voc_map: no class has non-difficult ground truth; mAP is NaN", stacklevel=3)
        mean_ap = float("nan")
    else:
        mean_ap = float(np.nanmean(ap))
    return {"mAP": mean_ap, "ap": ap, "num_gt": num_gt, "num_detections": num_det,
            "precision": precisions, "recall": recalls,
            "iou_threshold": float(iou_threshold), "use_07_metric": bool(use_07_metric)}
