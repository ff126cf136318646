"""SSD data augmentation and resizing in TensorFlow ops (stateless random, for determinism).

Conventions: images are RGB, uint8 or float 0..255, [h, w, 3]; boxes are corners
``(xmin, ymin, xmax, ymax)`` in [0, 1] of the image they belong to. Every random op takes a
``seed`` of shape [2] (int64); a transform is a pure function of its inputs and seed.

The training chain is the SSD one: photometric distortion, zoom-out expand (p 0.5, ratio
1..max_ratio, canvas filled with the mean), the SSD crop sampler, resize, horizontal flip.
Expand, crop and resize are fused: the crop window is mapped back to the original image and
one bilinear ``crop_and_resize`` (half-pixel centres, pixels outside the image take the fill
colour; a flip mirrors the sampling grid) produces the output, so no large canvas is ever
allocated. The photometric ops are
pointwise, so they are applied after the resize to the image pixels only (the fill stays the
mean), which equals the original order up to bilinear interpolation; they are fused with the
normalisation into one affine map and clip. Saturation and hue are
done as one 3x3 colour matrix in YIQ space instead of an HSV round trip (about 10x faster).
"""

from __future__ import annotations

import numpy as np

from ssd_jax.data.tf_setup import tf

MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
CROP_MIN_SCALE, CROP_MAX_SCALE = 0.3, 1.0
CROP_MIN_ASPECT, CROP_MAX_ASPECT = 0.5, 2.0
CROP_MAX_TRIALS = 50


def _uniform(seed, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, low, high, dtype=tf.float32)


def _coin(seed, p=0.5):
    return _uniform(seed) < p


