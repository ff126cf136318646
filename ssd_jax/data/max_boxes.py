"""``max_boxes``, the box dimension training batches are padded to: explicit, or derived from the data.

``data.max_boxes = 0`` (the default) derives it from the training split, once per config, with one
log line saying what was chosen and what it drops:
  * VOC folder / COCO JSON: from the per-image box counts (after the start-up cleaning): the
    split's maximum, unless that is an outlier (more than ``OUTLIER_FACTOR`` times the 99.9th
    percentile and more than ``OUTLIER_FLOOR`` boxes), then the larger of the 99.9th percentile
    and ``OUTLIER_FLOOR``;
  * shapes: ``shapes.max_objects`` (the generator never draws more);
  * TFDS: ``TFDS_MAX_BOXES`` (reading a TFDS training split, e.g. 118k COCO images, only to count
    boxes is too slow; the shipped TFDS configs set max_boxes explicitly).
An explicit ``max_boxes > 0`` is honoured; for file sources the start-up line says how many boxes
it drops, if any. Evaluation never uses ``max_boxes`` (see ``pipeline.eval_box_count``).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ssd_jax.data.registry import get_source
from ssd_jax.data.sources import FileSource, ShapesSource

log = logging.getLogger("ssd_jax.data")
OUTLIER_FACTOR = 2
OUTLIER_FLOOR = 100
TFDS_MAX_BOXES = 100
_logged: set[str] = set()


def choose_max_boxes(box_counts: np.ndarray) -> int:
    """Derived ``max_boxes`` from per-image box counts (int [N], N >= 1): see the module docstring. >= 1."""
    counts = np.asarray(box_counts, np.int64)
    largest = int(counts.max())
    percentile = math.ceil(float(np.percentile(counts, 99.9)))
    if largest > OUTLIER_FACTOR * max(percentile, 1) and largest > OUTLIER_FLOOR:
        return max(percentile, OUTLIER_FLOOR)
    return max(largest, 1)


def dropped_boxes(box_counts: np.ndarray, max_boxes: int) -> tuple[int, int]:
    """(boxes beyond ``max_boxes``, images that have some) for per-image box counts int [N]."""
    over = np.maximum(np.asarray(box_counts, np.int64) - int(max_boxes), 0)
    return int(over.sum()), int(np.count_nonzero(over))


def _resolve(cfg) -> tuple[int, str | None]:
    """(max_boxes, the line to log or None)."""
    explicit = int(cfg.max_boxes)
    if explicit < 0:
        raise ValueError(f"data.max_boxes must be > 0, or 0 to derive it from the training split; got {explicit}")
    source = get_source(cfg)
    where = f"{cfg.source} split {cfg.train_split!r}"
    if isinstance(source, FileSource):
        counts = source.box_counts(cfg.train_split)
        chosen = explicit or choose_max_boxes(counts)
        boxes, images = dropped_boxes(counts, chosen)
        drops = (f"drops {boxes} boxes in {images} of {len(counts)} images in training" if boxes
                 else "drops no box")
        if explicit:
            line = (f"{where}: max_boxes={chosen} (data.max_boxes) {drops} (largest image: {int(counts.max())} "
                    "boxes)") if boxes else None
            return chosen, line
        percentile = math.ceil(float(np.percentile(counts, 99.9)))
        return chosen, (f"{where}: max_boxes={chosen} derived from the split (largest image {int(counts.max())} "
                        f"boxes, 99.9th percentile {percentile}); {drops}; set data.max_boxes to override")
    if explicit:
        return explicit, None
    if isinstance(source, ShapesSource):
        chosen = source.max_box_count(cfg.train_split)
        return chosen, f"{where}: max_boxes={chosen} derived from shapes.max_objects; drops no box"
    return TFDS_MAX_BOXES, (f"{where}: max_boxes={TFDS_MAX_BOXES}, the default for TFDS (its training split is not "
                            "scanned); boxes beyond it are dropped and counted in the training logs; "
                            "set data.max_boxes to override")


def train_max_boxes(cfg) -> int:
    """The ``max_boxes`` training pads to (>= 1) for the data config ``cfg``, logged once per config."""
    chosen, line = _resolve(cfg)
    key = cfg.to_json(sort_keys=True)
    if line and key not in _logged:
        _logged.add(key)
        log.warning("%s", line)
    return chosen
