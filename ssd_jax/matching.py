"""Matching ground truths to default boxes (SSD paper section 2.2, "Matching strategy").

Two steps, as in the paper:
  1. each valid ground truth gets the default box it overlaps most, so no object
     goes unmatched;
  2. every other default box whose best IoU with any ground truth is
     ``>= iou_threshold`` is matched to that ground truth.
Everything else is background (label 0).

Step 1 comes in two flavours:
  * ``mode="argmax"`` (torchvision ``SSDMatcher``, ssd.pytorch): ground truth ``j``
    claims ``argmax_a IoU(j, a)`` (the first such box on ties; IoUs within float rounding
    of each other count as ties, as they do between implementations). If two ground truths
    claim one box, the one with the higher index wins, as with the sequential writes in
    those ports.
  * ``mode="bipartite"`` (Caffe ``MatchBBox``): greedy one-to-one assignment: repeatedly
    take the largest IoU among the unassigned ground truths and unassigned boxes.

Conventions: ground truths are corners ``(xmin, ymin, xmax, ymax)`` in [0, 1],
padded to a fixed ``M`` with a boolean mask; default boxes are ``(cx, cy, w, h)``.
Ground truths are clipped to [0, 1] first; a ground truth that is padding, has a
non-finite coordinate, or has no positive width and height after clipping is
treated as padding: it never matches and never produces NaN or inf. A ground truth
is only forced onto a box it actually overlaps (IoU > 0).

Functions work on one image; :func:`match_batch` is the ``vmap`` over a batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssd_jax import boxes as box_ops

MODES = ("argmax", "bipartite")


class MatchResult(NamedTuple):
    """Per default box: regression target, class label and IoU with its ground truth.

    loc_targets: ``float32 [A, 4]`` encoded offsets; zeros for background boxes.
    labels: ``int32 [A]``, 0 for background.
    matched_iou: ``float32 [A]`` IoU with the assigned ground truth (for background
      boxes, the best IoU with any valid ground truth, which is below the threshold).
    """

    loc_targets: jax.Array
    labels: jax.Array
    matched_iou: jax.Array


def _check_inputs(anchors_center, gt_boxes, gt_labels, gt_mask):
    def shape_error(name, arr, want):
        raise ValueError(f"match: `{name}` must have shape {want}, got {tuple(arr.shape)}")

    if anchors_center.ndim != 2 or anchors_center.shape[1] != 4:
        shape_error("anchors_center", anchors_center, "[A, 4]")
    if gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4:
        shape_error("gt_boxes", gt_boxes, "[M, 4]")
    m = gt_boxes.shape[0]
    if gt_labels.shape != (m,):
        shape_error("gt_labels", gt_labels, f"[{m}] (one label per gt box)")
    if gt_mask.shape != (m,):
        shape_error("gt_mask", gt_mask, f"[{m}] (one flag per gt box)")
    if not jnp.issubdtype(anchors_center.dtype, jnp.floating):
        raise TypeError(f"match: `anchors_center` must be floating point, got {anchors_center.dtype}")
    if not jnp.issubdtype(gt_boxes.dtype, jnp.floating):
        raise TypeError(f"match: `gt_boxes` must be floating point, got {gt_boxes.dtype}")
    if not jnp.issubdtype(gt_labels.dtype, jnp.integer):
        raise TypeError(f"match: `gt_labels` must be an integer array, got {gt_labels.dtype}")
    if gt_mask.dtype != jnp.bool_:
        raise TypeError(f"match: `gt_mask` must be boolean, got {gt_mask.dtype}")


def sanitize_ground_truth(gt_boxes, gt_mask):
    """Clip boxes to [0, 1] and drop degenerate ones.

    Returns ``(boxes [M, 4], valid [M])``: invalid rows are replaced by zeros, so no
    NaN or inf can flow from them.
    """
    finite = jnp.all(jnp.isfinite(gt_boxes), axis=-1)
    clipped = jnp.clip(jnp.where(finite[:, None], gt_boxes, 0.0), 0.0, 1.0)
    valid = gt_mask & finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return jnp.where(valid[:, None], clipped, 0.0), valid


_CHUNK = 256  # default boxes per chunk in the two-level arg-max (see _best_per_box_and_gt)


def _iou_one_to_many(g, cols):
    """IoU of one corner box ``g [4]`` with boxes given as columns ``cols [4, N]`` -> ``[N]``.

    The same arithmetic as :func:`ssd_jax.boxes.iou`, laid out so the ``N`` axis is
    contiguous (it vectorises).
    """
    x0, y0, x1, y1 = cols
    iw = jnp.maximum(jnp.minimum(g[2], x1) - jnp.maximum(g[0], x0), 0.0)
    ih = jnp.maximum(jnp.minimum(g[3], y1) - jnp.maximum(g[1], y0), 0.0)
    inter = iw * ih
    union = box_ops.area(g) + jnp.maximum(x1 - x0, 0.0) * jnp.maximum(y1 - y0, 0.0) - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _best_per_box_and_gt(gt, valid, anchors_corners):
    """One pass over the ground truths.

    Returns ``(best_iou [A], best_gt [A], gt_best_box [M], gt_best_iou [M])``: for each
    default box its best IoU and the first ground truth reaching it (-1 IoU and index 0
    when there is no valid ground truth), and for each ground truth a default box of
    highest IoU (the first one, up to float rounding) and that IoU (-1 if invalid).

    Arg-max reductions do not vectorise on XLA:CPU, so none runs over ``[A]``: a loop
    over the ``M`` ground truths keeps a running maximum per default box and, per
    ground truth, the maximum of each chunk of ``_CHUNK`` default boxes; the best
    default box is then searched only in the best chunk (its IoUs recomputed).
    """
    m, a = gt.shape[0], anchors_corners.shape[0]
    chunks = -(-a // _CHUNK)
    # Padding boxes have zero area: IoU 0, after every real box, so never the first maximum.
    cols = jnp.zeros((4, chunks * _CHUNK), jnp.float32).at[:, :a].set(anchors_corners.T)

    def body(j, carry):
        best_iou, best_gt, chunk_max = carry
        q = jnp.where(valid[j], _iou_one_to_many(gt[j], cols), -1.0)
        better = q > best_iou
        best_iou = jnp.where(better, q, best_iou)
        best_gt = jnp.where(better, j, best_gt)
        return best_iou, best_gt, chunk_max.at[j].set(q.reshape(chunks, _CHUNK).max(-1))

    init = (jnp.full((chunks * _CHUNK,), -1.0, jnp.float32), jnp.zeros((chunks * _CHUNK,), jnp.int32),
            jnp.zeros((m, chunks), jnp.float32))
    best_iou, best_gt, chunk_max = jax.lax.fori_loop(0, m, body, init, unroll=min(m, 4))

    best_chunk = jnp.argmax(chunk_max, axis=-1)  # [M]
    chunk_cols = jnp.moveaxis(cols.reshape(4, chunks, _CHUNK)[:, best_chunk], 1, 0)  # [M, 4, CHUNK]
    in_chunk = jax.vmap(_iou_one_to_many)(gt, chunk_cols)  # [M, CHUNK]
    gt_best_box = (best_chunk * _CHUNK + jnp.argmax(in_chunk, axis=-1)).astype(jnp.int32)
    gt_best_iou = jnp.max(chunk_max, axis=-1)
    return best_iou[:a], best_gt[:a], gt_best_box, gt_best_iou


def _force_argmax(gt_best_box, gt_best_iou, num_boxes):
    """Step 1, torchvision style. Returns ``[A]`` forced ground-truth index or -1."""
    m = gt_best_box.shape[0]
    claims = gt_best_iou > 0  # False for invalid ground truths (their IoU row is -1)
    # Highest ground-truth index wins a contested box: a scatter-max is order independent.
    return jnp.full((num_boxes,), -1, jnp.int32).at[gt_best_box].max(
        jnp.where(claims, jnp.arange(m, dtype=jnp.int32), -1))


def _force_bipartite(gt, valid, anchors_corners):
    """Step 1, Caffe style: greedy one-to-one pairs by decreasing IoU (only IoU > 0).

    Returns ``(forced [A], forced_iou [A])``: the ground truth forced onto each default
    box (-1 if none) and that pair's IoU. ``M`` rounds over the ``[M, A]`` IoU matrix;
    each takes the ground truth with the highest row maximum over the untaken boxes,
    then its first box reaching that maximum.
    """
    iou = jnp.where(valid[:, None], box_ops.iou(gt, anchors_corners), -1.0)
    m, a = iou.shape
    box_index = jnp.arange(a, dtype=jnp.int32)

    def body(_, carry):
        gt_done, box_taken, forced, forced_iou = carry
        row_max = jnp.where(gt_done, -1.0, jnp.max(jnp.where(box_taken[None, :], -1.0, iou), axis=1))
        j = jnp.argmax(row_max)
        best = row_max[j]
        k = jnp.min(jnp.where((iou[j] == best) & ~box_taken, box_index, a - 1))
        take = best > 0
        forced = jnp.where(take, forced.at[k].set(j.astype(jnp.int32)), forced)
        forced_iou = jnp.where(take, forced_iou.at[k].set(best), forced_iou)
        return (gt_done.at[j].set(gt_done[j] | take), box_taken.at[k].set(box_taken[k] | take),
                forced, forced_iou)

    init = (~valid, jnp.zeros((a,), bool), jnp.full((a,), -1, jnp.int32), jnp.zeros((a,), jnp.float32))
    return jax.lax.fori_loop(0, m, body, init)[2:]


def match(anchors_center, gt_boxes, gt_labels, gt_mask, iou_threshold=0.5, mode="argmax",
          variances=(0.1, 0.2)) -> MatchResult:
    """Assigns ground truths to default boxes and encodes regression targets.

    Args:
      anchors_center: ``[A, 4]`` default boxes ``(cx, cy, w, h)``.
      gt_boxes: ``[M, 4]`` ground-truth corners in [0, 1], padded.
      gt_labels: ``int [M]`` class of each ground truth, 1..C-1.
      gt_mask: ``bool [M]``, False for padding.
      iou_threshold: default boxes with best IoU ``>=`` this become positives.
      mode: ``"argmax"`` (torchvision) or ``"bipartite"`` (Caffe); see the module docstring.
      variances: box-coding variances.

    Returns:
      A :class:`MatchResult` ``(loc_targets [A, 4], labels [A], matched_iou [A])``.
    """
    if mode not in MODES:
        raise ValueError(f"match: `mode` must be one of {MODES}, got {mode!r}")
    anchors_center = jnp.asarray(anchors_center)
    gt_boxes, gt_labels, gt_mask = jnp.asarray(gt_boxes), jnp.asarray(gt_labels), jnp.asarray(gt_mask)
    _check_inputs(anchors_center, gt_boxes, gt_labels, gt_mask)
    anchors_center = anchors_center.astype(jnp.float32)
    a = anchors_center.shape[0]
    if gt_boxes.shape[0] == 0:
        return MatchResult(jnp.zeros((a, 4), jnp.float32), jnp.zeros((a,), jnp.int32),
                           jnp.zeros((a,), jnp.float32))

    gt, valid = sanitize_ground_truth(gt_boxes.astype(jnp.float32), gt_mask)
    anchors_corners = box_ops.center_to_corners(anchors_center)
    best_iou, best_gt, gt_best_box, gt_best_iou = _best_per_box_and_gt(gt, valid, anchors_corners)
    if mode == "argmax":
        forced = _force_argmax(gt_best_box, gt_best_iou, a)
        forced_iou = gt_best_iou[jnp.maximum(forced, 0)]
    else:
        forced, forced_iou = _force_bipartite(gt, valid, anchors_corners)
    is_forced = forced >= 0
    matched_gt = jnp.where(is_forced, forced, best_gt)
    # A forced pair's IoU is that ground truth's best IoU (argmax mode) or the greedy pair's.
    matched_iou = jnp.where(is_forced, forced_iou, best_iou)
    positive = is_forced | (best_iou >= iou_threshold)

    labels = jnp.where(positive, gt_labels.astype(jnp.int32)[matched_gt], 0)
    target_boxes = jnp.where(positive[:, None], gt[matched_gt], anchors_corners)
    loc_targets = box_ops.encode(target_boxes, anchors_center, variances)
    loc_targets = jnp.where(positive[:, None], loc_targets, 0.0)
    return MatchResult(loc_targets, labels, jnp.maximum(matched_iou, 0.0))


def match_batch(anchors_center, gt_boxes, gt_labels, gt_mask, iou_threshold=0.5, mode="argmax",
                variances=(0.1, 0.2)) -> MatchResult:
    """:func:`match` over a batch: ``gt_*`` have a leading ``[B]``; results are ``[B, A, ...]``."""
    fn = lambda b, l, m: match(anchors_center, b, l, m, iou_threshold, mode, variances)
    return jax.vmap(fn)(gt_boxes, gt_labels, gt_mask)