def box_iou(a, b):
    """IoU of corner boxes a [T,4] and b [N,4] -> [T,N] (0 where the union is empty)."""
    lt = tf.maximum(a[:, None, :2], b[None, :, :2])
    rb = tf.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = tf.reduce_prod(tf.maximum(rb - lt, 0.0), axis=-1)
    area_a = tf.reduce_prod(tf.maximum(a[:, 2:] - a[:, :2], 0.0), axis=-1)
    area_b = tf.reduce_prod(tf.maximum(b[:, 2:] - b[:, :2], 0.0), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def centres_inside(boxes, patch):
    """bool [N]: centre of each box [N,4] strictly inside the patch [4] (as in SSD)."""
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    return tf.reduce_all((centre > patch[:2]) & (centre < patch[2:]), axis=-1)


def boxes_in_patch(boxes, patch):
    """Boxes [N,4] re-expressed in ``patch`` [4] coordinates and clipped to [0,1], and
    keep [N]: centre strictly inside the patch and positive size after clipping."""
    scale = tf.tile(patch[2:] - patch[:2], [2])
    new_boxes = tf.clip_by_value((boxes - tf.tile(patch[:2], [2])) / scale, 0.0, 1.0)
    keep = centres_inside(boxes, patch) & (new_boxes[:, 2] > new_boxes[:, 0]) & (new_boxes[:, 3] > new_boxes[:, 1])
    return new_boxes, keep


def sample_expand(seed, max_ratio: float):
    """Zoom-out: (ratio, offset [2] (x, y)) placing the image on a canvas ``ratio`` times larger.

    With p 0.5 the ratio is 1 (no expansion); otherwise uniform in [1, max_ratio]. The offset
    of the image's top-left corner is in canvas units, uniform in [0, 1 - 1/ratio].
    """
    s = tf.random.experimental.stateless_split(seed, 3)
    ratio = tf.where(_coin(s[0]), _uniform(s[1], 1.0, max_ratio), 1.0)
    offset = _uniform(s[2], shape=[2]) * (1.0 - 1.0 / ratio)
    return ratio, offset


def sample_ssd_crop(boxes, aspect_hw, seed, max_trials: int = CROP_MAX_TRIALS):
    """The SSD crop sampler -> patch [4] corners in the (canvas) image's [0,1] coordinates.

    A mode is drawn uniformly from: whole image, min IoU 0.1/0.3/0.5/0.7/0.9, any patch.
    ``max_trials`` candidates are drawn at once (width and height 0.3..1 of the image, pixel
    aspect h/w in 0.5..2, ``aspect_hw`` = image height / width); the first one with IoU >= the
    mode's minimum with some box and at least one box centre inside is used. Whole image if
    none qualifies (as in Caffe SSD) or if the mode is "whole image".
    """
    s = tf.random.experimental.stateless_split(seed, 4)
    mode = tf.random.stateless_uniform([], s[0], 0, len(MIN_IOUS) + 2, dtype=tf.int32)
    min_iou = tf.gather(tf.constant((-1.0,) + MIN_IOUS + (-1.0,)), mode)
    size = _uniform(s[1], CROP_MIN_SCALE, CROP_MAX_SCALE, shape=[max_trials, 2])  # (w, h)
    corner = _uniform(s[2], shape=[max_trials, 2]) * (1.0 - size)
    patches = tf.concat([corner, corner + size], axis=1)
    pixel_aspect = size[:, 1] * aspect_hw / size[:, 0]
    aspect_ok = (pixel_aspect >= CROP_MIN_ASPECT) & (pixel_aspect <= CROP_MAX_ASPECT)
    iou = box_iou(patches, boxes)
    best_iou = tf.reduce_max(tf.concat([iou, -tf.ones([max_trials, 1])], axis=1), axis=1)
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    inside = tf.reduce_all((centre[None] > patches[:, None, :2]) & (centre[None] < patches[:, None, 2:]), -1)
    valid = aspect_ok & (best_iou >= min_iou) & tf.reduce_any(inside, axis=1) & (mode > 0)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    return tf.where(tf.reduce_any(valid), patches[first], tf.constant([0.0, 0.0, 1.0, 1.0]))


def sample_positions(start, stop, in_size, out_size: int):
    """Half-pixel-centre sample positions (input pixel index units) of ``out_size`` outputs (int or
    int tensor) covering [start, stop] (edges, image-normalised) of an input of ``in_size`` pixels."""
    i = tf.cast(tf.range(out_size), tf.float32) + 0.5
    return (start + (stop - start) * i / tf.cast(out_size, tf.float32)) * in_size - 0.5


def _window_grid(image, window, out_size, flip, rows=None, cols=None):
    """crop_and_resize box [4] for output rows r0..r0+n-1 / cols (default: all) of the window
    resample, and inside_rows [H] / inside_cols [W] of the full output."""
    out_h, out_w = out_size
    in_h = tf.cast(tf.shape(image)[0], tf.float32)
    in_w = tf.cast(tf.shape(image)[1], tf.float32)
    ys = sample_positions(window[1], window[3], in_h, out_h)
    xs = sample_positions(window[0], window[2], in_w, out_w)
    xs = tf.where(flip, tf.reverse(xs, [0]), xs)
    inside_rows = (ys >= 0.0) & (ys <= in_h - 1.0)
    inside_cols = (xs >= 0.0) & (xs <= in_w - 1.0)
    r0, nr = rows if rows is not None else (0, out_h)
    c0, nc = cols if cols is not None else (0, out_w)
    den_h, den_w = tf.maximum(in_h - 1.0, 1.0), tf.maximum(in_w - 1.0, 1.0)
    box = tf.stack([ys[r0] / den_h, xs[c0] / den_w, ys[r0 + nr - 1] / den_h, xs[c0 + nc - 1] / den_w])
    return box, inside_rows, inside_cols


def resize_window(image, window, out_size, flip=False):
    """Bilinear resample of ``window`` [4] (xmin, ymin, xmax, ymax in image-normalised units,
    may extend past [0,1]) of ``image`` uint8/float [h,w,3] -> (float32 [H,W,3] 0..255,
    inside_rows bool [H], inside_cols bool [W]).

    Output pixel centres map to input pixel centres with the half-pixel convention (like
    ``tf.image.resize``, no antialiasing). Output pixels whose sample lies outside the image
    are the ones with ``inside_rows[i] & inside_cols[j]`` False; their value is undefined
    until ``fill_outside``. ``flip`` (bool tensor) mirrors the output horizontally for free.
    """
    box, inside_rows, inside_cols = _window_grid(image, window, out_size, flip)
    resized = tf.image.crop_and_resize(image[None], box[None], [0], list(out_size))[0]
    return resized, inside_rows, inside_cols


def fill_outside(images, inside_rows, inside_cols, fill):
    """Batched: images [..., H, W, 3]; pixels outside (rows [..., H] x cols [..., W]) := fill [3]."""
    inside = inside_rows[..., :, None, None] & inside_cols[..., None, :, None]
    return tf.where(inside, images, tf.cast(fill, tf.float32))


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.595716, -0.274453, -0.321263],
                        [0.211456, -0.522591, 0.311135]], np.float64)


