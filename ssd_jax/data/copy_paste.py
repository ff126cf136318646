"""Copy-paste augmentation: an object from another training image pasted next to one of this image's.

Mosaics (``ssd_jax.data.mosaic``) give images with several objects, but separated by seams; the
errors they leave are neighbours that touch (two raccoons side by side drawn as one box). Copy-paste
makes such pairs: with probability ``data.augment.paste_prob`` (0 = off, the default) a box of a
donor example (drawn uniformly from the split, with replacement; a random one of its boxes) is cut
out of the donor's photo as a rectangle, scaled to the height of a random box of this example
(times U(0.8, 1.2)), and pasted on its left or right side, overlapping it by U(0, 0.3) of the
pasted width, vertically centred on it (jitter U(-0.2, 0.2) of the pasted height). The paste is
clipped to the image; the new box is the clipped rectangle, with the donor box's label. It is
added only when at least half of the pasted rectangle lies inside the image; boxes already there
are kept (partly covered where the paste overlaps them). It runs on the raw example, before the SSD
chain (expand, crop, flip, photometric), which then treats the pair like any other objects.
Deterministic per ``(seed, position)``; needs an indexed source (shapes, voc_folder, coco_json).
"""

from __future__ import annotations

from ssd_jax.data import augment
from ssd_jax.data.tf_setup import tf

MIN_INSIDE = 0.5


def check(aug) -> float:
    """``paste_prob`` of a data.augment section; ValueError naming the field when out of range."""
    prob = float(aug.get("paste_prob", 0.0))
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"data.augment.paste_prob must be in [0, 1], got {prob}")
    return prob


def paste_rectangle(target_box, donor_hw, image_hw, u):
    """Where the paste goes, in pixels: float32 ``[y0, x0, y1, x1]`` before clipping.

    ``target_box``: float32 [4] normalised corners of the box it is pasted next to; ``donor_hw``:
    the donor box's (height, width) in pixels; ``image_hw``: this image's (height, width);
    ``u``: float32 [4] uniforms in [0, 1) for scale, side (< 0.5: right), overlap and jitter.
    """
    h, w = tf.cast(image_hw[0], tf.float32), tf.cast(image_hw[1], tf.float32)
    tx0, ty0, tx1, ty1 = target_box[0] * w, target_box[1] * h, target_box[2] * w, target_box[3] * h
    ph = (ty1 - ty0) * (0.8 + 0.4 * u[0])
    pw = ph * donor_hw[1] / tf.maximum(donor_hw[0], 1e-6)
    overlap = 0.3 * u[2] * pw
    x0 = tf.where(u[1] < 0.5, tx1 - overlap, tx0 + overlap - pw)
    y0 = (ty0 + ty1) / 2 - ph / 2 + (u[3] - 0.5) * 0.4 * ph
    return tf.stack([y0, x0, y0 + ph, x0 + pw])


