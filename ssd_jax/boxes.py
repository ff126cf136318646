"""Box conversions, IoU and SSD box coding.

Conventions (used everywhere in ssd_jax):
  * Boxes are corners ``(xmin, ymin, xmax, ymax)``, normalised to [0, 1], unless a
    name says otherwise (``*_center`` arrays are ``(cx, cy, w, h)``).
  * Default boxes (anchors) are ``(cx, cy, w, h)``.
  * Regression offsets are ordered ``(cx, cy, w, h)`` as in Caffe and torchvision:
      t_cx = (g_cx - d_cx) / (v0 * d_w),  t_cy = (g_cy - d_cy) / (v0 * d_h),
      t_w  = log(g_w / d_w) / v1,         t_h  = log(g_h / d_h) / v1,
    with variances ``(v0, v1) = (0.1, 0.2)``; torchvision's BoxCoder weights
    (10, 10, 5, 5) are the same thing.

All functions are pure, work on arrays with any leading dimensions unless a shape
says otherwise, and are jit/vmap friendly.
"""

from __future__ import annotations

import jax.numpy as jnp

# exp() of a decoded log-size is clamped here, as in torchvision (log(1000 / 16)).
BBOX_XFORM_CLIP = 4.135166556742356


def center_to_corners(boxes):
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(..., 4)`` ``(xmin, ymin, xmax, ymax)``."""
    cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def corners_to_center(boxes):
    """``(..., 4)`` ``(xmin, ymin, xmax, ymax)`` -> ``(..., 4)`` ``(cx, cy, w, h)``."""
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([0.5 * (x0 + x1), 0.5 * (y0 + y1), x1 - x0, y1 - y0], axis=-1)


def area(boxes):
    """Area of ``(..., 4)`` corner boxes; inverted boxes have area 0, never negative."""
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)
    return jnp.maximum(x1 - x0, 0.0) * jnp.maximum(y1 - y0, 0.0)


def iou(a, b):
    """Pairwise IoU (Jaccard overlap) of corner boxes.

    Args:
      a: ``[N, 4]`` corners.
      b: ``[M, 4]`` corners.

    Returns:
      ``[N, M]`` IoU in [0, 1]. A pair whose union is empty (both boxes of zero
      area) gives 0, never NaN. Inverted boxes count as zero area.
    """
    if a.ndim != 2 or a.shape[-1] != 4:
        raise ValueError(f"iou: `a` must have shape [N, 4], got {a.shape}")
    if b.ndim != 2 or b.shape[-1] != 4:
        raise ValueError(f"iou: `b` must have shape [M, 4], got {b.shape}")
    ax0, ay0, ax1, ay1 = (a[:, i:i + 1] for i in range(4))
    bx0, by0, bx1, by1 = (b[None, :, i] for i in range(4))
    iw = jnp.maximum(jnp.minimum(ax1, bx1) - jnp.maximum(ax0, bx0), 0.0)
    ih = jnp.maximum(jnp.minimum(ay1, by1) - jnp.maximum(ay0, by0), 0.0)
    inter = iw * ih
    union = area(a)[:, None] + area(b)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _check_pair(name, boxes, anchors_center):
    if boxes.shape[-1] != 4:
        raise ValueError(f"{name}: last dimension must be 4, got shape {boxes.shape}")
    if anchors_center.shape[-1] != 4:
        raise ValueError(f"{name}: `anchors_center` last dimension must be 4, got {anchors_center.shape}")
    if boxes.shape[-2] != anchors_center.shape[-2]:
        raise ValueError(
            f"{name}: boxes {boxes.shape} and anchors_center {anchors_center.shape} must have the same A")


def encode(gt_corners, anchors_center, variances=(0.1, 0.2)):
    """Regression targets for ground truths matched to default boxes.

    Args:
      gt_corners: ``[A, 4]`` corners, the ground truth assigned to each default box.
        Boxes must have positive width and height (callers substitute a dummy
        for background boxes).
      anchors_center: ``[A, 4]`` default boxes ``(cx, cy, w, h)``.
      variances: ``(centre variance, size variance)``.

    Returns:
      ``[A, 4]`` offsets ``(t_cx, t_cy, t_w, t_h)``.
    """
    _check_pair("encode", gt_corners, anchors_center)
    g = corners_to_center(gt_corners)
    d = anchors_center
    v_c, v_s = variances
    t_xy = (g[..., :2] - d[..., :2]) / (v_c * d[..., 2:])
    t_wh = jnp.log(g[..., 2:] / d[..., 2:]) / v_s
    return jnp.concatenate([t_xy, t_wh], axis=-1)


def decode(offsets, anchors_center, variances=(0.1, 0.2)):
    """Inverse of :func:`encode`: offsets -> corner boxes.

    Args:
      offsets: ``[A, 4]`` ``(t_cx, t_cy, t_w, t_h)``.
      anchors_center: ``[A, 4]`` default boxes ``(cx, cy, w, h)``.
      variances: ``(centre variance, size variance)``.

    Returns:
      ``[A, 4]`` corners. Log-size offsets are clamped at ``BBOX_XFORM_CLIP``
      (as torchvision does) so a wild prediction cannot overflow to inf. Not clipped
      to the image.
    """
    _check_pair("decode", offsets, anchors_center)
    d = anchors_center
    v_c, v_s = variances
    cxcy = d[..., :2] + offsets[..., :2] * v_c * d[..., 2:]
    wh = d[..., 2:] * jnp.exp(jnp.minimum(offsets[..., 2:] * v_s, BBOX_XFORM_CLIP))
    return center_to_corners(jnp.concatenate([cxcy, wh], axis=-1))
