"""SSD inference post-processing: network outputs -> a fixed number of detections per image.

Conventions: boxes are corners ``(xmin, ymin, xmax, ymax)`` normalised to [0, 1]; default boxes
are ``(cx, cy, w, h)``; offsets ``(cx, cy, w, h)`` with variances (0.1, 0.2) (see
:mod:`ssd_jax.boxes`); class 0 is background, object classes 1..C-1.

Pipeline per image (the paper / Caffe / torchvision ``postprocess_detections``):
  softmax over classes; decode offsets against the default boxes; clip to [0, 1]; for each
  object class keep scores strictly greater than ``score_threshold``, then that class's best
  ``pre_nms_top_k`` (ties: lower anchor index); greedy NMS per class (IoU strictly greater
  than ``iou_threshold`` suppresses); finally the best ``max_detections`` over all classes,
  in descending score (ties: lower class, then lower anchor index).

Implementation: one jit-compiled graph with static shapes, vmapped over the batch. The
per-class NMS and the final cross-class top-k are done in a single exact pass: all classes'
candidates are sorted once by (score desc, class asc, anchor asc) and fed to the tiled greedy
NMS of :mod:`ssd_jax.nms` with the class as the suppression group (a box only suppresses boxes
of its own class). Because classes do not interact, the kept set equals the union of the
per-class NMS results, and since the walk is in global score order, stopping after
``max_detections`` kept boxes yields exactly the best ``max_detections`` of that union. This is
torchvision's ``batched_nms`` without its coordinate-offset trick (which perturbs IoUs by
rounding), and it stops early, so it is much cheaper than per-class NMS of every candidate.

Fast path (exact): per-class top-k over all 8732 anchors is the expensive step on CPU, yet the
greedy walk usually fills ``max_detections`` after a few hundred candidates. So ``detect``
first takes one top-k of size ``candidate_pool`` over all (class, anchor) scores in class-major
order, which yields the global order directly; a candidate's rank inside its class equals its
rank among the pool's candidates of that class (every better one of that class is in the pool
too), which enforces ``pre_nms_top_k`` exactly. The pool's answer is provably exact when NMS
keeps ``max_detections`` boxes within it or the pool holds every above-threshold score; if that
fails for any image of the batch, a batch-level ``lax.cond`` runs the straightforward path
(per-class top-k, global sort, grouped NMS), so results never depend on the pool size.

Differences from torchvision: boxes are normalised, so clipping is to [0, 1] rather than to the
image size; outputs are padded to ``max_detections`` (score 0, class 0, box 0) instead of
being variable-length.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from ssd_jax.boxes import decode
from ssd_jax.nms import DEFAULT_TILE_SIZE, greedy_nms_sorted

DEFAULT_CANDIDATE_POOL = 1024


@flax.struct.dataclass
class Detections:
    """Fixed-size detections of a batch.

    Attributes:
      boxes: ``[B, K, 4]`` float32 corners in [0, 1].
      scores: ``[B, K]`` float32, descending within each image.
      classes: ``[B, K]`` int32, 1..C-1 for real detections, 0 in padded slots.
      num_valid: ``[B]`` int32; slots ``0..num_valid-1`` are real, the rest are padding
        (score 0, class 0, box 0).
    """

    boxes: jax.Array
    scores: jax.Array
    classes: jax.Array
    num_valid: jax.Array

    @property
    def valid(self):
        """``[B, K]`` bool mask of the real (non-padded) slots."""
        k = self.scores.shape[-1]
        return jnp.arange(k)[None, :] < self.num_valid[..., None]


def _scores_and_boxes(loc_pred, cls_logits, anchors, score_threshold):
    """Class-major thresholded scores ``[C-1, A]`` (``-inf`` where not above threshold) and
    clipped decoded boxes ``[A, 4]``."""
    probs = jax.nn.softmax(cls_logits.astype(jnp.float32), axis=-1)
    boxes = jnp.clip(decode(loc_pred.astype(jnp.float32), anchors.astype(jnp.float32)), 0.0, 1.0)
    class_scores = probs[:, 1:].T
    return jnp.where(class_scores > score_threshold, class_scores, -jnp.inf), boxes


def _select(cand_scores, cand_boxes, cand_classes, valid, iou_threshold, max_detections, tile_size):
    """NMS over candidates already in (score desc, class asc, anchor asc) order -> padded outputs."""
    positions, num_kept = greedy_nms_sorted(cand_boxes, valid, cand_classes, iou_threshold, max_detections,
                                            tile_size)
    real = positions >= 0
    pos = jnp.maximum(positions, 0)
    out_boxes = jnp.where(real[:, None], cand_boxes[pos], 0.0)
    out_scores = jnp.where(real, cand_scores[pos], 0.0)
    out_classes = jnp.where(real, cand_classes[pos], 0).astype(jnp.int32)
    return out_boxes, out_scores, out_classes, num_kept


def _detect_one_full(loc_pred, cls_logits, anchors, score_threshold, iou_threshold, pre_nms_top_k,
                     max_detections, tile_size):
    """Reference path: per-class top-k of every class, one global stable sort, grouped NMS."""
    masked, boxes = _scores_and_boxes(loc_pred, cls_logits, anchors, score_threshold)
    num_classes, num_anchors = masked.shape[0] + 1, masked.shape[1]
    top_scores, top_idx = jax.lax.top_k(masked, min(pre_nms_top_k, num_anchors))  # ties: lower index first
    classes = jnp.broadcast_to(jnp.arange(1, num_classes, dtype=jnp.int32)[:, None], top_idx.shape)
    flat_scores, flat_idx, flat_classes = top_scores.reshape(-1), top_idx.reshape(-1), classes.reshape(-1)
    # Class-major flattening + stable sort = (score desc, class asc, anchor asc).
    order = jnp.argsort(-flat_scores, stable=True)
    scores = flat_scores[order]
    return _select(scores, boxes[flat_idx[order]], flat_classes[order], scores > -jnp.inf, iou_threshold,
                   max_detections, tile_size)


def _detect_one_pooled(loc_pred, cls_logits, anchors, score_threshold, iou_threshold, pre_nms_top_k,
                       max_detections, tile_size, pool):
    """Fast path: one top-k over all (class, anchor) scores, then grouped NMS over that pool.

    Returns the padded outputs and ``complete``: whether the result is provably the exact one,
    i.e. NMS kept ``max_detections`` boxes before running out of pool, or the pool holds every
    candidate above the threshold.
    """
    masked, boxes = _scores_and_boxes(loc_pred, cls_logits, anchors, score_threshold)
    num_classes, num_anchors = masked.shape[0] + 1, masked.shape[1]
    # Flat class-major index: top_k order is (score desc, class asc, anchor asc).
    scores, flat_idx = jax.lax.top_k(masked.reshape(-1), pool)
    classes = (flat_idx // num_anchors + 1).astype(jnp.int32)
    anchor_idx = flat_idx % num_anchors
    valid = scores > -jnp.inf
    # Every better candidate of the same class is also in the pool, so the rank within the pool
    # is the rank within the class: enforce the per-class pre-NMS top-k with it.
    one_hot = (classes[:, None] == jnp.arange(1, num_classes)[None, :]) & valid[:, None]
    rank_in_class = jnp.take_along_axis(jnp.cumsum(one_hot, axis=0, dtype=jnp.int32), classes[:, None] - 1,
                                        axis=1)[:, 0] - 1
    valid = valid & (rank_in_class < pre_nms_top_k)
    out = _select(scores, boxes[anchor_idx], classes, valid, iou_threshold, max_detections, tile_size)
    complete = (out[3] >= max_detections) | ((masked > -jnp.inf).sum() <= pool)
    return out, complete


@functools.partial(jax.jit, static_argnames=("pre_nms_top_k", "max_detections", "tile_size", "candidate_pool"))
def detect(loc_pred, cls_logits, anchors, score_threshold=0.01, iou_threshold=0.45, pre_nms_top_k=400,
           max_detections=200, tile_size=DEFAULT_TILE_SIZE, candidate_pool=DEFAULT_CANDIDATE_POOL):
    """SSD post-processing of a batch (see the module docstring for the exact semantics).

    Args:
      loc_pred: ``[B, A, 4]`` predicted offsets ``(cx, cy, w, h)``.
      cls_logits: ``[B, A, C]`` class logits, index 0 = background.
      anchors: ``[A, 4]`` default boxes ``(cx, cy, w, h)``.
      score_threshold: float, may be traced; per-class scores must be strictly greater.
      iou_threshold: float, may be traced; NMS suppresses IoU strictly greater.
      pre_nms_top_k: static int, candidates per class entering NMS (clamped to A).
      max_detections: static int ``K``, output slots per image (may exceed the candidates;
        the rest is padding).
      tile_size: static int, NMS tile size (speed only, the result is identical).
      candidate_pool: static int, size of the fast path's global candidate pool (speed only,
        the result is identical); 0 disables the fast path.

    Returns:
      :class:`Detections` with ``boxes [B, K, 4]``, ``scores [B, K]``, ``classes [B, K]``,
      ``num_valid [B]``.
    """
    if cls_logits.ndim != 3 or loc_pred.ndim != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"detect: expected loc_pred [B, A, 4] and cls_logits [B, A, C], got {loc_pred.shape} "
                         f"and {cls_logits.shape}")
    if loc_pred.shape[:2] != cls_logits.shape[:2]:
        raise ValueError(f"detect: loc_pred {loc_pred.shape} and cls_logits {cls_logits.shape} disagree on B, A")
    if anchors.shape != (loc_pred.shape[1], 4):
        raise ValueError(f"detect: anchors must have shape ({loc_pred.shape[1]}, 4), got {anchors.shape}")
    if cls_logits.shape[-1] < 2:
        raise ValueError(f"detect: need at least 2 classes (background + 1), got C = {cls_logits.shape[-1]}")
    if pre_nms_top_k < 1 or max_detections < 1:
        raise ValueError(f"detect: pre_nms_top_k and max_detections must be >= 1, got {pre_nms_top_k}, "
                         f"{max_detections}")
    num_anchors, num_classes = cls_logits.shape[1:]
    kwargs = dict(anchors=anchors, score_threshold=score_threshold, iou_threshold=iou_threshold,
                  pre_nms_top_k=pre_nms_top_k, max_detections=max_detections, tile_size=tile_size)
    full = jax.vmap(lambda loc, logits: _detect_one_full(loc, logits, **kwargs))
    pool = min(max(candidate_pool, max_detections), (num_classes - 1) * num_anchors)
    if candidate_pool <= 0:
        boxes, scores, classes, num_valid = full(loc_pred, cls_logits)
    else:
        pooled, complete = jax.vmap(lambda loc, logits: _detect_one_pooled(loc, logits, pool=pool, **kwargs))(
            loc_pred, cls_logits)
        if pool == (num_classes - 1) * num_anchors:  # the pool holds every score: always exact
            boxes, scores, classes, num_valid = pooled
        else:
            boxes, scores, classes, num_valid = jax.lax.cond(
                complete.all(), lambda: pooled, lambda: full(loc_pred, cls_logits))
    return Detections(boxes=boxes, scores=scores, classes=classes, num_valid=num_valid)