def resample(image, window, out_h, out_w):
    """Bilinear resample of ``window`` (xmin, ymin, xmax, ymax, image-normalised edges) of ``image``
    [h, w, 3] to float32 [out_h, out_w, 3] (sizes may be tensors), half-pixel centres as
    ``augment.resize_window``; samples up to half a pixel past the edge repeat the edge pixel."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    padded = tf.pad(tf.cast(image, tf.float32), [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    ys = augment.sample_positions(window[1], window[3], hf, out_h) + 1.0
    xs = augment.sample_positions(window[0], window[2], wf, out_w) + 1.0
    box = tf.stack([ys[0] / (hf + 1.0), xs[0] / (wf + 1.0), ys[-1] / (hf + 1.0), xs[-1] / (wf + 1.0)])
    return tf.image.crop_and_resize(padded[None], box[None], [0], tf.stack([out_h, out_w]))[0]


def paste(example, donor, seed):
    """``example`` with one of ``donor``'s objects pasted next to one of its own (see the module
    docstring), or unchanged when either has no box or the paste would lie mostly outside.

    Examples are raw dicts: image uint8 [h, w, 3], boxes float32 [n, 4] normalised corners,
    labels int32 [n], difficult bool [n]; other keys are passed through.
    """
    s = tf.random.experimental.stateless_split(seed, 3)
    image, boxes = example["image"], example["boxes"]
    n, n_donor = tf.shape(boxes)[0], tf.shape(donor["boxes"])[0]
    hw = tf.shape(image)[:2]

    def with_paste():
        k = tf.random.stateless_uniform([], s[0], 0, n, dtype=tf.int32)
        j = tf.random.stateless_uniform([], s[1], 0, n_donor, dtype=tf.int32)
        donor_box = donor["boxes"][j]
        dh = tf.cast(tf.shape(donor["image"])[0], tf.float32)
        dw = tf.cast(tf.shape(donor["image"])[1], tf.float32)
        donor_hw = tf.stack([(donor_box[3] - donor_box[1]) * dh, (donor_box[2] - donor_box[0]) * dw])
        rect = paste_rectangle(boxes[k], donor_hw, hw, tf.random.stateless_uniform([4], s[2]))
        height, width = tf.cast(hw[0], tf.float32), tf.cast(hw[1], tf.float32)
        clipped = tf.stack([tf.clip_by_value(rect[0], 0.0, height), tf.clip_by_value(rect[1], 0.0, width),
                            tf.clip_by_value(rect[2], 0.0, height), tf.clip_by_value(rect[3], 0.0, width)])
        area = lambda r: tf.maximum(r[2] - r[0], 0.0) * tf.maximum(r[3] - r[1], 0.0)
        inside = area(clipped) / tf.maximum(area(rect), 1e-6)
        # pixel rows/columns whose centres fall inside the clipped rectangle
        y0, x0 = tf.cast(tf.round(clipped[0]), tf.int32), tf.cast(tf.round(clipped[1]), tf.int32)
        y1, x1 = tf.cast(tf.round(clipped[2]), tf.int32), tf.cast(tf.round(clipped[3]), tf.int32)
        ok = (inside >= MIN_INSIDE) & (y1 - y0 >= 2) & (x1 - x0 >= 2)

        def apply():
            # the donor region of the visible part: the pasted rect maps linearly onto the donor box
            fy = lambda p: donor_box[1] + (p - rect[0]) / (rect[2] - rect[0]) * (donor_box[3] - donor_box[1])
            fx = lambda p: donor_box[0] + (p - rect[1]) / (rect[3] - rect[1]) * (donor_box[2] - donor_box[0])
            # (clamped: rounding the clipped rectangle to whole pixels may reach past the donor box)
            window = tf.clip_by_value(
                tf.stack([fx(tf.cast(x0, tf.float32)), fy(tf.cast(y0, tf.float32)),
                          fx(tf.cast(x1, tf.float32)), fy(tf.cast(y1, tf.float32))]),
                tf.tile(donor_box[:2], [2]), tf.tile(donor_box[2:], [2]))
            patch = resample(donor["image"], window, y1 - y0, x1 - x0)
            patch = tf.cast(tf.clip_by_value(tf.round(patch), 0, 255), image.dtype)
            padded = tf.pad(patch, [[y0, hw[0] - y1], [x0, hw[1] - x1], [0, 0]])
            rows, cols = tf.range(hw[0]), tf.range(hw[1])
            mask = ((rows >= y0) & (rows < y1))[:, None, None] & ((cols >= x0) & (cols < x1))[None, :, None]
            new_box = tf.stack([tf.cast(x0, tf.float32) / width, tf.cast(y0, tf.float32) / height,
                                tf.cast(x1, tf.float32) / width, tf.cast(y1, tf.float32) / height])
            return dict(example, image=tf.where(mask, padded, image),
                        boxes=tf.concat([boxes, new_box[None]], 0),
                        labels=tf.concat([example["labels"], donor["labels"][j][None]], 0),
                        difficult=tf.concat([example["difficult"], tf.zeros([1], tf.bool)], 0))

        return tf.cond(ok, apply, lambda: example)

    return tf.cond((n > 0) & (n_donor > 0), with_paste, lambda: example)


def maybe_paste(example, seed, load, num_examples: int, aug):
    """With probability ``aug.paste_prob``, :func:`paste` with a donor ``load(index)``; else ``example``."""
    prob = check(aug)
    if prob <= 0.0:
        return example
    s = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 0x706173), 3)
    use = tf.random.stateless_uniform([], s[0]) < prob

    def pasted():
        donor = load(tf.random.stateless_uniform([], s[1], 0, num_examples, dtype=tf.int64))
        return paste(example, donor, s[2])

    return tf.cond(use, pasted, lambda: example)
