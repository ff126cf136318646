"""Matching ground truths to default boxes (SSD paper section 2.2, "Matching strategy").

Two steps, as in the paper:
  1. each valid ground truth gets the default box it overlaps most, so no object
     goes unmatched;
  2. every other default box whose best IoU with any ground truth is
     ``>= iou_threshold`` is matched to that ground truth.
Everything else is background (label 0).

Step 1 comes in two flavours:
  * ``mode="argmax"`` (torchvision ``SSDMatcher``, ssd.pytorch): ground truth ``j``
    claims ``argmax_a IoU(j, a)``, the LOWEST default-box index among tied boxes, as
    ``torch.argmax``/``np.argmax`` give. If two ground truths claim one box, the higher
    ground-truth index wins: the last of the sequential writes in ssd.pytorch's loop and in
    torchvision's ``matches[best_box_per_gt] = arange(G)`` (PyTorch leaves duplicate indices
    unspecified; its CPU kernel writes in order).
  * ``mode="bipartite"`` (Caffe ``MatchBBox``): greedy one-to-one assignment: repeatedly
    take the largest IoU among the unassigned ground truths and unassigned boxes; of tied
    pairs the first in Caffe's scan order (lowest default box, then lowest ground truth).
In step 2 a default box goes to the FIRST ground truth of highest IoU (torchvision's
``argmax`` over ground truths): scanning them in index order, a later one replaces the kept
one only when its IoU is higher by more than a tie.

Ties: two IoUs are tied when they differ by at most ``TIE_RTOL`` (2^-20, about 8 float32
ulps) of the larger one. Exact-arithmetic ties are common (two default boxes of one shape
mirror-symmetric about a ground truth), but float32 rounding, which differs between
implementations and between compiled fusions, can put such IoUs an ulp or two apart, and a
strict arg-max would then follow the rounding rather than the index.

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
    matched_iou: ``float32 [A]`` IoU with the assigned ground truth (in step 2 the box's best
      IoU, tied with the assigned one's; for background boxes the best IoU with any valid
      ground truth, which is below the threshold).
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


# Two IoUs are tied when they differ by at most this fraction of the larger one (module docstring).
TIE_RTOL = 2.0 ** -20
_CHUNK = 256  # default boxes per chunk in the two-level first-maximum search


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


def _tied_with(best):
    """The lowest IoU that ties with ``best`` (see ``TIE_RTOL``); above ``best`` when ``best < 0``."""
    return best - jnp.abs(best) * TIE_RTOL


def _best_per_box_and_gt(gt, valid, anchors_corners):
    """One pass over the ground truths, in index order.

    Returns ``(best_iou [A], best_gt [A], gt_best_box [M], gt_best_iou [M])``:
      * per default box, its best IoU with any ground truth (-1 when none is valid) and the
        ground truth it goes to: the first one, unless a later one beats the kept one's IoU by
        more than ``TIE_RTOL`` (index 0 when no ground truth is valid);
      * per ground truth, its best IoU (-1 if invalid) and the FIRST default box tied with it.

    Each ground truth's IoU row is computed once and materialised (an optimisation barrier),
    so every comparison reads the same rounded values. Arg-max reductions do not vectorise on
    XLA:CPU, so none runs over ``[A]``: the running best per box is an elementwise update, and
    the first tied box is searched in two levels: the maximum of each chunk of ``_CHUNK``
    default boxes, the first chunk tied with the row maximum, the first tied box in it.
    """
    m, a = gt.shape[0], anchors_corners.shape[0]
    chunks = -(-a // _CHUNK)
    # Padding boxes have zero area: IoU 0, after every real box, so never the first tied one.
    cols = jnp.zeros((4, chunks * _CHUNK), jnp.float32).at[:, :a].set(anchors_corners.T)
    chunk_index = jnp.arange(chunks, dtype=jnp.int32)
    in_chunk_index = jnp.arange(_CHUNK, dtype=jnp.int32)

    def body(j, carry):
        best_iou, kept_iou, best_gt, gt_best_box, gt_best_iou = carry
        q = jax.lax.optimization_barrier(jnp.where(valid[j], _iou_one_to_many(gt[j], cols), -1.0))
        better = _tied_with(q) > kept_iou
        kept_iou = jnp.where(better, q, kept_iou)
        best_gt = jnp.where(better, j, best_gt)
        chunk_max = jnp.max(q.reshape(chunks, _CHUNK), axis=-1)
        row_max = jnp.max(chunk_max)
        tie = _tied_with(row_max)
        chunk = jnp.min(jnp.where(chunk_max >= tie, chunk_index, chunks - 1))
        in_chunk = jax.lax.dynamic_slice(q, (chunk * _CHUNK,), (_CHUNK,))
        first = chunk * _CHUNK + jnp.min(jnp.where(in_chunk >= tie, in_chunk_index, _CHUNK - 1))
        return (jnp.maximum(best_iou, q), kept_iou, best_gt, gt_best_box.at[j].set(first),
                gt_best_iou.at[j].set(row_max))

    size = chunks * _CHUNK
    init = (jnp.full((size,), -1.0, jnp.float32), jnp.full((size,), -1.0, jnp.float32),
            jnp.zeros((size,), jnp.int32), jnp.zeros((m,), jnp.int32), jnp.full((m,), -1.0, jnp.float32))
    best_iou, _, best_gt, gt_best_box, gt_best_iou = jax.lax.fori_loop(0, m, body, init, unroll=min(m, 4))
    return best_iou[:a], best_gt[:a], gt_best_box, gt_best_iou


def _force_argmax(gt_best_box, gt_best_iou, num_boxes):
    """Step 1, torchvision style. Returns ``[A]`` forced ground-truth index or -1."""
    m = gt_best_box.shape[0]
    claims = gt_best_iou > 0  # False for invalid ground truths (their IoU row is -1)
    # Highest ground-truth index wins a contested box: a scatter-max is order independent.
    return jnp.full((num_boxes,), -1, jnp.int32).at[gt_best_box].max(
        jnp.where(claims, jnp.arange(m, dtype=jnp.int32), -1))


def _force_bipartite(iou):
    """Step 1, Caffe style: greedy one-to-one pairs by decreasing IoU (only IoU > 0).

    ``iou [M, A]``, -1 in the rows of invalid ground truths. Returns ``(forced [A],
    forced_iou [A])``: the ground truth forced onto each default box (-1 if none) and that
    pair's IoU. ``M`` rounds; each takes the largest IoU among the untaken ground truths and
    boxes and, of the pairs tied with it (``TIE_RTOL``), the first in Caffe's scan order:
    the lowest default box, then the lowest ground truth.
    """
    m, a = iou.shape
    box_index = jnp.arange(a, dtype=jnp.int32)
    gt_index = jnp.arange(m, dtype=jnp.int32)

    def body(_, carry):
        gt_done, box_taken, forced, forced_iou = carry
        col_max = jnp.where(box_taken, -1.0, jnp.max(jnp.where(gt_done[:, None], -1.0, iou), axis=0))
        best = jnp.max(col_max)
        k = jnp.min(jnp.where(col_max >= _tied_with(best), box_index, a - 1))
        j = jnp.min(jnp.where(~gt_done & (iou[:, k] >= _tied_with(best)), gt_index, m - 1))
        take = best > 0
        forced = jnp.where(take, forced.at[k].set(j), forced)
        forced_iou = jnp.where(take, forced_iou.at[k].set(iou[j, k]), forced_iou)
        return (gt_done.at[j].set(gt_done[j] | take), box_taken.at[k].set(box_taken[k] | take),
                forced, forced_iou)

    init = (jnp.all(iou < 0, axis=1), jnp.zeros((a,), bool), jnp.full((a,), -1, jnp.int32),
            jnp.zeros((a,), jnp.float32))
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
        iou = jax.vmap(_iou_one_to_many, (0, None))(gt, anchors_corners.T)
        forced, forced_iou = _force_bipartite(jnp.where(valid[:, None], iou, -1.0))
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
    fn = lambda boxes, labels, mask: match(anchors_center, boxes, labels, mask, iou_threshold, mode, variances)
    return jax.vmap(fn)(gt_boxes, gt_labels, gt_mask)
