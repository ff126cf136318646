"""Raw examples shared by every source: decoding, sanitising, sharding arithmetic (a leaf module).

A raw example is a dict: image uint8 [h, w, 3] RGB, boxes float32 [n, 4] corners
(xmin, ymin, xmax, ymax) in [0, 1], labels int32 [n] in 1..C-1, difficult bool [n],
image_id int32 [], num_bad int32 [] (boxes dropped by ``sanitize``).
"""

from __future__ import annotations

from ssd_jax.data.tf_setup import tf

BACKGROUND = "background"
EPOCHS_FOREVER = 2**40


def shard_size(num_examples: int, process_index: int, process_count: int) -> int:
    """Number of examples p, p + P, ... below ``num_examples``."""
    return len(range(process_index, num_examples, process_count))


def with_background(names) -> tuple[str, ...]:
    """Object class names -> ``("background",) + names`` after checking them (non-empty, unique,
    no "background")."""
    names = tuple(str(n) for n in names)
    if not names:
        raise ValueError("the dataset has no object classes")
    if BACKGROUND in names:
        raise ValueError(f"class_names must not include {BACKGROUND!r} (label 0 is added): {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {names}")
    return (BACKGROUND,) + names


def decode_image(data):
    """Encoded JPEG/PNG/GIF/BMP bytes (tf.string []) -> uint8 [h, w, 3] RGB (grayscale, CMYK, alpha handled).

    Truncated JPEGs are recovered (the missing part is filled) rather than failing; file sources
    skip them by name at start-up (``records.check_image_file``).
    """
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, try_recover_truncated=True, acceptable_fraction=0.05),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8))
    image.set_shape([None, None, 3])
    return image


def sanitize(boxes, labels, difficult, num_classes: int):
    """Make raw annotations safe: equal lengths, finite, clipped to [0,1], positive size, valid label.

    Returns (boxes float32 [m,4], labels int32 [m], difficult bool [m], num_bad int32 []) where
    num_bad counts dropped boxes (including those beyond the shortest of the three per-box arrays).
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    difficult = tf.reshape(tf.cast(difficult, tf.bool), [-1])
    longest = tf.reduce_max([tf.shape(boxes)[0], tf.shape(labels)[0], tf.shape(difficult)[0]])
    n = tf.reduce_min([tf.shape(boxes)[0], tf.shape(labels)[0], tf.shape(difficult)[0]])
    boxes, labels, difficult = boxes[:n], labels[:n], difficult[:n]
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=1)
    boxes = tf.clip_by_value(tf.where(finite[:, None], boxes, 0.0), 0.0, 1.0)
    keep = (finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            & (labels >= 1) & (labels < num_classes))
    num_bad = longest - tf.reduce_sum(tf.cast(keep, tf.int32))
    return (tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep),
            tf.boolean_mask(difficult, keep), num_bad)


def skip_failures(ds):
    """Backstop for files that pass the start-up checks but fail to decode: the element is
    dropped and TensorFlow logs a warning with the error (the step/position bookkeeping of
    later examples in that epoch then shifts by one)."""
    return ds.ignore_errors(log_warning=True)


def raw_example(image, boxes, labels, difficult, image_id, num_classes):
    """One raw example dict (see the module docstring) with its annotations sanitised."""
    boxes, labels, difficult, num_bad = sanitize(boxes, labels, difficult, num_classes)
    return dict(image=image, boxes=boxes, labels=labels, difficult=difficult,
                image_id=tf.cast(image_id, tf.int32), num_bad=num_bad)
