"""SSD augmentation ops (TensorFlow, stateless) against hand-worked numbers and NumPy references."""

import types

import numpy as np
import pytest

from ssd_jax.data import augment
from ssd_jax.data.tf_setup import tf

ALL_ON = types.SimpleNamespace(photometric=True, expand=True, crop=True, flip=True, expand_max_ratio=4.0)
GEOMETRY_ONLY = types.SimpleNamespace(photometric=False, expand=True, crop=True, flip=True, expand_max_ratio=4.0)


def seed(i):
    return tf.constant([7, i], tf.int64)


def numpy_iou(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - iw * ih
            out[i, j] = iw * ih / union
    return out


def test_box_iou_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = np.sort(rng.random((5, 2, 2)), axis=1).reshape(5, 4), np.sort(rng.random((3, 2, 2)), axis=1).reshape(3, 4)
    a, b = a[:, [0, 2, 1, 3]], b[:, [0, 2, 1, 3]]
    np.testing.assert_allclose(augment.box_iou(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy(),
                               numpy_iou(a, b), rtol=1e-5, atol=1e-6)


def test_boxes_in_patch_keeps_only_centre_inside():
    boxes = tf.constant([[0.1, 0.1, 0.3, 0.3],    # centre (0.2, 0.2) inside
                         [0.0, 0.0, 0.2, 0.2],    # centre (0.1, 0.1) outside, though overlapping
                         [0.4, 0.4, 0.9, 0.9]])   # centre (0.65, 0.65) inside, clipped
    new, keep = augment.boxes_in_patch(boxes, tf.constant([0.15, 0.15, 0.75, 0.75]))
    assert keep.numpy().tolist() == [True, False, True]
    np.testing.assert_allclose(new.numpy()[[0, 2]], [[0.0, 0.0, 0.25, 0.25], [5 / 12, 5 / 12, 1.0, 1.0]], atol=1e-6)


def test_flip_is_its_own_inverse_and_mirrors():
    boxes = tf.constant([[0.1, 0.2, 0.4, 0.9], [0.5, 0.0, 1.0, 0.3]])
    np.testing.assert_allclose(augment.flip_boxes(augment.flip_boxes(boxes)).numpy(), boxes.numpy(), atol=1e-7)
    np.testing.assert_allclose(augment.flip_boxes(boxes).numpy(), [[0.6, 0.2, 0.9, 0.9], [0.0, 0.0, 0.5, 0.3]],
                               atol=1e-6)


def test_ssd_crop_patches_respect_constraints():
    boxes = tf.constant([[0.2, 0.3, 0.5, 0.6], [0.6, 0.1, 0.9, 0.4]])
    whole = 0
    for i in range(150):
        patch = augment.sample_ssd_crop(boxes, 0.75, seed(i)).numpy()
        if np.allclose(patch, [0, 0, 1, 1]):
            whole += 1
            continue
        w, h = patch[2] - patch[0], patch[3] - patch[1]
        assert 0.3 - 1e-6 <= w <= 1 and 0.3 - 1e-6 <= h <= 1 and patch.min() >= 0 and patch.max() <= 1 + 1e-6
        assert 0.5 - 1e-5 <= h * 0.75 / w <= 2 + 1e-5
        assert augment.centres_inside(boxes, tf.constant(patch)).numpy().any()
    assert 10 < whole < 100  # "whole image" is one of 7 modes, plus fallbacks


def test_resize_window_equals_tf_resize_and_fills_outside():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (13, 17, 3)).astype(np.uint8)
    out, rows, cols = augment.resize_window(tf.constant(image), tf.constant([0.0, 0.0, 1.0, 1.0]), (9, 11))
    reference = tf.image.resize(image.astype(np.float32), (9, 11), method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(out.numpy(), reference, atol=1e-3)
    assert rows.numpy().all() and cols.numpy().all()
    same, _, _ = augment.resize_window(tf.constant(image), tf.constant([0.0, 0.0, 1.0, 1.0]), (13, 17))
    np.testing.assert_allclose(same.numpy(), image, atol=1e-3)
    # a window twice as wide as the image, image on the left half: right half is outside
    out, rows, cols = augment.resize_window(tf.constant(image), tf.constant([0.0, 0.0, 2.0, 1.0]), (13, 34))
    assert rows.numpy().all() and cols.numpy()[:16].all() and not cols.numpy()[17:].any()
    flipped, _, fcols = augment.resize_window(tf.constant(image), tf.constant([0.0, 0.0, 2.0, 1.0]), (13, 34),
                                              flip=tf.constant(True))
    np.testing.assert_allclose(flipped.numpy()[:, ::-1][:, :16], out.numpy()[:, :16], atol=1e-4)
    assert fcols.numpy().tolist() == cols.numpy()[::-1].tolist()
    filled = augment.fill_outside(out[None], rows[None], cols[None], [1.0, 2.0, 3.0]).numpy()[0]
    np.testing.assert_array_equal(filled[:, 17:], np.broadcast_to([1.0, 2.0, 3.0], (13, 17, 3)))


def test_colour_matrix_identity_and_grey():
    np.testing.assert_allclose(augment.colour_matrix(tf.constant(1.0), tf.constant(0.0)).numpy(), np.eye(3), atol=1e-5)
    grey = augment.colour_matrix(tf.constant(0.0), tf.constant(10.0)).numpy() @ np.array([200.0, 50.0, 10.0])
    np.testing.assert_allclose(grey, np.full(3, 0.299 * 200 + 0.587 * 50 + 0.114 * 10), atol=1e-2)


@pytest.mark.parametrize("flip", [False, True])
def test_render_window_matches_resize_photometric_fill_normalise(flip):
    rng = np.random.default_rng(2)
    image = tf.constant(rng.integers(0, 256, (13, 17, 3)).astype(np.uint8))
    window = tf.constant([-0.5, -0.25, 1.2, 1.0])  # expanded canvas: parts outside the image
    matrix = augment.colour_matrix(tf.constant(1.3), tf.constant(12.0)).numpy() * 0.8
    fill, scale, offset = np.array([123.0, 117.0, 104.0]), np.array([0.5, 1.0, 2.0]), np.array([-3.0, 0.0, 1.0])
    out = augment.render_window(image, window, (11, 15), tf.constant(flip), tf.constant(20.0), tf.constant(matrix),
                                fill, scale, offset).numpy()
    resized, rows, cols = augment.resize_window(image, window, (11, 15), tf.constant(flip))
    expected = np.clip((resized.numpy() + 20.0) @ matrix.T, 0, 255)
    inside = rows.numpy()[:, None] & cols.numpy()[None, :]
    expected = np.where(inside[..., None], expected, fill) * scale + offset
    assert 0 < inside.sum() < inside.size
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_pad_boxes_counts_overflow():
    boxes = tf.reshape(tf.range(20, dtype=tf.float32), [5, 4]) / 20.0
    labels = tf.constant([1, 2, 3, 4, 5])
    _, out_labels, _, mask, overflow = augment.pad_boxes(boxes, labels, tf.zeros([5], tf.bool), 3)
    assert overflow.numpy() == 2 and mask.numpy().tolist() == [True] * 3
    assert out_labels.numpy().tolist() == [1, 2, 3]
    _, out_labels, _, mask, overflow = augment.pad_boxes(boxes, labels, tf.zeros([5], tf.bool), 7)
    assert overflow.numpy() == 0 and out_labels.numpy().tolist() == [1, 2, 3, 4, 5, 0, 0]
    assert mask.numpy().tolist() == [True] * 5 + [False] * 2


@pytest.fixture(scope="module")
def transform_fn():
    compiled = {}

    def run(image, boxes, labels, s, aug):
        if id(aug) not in compiled:
            compiled[id(aug)] = tf.function(lambda image, boxes, labels, s: augment.train_transform(
                image, boxes, labels, tf.zeros_like(labels, tf.bool), s, (48, 64), aug, np.zeros(3),
                np.full(3, 1 / 255), np.zeros(3)), reduce_retracing=True)
        return compiled[id(aug)](image, boxes, labels, s)

    return run


def test_train_transform_boxes_follow_the_pixels(transform_fn):
    # a white rectangle on black: after expand/crop/flip/resize its pixels must sit in its box
    image = np.zeros((60, 80, 3), np.uint8)
    image[12:36, 20:52] = 255
    box = np.array([[20 / 80, 12 / 60, 52 / 80, 36 / 60]], np.float32)
    checked = 0
    for i in range(40):
        out, boxes, _, _ = transform_fn(tf.constant(image), tf.constant(box),
                                                               tf.constant([1]), seed(i), GEOMETRY_ONLY)
        boxes = boxes.numpy()
        white = np.asarray(out)[..., 0] > 0.5
        if not len(boxes):
            continue
        assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > boxes[:, :2])
        rows_on, cols_on = np.flatnonzero(white.any(1)), np.flatnonzero(white.any(0))
        x0, y0, x1, y1 = boxes[0] * [64, 48, 64, 48]
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        assert abs(cols_on[0] - x0) <= 1.5 and abs(cols_on[-1] + 1 - x1) <= 1.5
        assert abs(rows_on[0] - y0) <= 1.5 and abs(rows_on[-1] + 1 - y1) <= 1.5
        checked += 1
    assert checked >= 15


def test_train_transform_keeps_boxes_valid_with_everything_on(transform_fn):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 30, 3)).astype(np.uint8)
    corners = np.sort(rng.random((6, 2, 2)), axis=1)
    boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], 1).astype(np.float32)
    for i in range(20):
        out, new, labels, _ = transform_fn(
            tf.constant(image), tf.constant(boxes), tf.constant([1, 2, 3, 4, 5, 6]), seed(i), ALL_ON)
        new = new.numpy()
        assert out.shape == (48, 64, 3) and len(new) == len(labels)
        assert np.all((new >= 0) & (new <= 1)) and np.all(new[:, 2:] > new[:, :2])
        assert out.numpy().min() >= 0.0 and out.numpy().max() <= 1.0
    again = transform_fn(tf.constant(image), tf.constant(boxes), tf.constant([1, 2, 3, 4, 5, 6]), seed(3), ALL_ON)
    once = transform_fn(tf.constant(image), tf.constant(boxes), tf.constant([1, 2, 3, 4, 5, 6]), seed(3), ALL_ON)
    for a, b in zip(again, once):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
