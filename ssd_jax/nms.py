"""Exact greedy non-maximum suppression with static, padded output (jit/vmap friendly).

Conventions: boxes are corners ``(xmin, ymin, xmax, ymax)`` (normalised to [0, 1] in ssd_jax,
though NMS itself does not care), IoU is :func:`ssd_jax.boxes.iou`.

Semantics (the textbook greedy algorithm; torchvision's ``nms`` gives the same boxes, its
order among equal scores being unspecified):
  sort boxes by score descending, ties broken by lower index first (a stable sort);
  walk the sorted list, keep a box unless a box already kept has IoU strictly greater than
  ``iou_threshold`` with it. Boxes whose score is ``-inf`` or NaN (or whose ``valid`` flag is
  False) are never selected and never suppress anything.

Formulation (the tiled, padded NMS of TPU detectors, made exact): boxes are sorted once and
processed in tiles of ``tile_size``. A tile is first suppressed by the boxes kept so far (held
compactly in the output buffer, compared chunk by chunk, so the work is about
``num_boxes * num_kept``), then the greedy decisions inside the tile are resolved by iterating
``keep_i = base_i and not any(keep_j and IoU_ji > t, j < i)`` to its fixed point. The system is
triangular, so its fixed point is unique and is exactly the greedy result; it is reached in at
most (longest suppression chain + 1) iterations. The loop stops as soon as ``max_output`` boxes
are kept or the valid boxes run out, so asking for few outputs is cheap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ssd_jax.boxes import iou

DEFAULT_TILE_SIZE = 32  # measured on CPU: tiles of 64+ make the per-tile loops several times slower
DEFAULT_CANDIDATE_POOL = 1024


def _round_up(x, m):
    return -(-x // m) * m


def greedy_nms_sorted(boxes, valid, groups, iou_threshold, max_output, tile_size=DEFAULT_TILE_SIZE):
    """Greedy NMS over boxes that are already in priority order (best first).

    Args:
      boxes: ``[N, 4]`` corners, sorted best first.
      valid: ``[N]`` bool; invalid boxes are never kept and suppress nothing.
      groups: ``[N]`` int or None. When given, a box only suppresses boxes of its own group
        (per-class NMS done in one pass, exactly, with no coordinate-offset trick).
      iou_threshold: float (may be traced); suppression when IoU > threshold.
      max_output: static int, size of the output.
      tile_size: static int.

    Returns:
      ``(positions [max_output] int32, num_kept int32)``: positions into the sorted input of
      the kept boxes in order, padded with -1.
    """
    num = boxes.shape[0]
    if groups is None:
        groups = jnp.zeros((num,), jnp.int32)
    tile = max(1, min(tile_size, _round_up(max(num, 1), 8)))
    num_padded = _round_up(max(num, 1), tile)
    pad = num_padded - num
    boxes = jnp.pad(boxes.astype(jnp.float32), ((0, pad), (0, 0)))
    valid = jnp.pad(valid, (0, pad))
    groups = jnp.pad(groups.astype(jnp.int32), (0, pad))
    valid_end = jnp.max(jnp.where(valid, jnp.arange(1, num_padded + 1), 0))  # valid boxes may have gaps
    num_tiles = num_padded // tile

    chunk = tile
    buffer_size = _round_up(max(max_output, 1), chunk)
    lower = jnp.tril(jnp.ones((tile, tile), bool), k=-1)  # [i, j]: j comes before i

    def suppressed_by_kept(tile_boxes, tile_groups, kept_boxes, kept_groups, num_kept):
        def cond(state):
            j, _ = state
            return j * chunk < num_kept

        def body(state):
            j, sup = state
            start = j * chunk
            cb = jax.lax.dynamic_slice_in_dim(kept_boxes, start, chunk)
            cg = jax.lax.dynamic_slice_in_dim(kept_groups, start, chunk)
            live = start + jnp.arange(chunk) < num_kept
            hit = (iou(tile_boxes, cb) > iou_threshold) & (tile_groups[:, None] == cg[None, :]) & live[None, :]
            return j + 1, sup | hit.any(axis=1)

        return jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.zeros((tile,), bool)))[1]

    def resolve_tile(base, tile_boxes, tile_groups):
        overlap = (iou(tile_boxes, tile_boxes) > iou_threshold) & (tile_groups[:, None] == tile_groups[None, :]) & lower

        def cond(state):
            return state[1]

        def body(state):
            keep, _ = state
            new = base & ~(overlap & keep[None, :]).any(axis=1)
            return new, (new != keep).any()

        return jax.lax.while_loop(cond, body, (base, jnp.bool_(True)))[0]

    def tile_cond(state):
        t, _, _, _, num_kept = state
        return (t < num_tiles) & (num_kept < max_output) & (t * tile < valid_end)

    def tile_body(state):
        t, positions, kept_boxes, kept_groups, num_kept = state
        start = t * tile
        tb = jax.lax.dynamic_slice_in_dim(boxes, start, tile)
        tg = jax.lax.dynamic_slice_in_dim(groups, start, tile)
        tv = jax.lax.dynamic_slice_in_dim(valid, start, tile)
        base = tv & ~suppressed_by_kept(tb, tg, kept_boxes, kept_groups, num_kept)
        keep = resolve_tile(base, tb, tg)
        slot = num_kept + jnp.cumsum(keep) - 1
        slot = jnp.where(keep & (slot < max_output), slot, buffer_size)  # out of range -> dropped
        positions = positions.at[slot].set(start + jnp.arange(tile, dtype=jnp.int32), mode="drop")
        kept_boxes = kept_boxes.at[slot].set(tb, mode="drop")
        kept_groups = kept_groups.at[slot].set(tg, mode="drop")
        num_kept = jnp.minimum(num_kept + keep.sum(dtype=jnp.int32), max_output)
        return t + 1, positions, kept_boxes, kept_groups, num_kept

    init = (jnp.int32(0), jnp.full((buffer_size,), -1, jnp.int32), jnp.zeros((buffer_size, 4), jnp.float32),
            jnp.full((buffer_size,), -1, jnp.int32), jnp.int32(0))
    _, positions, _, _, num_kept = jax.lax.while_loop(tile_cond, tile_body, init)
    return positions[:max_output], num_kept


@functools.partial(jax.jit, static_argnames=("max_output", "tile_size", "candidate_pool"))
def nms_padded(boxes, scores, iou_threshold, max_output, valid=None, tile_size=DEFAULT_TILE_SIZE,
               candidate_pool=DEFAULT_CANDIDATE_POOL):
    """Exact greedy NMS with a fixed-size output.

    Args:
      boxes: ``[N, 4]`` corners.
      scores: ``[N]`` float. Entries with score ``-inf`` (or NaN) are never selected.
      iou_threshold: float (may be traced); a box is suppressed by a kept box when their
        IoU is strictly greater than this.
      max_output: static int, the output size.
      valid: optional ``[N]`` bool; False entries are treated like score ``-inf``.
      tile_size: static int, boxes processed per tile (speed only, result is identical).
      candidate_pool: static int (speed only, result is identical). When ``max(candidate_pool,
        max_output) < N``, the best ``candidate_pool`` boxes are taken with ``top_k`` instead of
        sorting all N; if NMS cannot prove its answer from that pool (fewer than ``max_output``
        kept while more valid boxes exist), a ``lax.cond`` falls back to the full sort. 0 always
        sorts everything.

    Returns:
      ``(indices, num_valid)``: ``indices`` int32 ``[max_output]``, the indices into ``boxes``
      of the kept boxes in descending score (equal scores: lower index first), padded with -1;
      ``num_valid`` int32 scalar, how many entries are real (at most ``max_output``; the
      greedy walk stops once ``max_output`` boxes are kept, so this is the greedy result
      truncated to its best ``max_output``).
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms_padded: boxes must have shape [N, 4], got {boxes.shape}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms_padded: scores must have shape [{boxes.shape[0]}], got {scores.shape}")
    if max_output < 0:
        raise ValueError(f"nms_padded: max_output must be >= 0, got {max_output}")
    if boxes.shape[0] == 0:
        return jnp.full((max_output,), -1, jnp.int32), jnp.int32(0)
    scores = scores.astype(jnp.float32)
    is_valid = scores > -jnp.inf  # False for -inf and NaN
    if valid is not None:
        if valid.shape != scores.shape:
            raise ValueError(f"nms_padded: valid must have shape {scores.shape}, got {valid.shape}")
        is_valid = is_valid & valid.astype(bool)
    scores = jnp.where(is_valid, scores, -jnp.inf)
    num_boxes = boxes.shape[0]

    def run(order):
        positions, num_kept = greedy_nms_sorted(boxes[order], is_valid[order], None, iou_threshold, max_output,
                                                tile_size)
        return jnp.where(positions >= 0, order[jnp.maximum(positions, 0)], -1).astype(jnp.int32), num_kept

    def full():
        return run(jnp.argsort(-scores, stable=True).astype(jnp.int32))

    pool = max(candidate_pool, max_output)
    if candidate_pool <= 0 or pool >= num_boxes:
        return full()
    # Fast path: top_k (ties: lower index first) of a pool instead of sorting everything; exact
    # when max_output boxes are kept inside the pool or the pool holds every valid box.
    indices, num_kept = run(jax.lax.top_k(scores, pool)[1].astype(jnp.int32))
    complete = (num_kept >= max_output) | (is_valid.sum() <= pool)
    return jax.lax.cond(complete, lambda: (indices, num_kept), full)
