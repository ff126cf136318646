"""Streaming evaluator: feed batches of model detections and eval inputs, read VOC (and COCO) metrics.

Conventions: boxes are normalised corners ``(xmin, ymin, xmax, ymax)``; labels 1..C-1 with 0 the
background. Padding is dropped on the way in: detection slots at index ``>= num_valid``, ground-truth
slots where ``mask`` is False, and whole images where ``valid`` is False (those that fill the last
batch). Images are numbered in the order they are added, which fixes the tie order of equal scores
(see :mod:`ssd_jax.evaluation.voc`); how the images are split into batches changes no number.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ssd_jax.evaluation.coco import coco_metrics
from ssd_jax.evaluation.voc import voc_map


def _field(detections, name):
    if isinstance(detections, Mapping):
        if name not in detections:
            raise ValueError(f"Evaluator.add_batch: detections has no key '{name}'")
        return np.asarray(detections[name])
    if not hasattr(detections, name):
        raise ValueError(f"Evaluator.add_batch: detections has no attribute '{name}'")
    return np.asarray(getattr(detections, name))


class Evaluator:
    """Accumulates per-image detections and ground truth; computes metrics on :meth:`result`.

    Args:
      num_classes: ``C`` including background.
      class_names: optional names of the ``C`` classes (index 0 the background), kept for reports.
      iou_threshold: VOC match threshold (a match needs IoU strictly greater).
      use_07_metric: VOC2007 11-point AP if True, else area under the precision envelope.
      with_coco: also compute the 12 COCO numbers (needs ``"orig_size"`` in every batch).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 iou_threshold: float = 0.5, use_07_metric: bool = True, with_coco: bool = True):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"Evaluator: {len(class_names)} class_names for num_classes={num_classes} "
                             "(the list must include the background at index 0)")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        self.iou_threshold = float(iou_threshold)
        self.use_07_metric = bool(use_07_metric)
        self.with_coco = bool(with_coco)
        self.reset()

    def reset(self) -> None:
        """Forget everything added so far."""
        self._detections: list[dict] = []
        self._ground_truths: list[dict] = []
        self._image_sizes: list[tuple[int, int]] = []
        self._image_ids: list[int] = []
        self._seen_ids: set[int] = set()
        self._warned_duplicate = False

    @property
    def num_images(self) -> int:
        return len(self._ground_truths)

    def add_batch(self, detections: Any, batch: Mapping[str, Any]) -> None:
        """Add one batch.

        Args:
          detections: a ``Detections`` pytree (or any object with these attributes, or a dict with
            these keys; NumPy or JAX arrays): ``boxes [B, K, 4]``, ``scores [B, K]``,
            ``classes [B, K]`` int, ``num_valid [B]`` int.
          batch: eval input batch, dict of arrays: ``"boxes" [B, M, 4]``, ``"labels" [B, M]``,
            ``"mask" [B, M]`` bool (optional, default all True), ``"difficult" [B, M]`` bool
            (optional), ``"image_id" [B]`` (optional), ``"orig_size" [B, 2]`` (height, width;
            required when ``with_coco``), ``"valid" [B]`` bool (optional, default all True).
            ``M`` is any width, and may change from batch to batch; every box whose ``mask`` is True
            is scored, so the caller must not truncate ground truth (``data.eval_iterator`` pads
            to the eval split's largest box count).
        """
        boxes = _field(detections, "boxes")
        scores = _field(detections, "scores")
        classes = _field(detections, "classes")
        num_valid = _field(detections, "num_valid").reshape(-1)
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"Evaluator.add_batch: detections.boxes must be [B, K, 4], got {boxes.shape}")
        b, k = boxes.shape[:2]
        if scores.shape != (b, k) or classes.shape != (b, k) or num_valid.shape != (b,):
            raise ValueError(f"Evaluator.add_batch: detections shapes disagree: boxes {boxes.shape}, "
                             f"scores {scores.shape}, classes {classes.shape}, num_valid {num_valid.shape}")
        for key in ("boxes", "labels"):
            if key not in batch:
                raise ValueError(f"Evaluator.add_batch: batch has no '{key}'")
        gt_boxes = np.asarray(batch["boxes"])
        gt_labels = np.asarray(batch["labels"])
        if gt_boxes.ndim != 3 or gt_boxes.shape[0] != b or gt_boxes.shape[-1] != 4:
            raise ValueError(f"Evaluator.add_batch: batch['boxes'] must be [B={b}, M, 4], got {gt_boxes.shape}")
        m = gt_boxes.shape[1]
        gt_mask = np.asarray(batch.get("mask", np.ones((b, m), bool)), bool)
        difficult = np.asarray(batch.get("difficult", np.zeros((b, m), bool)), bool)
        valid = np.asarray(batch.get("valid", np.ones(b, bool)), bool).reshape(-1)
        for name, arr, shape in (("labels", gt_labels, (b, m)), ("mask", gt_mask, (b, m)),
                                 ("difficult", difficult, (b, m)), ("valid", valid, (b,))):
            if arr.shape != shape:
                raise ValueError(f"Evaluator.add_batch: batch['{name}'] must have shape {shape}, got {arr.shape}")
        if self.with_coco:
            if "orig_size" not in batch:
                raise ValueError("Evaluator.add_batch: with_coco=True needs batch['orig_size'] [B, 2] "
                                 "(height, width)")
            sizes = np.asarray(batch["orig_size"]).reshape(b, 2)
        image_ids = np.asarray(batch["image_id"]).reshape(-1) if "image_id" in batch else None
        if np.any((num_valid < 0) | (num_valid > k)):
            raise ValueError(f"Evaluator.add_batch: num_valid must be in [0, {k}], got {num_valid}")

        for i in np.flatnonzero(valid):
            n = int(num_valid[i])
            self._detections.append({"boxes": boxes[i, :n].astype(np.float64),
                                     "scores": scores[i, :n].astype(np.float64),
                                     "classes": classes[i, :n].astype(np.int64)})
            keep = gt_mask[i]
            self._ground_truths.append({"boxes": gt_boxes[i][keep].astype(np.float64),
                                        "labels": gt_labels[i][keep].astype(np.int64),
                                        "difficult": difficult[i][keep]})
            if self.with_coco:
                self._image_sizes.append((int(sizes[i, 0]), int(sizes[i, 1])))
            if image_ids is not None:
                image_id = int(image_ids[i])
                if image_id in self._seen_ids and not self._warned_duplicate:
                    warnings.warn(f"Evaluator: image_id {image_id} added twice; is the eval dataset "
                                  "repeated? Every copy is counted.", stacklevel=2)
                    self._warned_duplicate = True
                self._seen_ids.add(image_id)
                self._image_ids.append(image_id)

    def result(self) -> dict:
        """Metrics over everything added since the last :meth:`reset`.

        Returns:
          the :func:`~ssd_jax.evaluation.voc_map` dict (``mAP``, ``ap``, ``num_gt``, curves...),
          plus the 12 COCO keys when ``with_coco``, plus ``num_images`` and ``class_names``.
        """
        if not self._ground_truths:
            raise ValueError("Evaluator.result: no images were added")
        out = voc_map(self._detections, self._ground_truths, self.num_classes,
                      iou_threshold=self.iou_threshold, use_07_metric=self.use_07_metric)
        if self.with_coco:
            out.update(coco_metrics(self._detections, self._ground_truths, self._image_sizes))
        out["num_images"] = self.num_images
        out["class_names"] = self.class_names
        return out