def colour_matrix(saturation, hue_degrees):
    """[3,3] matrix M with rgb_out = M @ rgb: saturation scale and hue rotation in YIQ space.

    A linear (one matmul) stand-in for the HSV saturation/hue ops of Caffe SSD: luma is kept,
    chroma (I, Q) is scaled by ``saturation`` and rotated by ``hue_degrees``.
    """
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    from_yiq = tf.constant(np.linalg.inv(_RGB_TO_YIQ), tf.float32)
    angle = hue_degrees * (np.pi / 180.0)
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    chroma = tf.stack([tf.stack([1.0, 0.0, 0.0]), tf.stack([0.0, cos, -sin]), tf.stack([0.0, sin, cos])])
    return from_yiq @ chroma @ to_yiq


def sample_photometric(seed):
    """SSD photometric distortion parameters -> (brightness [], colour matrix [3,3]).

    Brightness delta +-32, contrast (scale) 0.5..1.5, saturation 0.5..1.5 and hue +-18 degrees
    (in YIQ space, see ``colour_matrix``); each with p 0.5. Without intermediate clipping all of
    them but brightness are linear, so SSD's random contrast-first/last order is moot; they are
    applied by ``render_window`` as clip((x + brightness) @ M^T, 0, 255).
    """
    s = tf.random.experimental.stateless_split(seed, 8)
    brightness = tf.where(_coin(s[0]), _uniform(s[1], -32.0, 32.0), 0.0)
    alpha = tf.where(_coin(s[2]), _uniform(s[3], 0.5, 1.5), 1.0)
    saturation = tf.where(_coin(s[4]), _uniform(s[5], 0.5, 1.5), 1.0)
    hue = tf.where(_coin(s[6]), _uniform(s[7], -18.0, 18.0), 0.0)
    return brightness, colour_matrix(saturation, hue) * alpha


def render_window(image, window, out_size, flip, brightness, matrix, fill, scale, offset):
    """Final training pixels of one example: resample ``window`` (see ``resize_window``), apply
    the photometric map clip((x + brightness) @ M^T, 0, 255) to the pixels that come from the
    image, fill the rest with ``fill`` [3] (0..255), normalise with ``scale``/``offset`` [3].

    Only the output rectangle that samples inside the image is resampled and colour-mapped
    (the pixels from the image form a rectangle); the fill is added by padding, so an expanded
    (zoomed-out) example costs less than a full-size one. Returns float32 [H, W, 3].
    """
    out_h, out_w = out_size
    _, inside_rows, inside_cols = _window_grid(image, window, out_size, flip)
    fill_norm_np = np.asarray(fill, np.float32) * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
    scale = tf.constant(np.asarray(scale, np.float32))
    offset = tf.constant(np.asarray(offset, np.float32))
    fill_norm = tf.constant(fill_norm_np)

    def span(inside):
        count = tf.maximum(tf.reduce_sum(tf.cast(inside, tf.int32)), 1)
        return tf.argmax(tf.cast(inside, tf.int32), output_type=tf.int32), count

    r0, rows = span(inside_rows)
    c0, cols = span(inside_cols)
    box, _, _ = _window_grid(image, window, out_size, flip, rows=(r0, rows), cols=(c0, cols))
    inner = tf.image.crop_and_resize(image[None], box[None], [0], tf.stack([rows, cols]))[0]
    weights = matrix * scale[:, None]  # diag(scale) @ M
    bias = tf.reduce_sum(weights, axis=1) * brightness + offset - fill_norm
    low, high = offset - fill_norm, 255.0 * scale + offset - fill_norm
    pixels = tf.reshape(inner, [-1, 3]) @ tf.transpose(weights) + bias
    pixels = tf.clip_by_value(pixels, tf.minimum(low, high), tf.maximum(low, high))
    padded = tf.pad(tf.reshape(pixels, [rows, cols, 3]),
                    [[r0, out_h - r0 - rows], [c0, out_w - c0 - cols], [0, 0]])
    if np.any(fill_norm_np != 0):  # zero for Caffe normalisation (the fill is its mean)
        padded = padded + fill_norm
    return tf.ensure_shape(padded, [out_h, out_w, 3])


def flip_boxes(boxes):
    """Horizontal flip of corner boxes [N,4] in [0,1]."""
    return tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)


def pad_boxes(boxes, labels, difficult, max_boxes: int):
    """Pad/truncate to ``max_boxes`` -> (boxes [M,4], labels [M], difficult [M], mask [M], overflow)."""
    n = tf.shape(labels)[0]
    overflow = tf.maximum(n - max_boxes, 0)
    pad = max_boxes - tf.minimum(n, max_boxes)
    boxes = tf.pad(boxes[:max_boxes], [[0, pad], [0, 0]])
    labels = tf.pad(labels[:max_boxes], [[0, pad]])
    difficult = tf.pad(difficult[:max_boxes], [[0, pad]])
    mask = tf.range(max_boxes) < tf.minimum(n, max_boxes)
    return (tf.ensure_shape(boxes, [max_boxes, 4]), tf.ensure_shape(labels, [max_boxes]),
            tf.ensure_shape(difficult, [max_boxes]), tf.ensure_shape(mask, [max_boxes]), overflow)


def train_transform(image, boxes, labels, difficult, seed, out_size, aug, fill, scale, offset):
    """SSD augmentation of one example -> (image float32 [H,W,3] normalised, boxes [n,4],
    labels [n], difficult [n]).

    ``aug`` has booleans photometric/expand/crop/flip and expand_max_ratio; ``fill`` is the
    0..255 RGB canvas colour; ``scale``/``offset`` the normalisation (see normalize.py).
    Returned boxes are the kept ones (centre inside the crop), clipped to [0, 1] with positive
    size, flipped with the image.
    """
    s = tf.random.experimental.stateless_split(seed, 4)
    if aug.expand:
        ratio, offset_xy = sample_expand(s[0], float(aug.expand_max_ratio))
    else:
        ratio, offset_xy = tf.constant(1.0), tf.zeros([2])
    offset4 = tf.tile(offset_xy, [2])
    canvas_boxes = boxes / ratio + offset4
    if aug.crop:
        aspect_hw = tf.cast(tf.shape(image)[0], tf.float32) / tf.cast(tf.shape(image)[1], tf.float32)
        patch = sample_ssd_crop(canvas_boxes, aspect_hw, s[1])
    else:
        patch = tf.constant([0.0, 0.0, 1.0, 1.0])
    new_boxes, keep = boxes_in_patch(canvas_boxes, patch)
    boxes = tf.boolean_mask(new_boxes, keep)
    labels, difficult = tf.boolean_mask(labels, keep), tf.boolean_mask(difficult, keep)
    do_flip = _coin(s[3]) if aug.flip else tf.constant(False)
    boxes = tf.where(do_flip, flip_boxes(boxes), boxes)
    if aug.photometric:
        brightness, matrix = sample_photometric(s[2])
    else:
        brightness, matrix = tf.constant(0.0), tf.eye(3)
    out = render_window(image, (patch - offset4) * ratio, out_size, do_flip, brightness, matrix, fill, scale, offset)
    return out, boxes, labels, difficult


def eval_transform(image, out_size):
    """Resize only (the whole image, warped to ``out_size``) -> float32 [H,W,3] 0..255."""
    out, _, _ = resize_window(image, tf.constant([0.0, 0.0, 1.0, 1.0]), out_size)
    return out


def normalize_tf(image, scale, offset):
    """float32 0..255 RGB -> normalised with per-channel ``scale`` and ``offset`` (see normalize.py)."""
    return image * tf.constant(np.asarray(scale, np.float32)) + tf.constant(np.asarray(offset, np.float32))
