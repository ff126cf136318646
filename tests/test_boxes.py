"""Box conversions, IoU and box coding against hand-worked numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax import boxes


def test_center_corner_round_trip_and_hand_values():
    c = jnp.array([[0.5, 0.5, 0.2, 0.4]])
    np.testing.assert_allclose(boxes.center_to_corners(c), [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)
    np.testing.assert_allclose(boxes.corners_to_center(boxes.center_to_corners(c)), c, atol=1e-7)


def test_area_clamps_inverted_boxes_to_zero():
    a = boxes.area(jnp.array([[0.0, 0.0, 0.5, 0.2], [0.5, 0.5, 0.4, 0.9]]))
    np.testing.assert_allclose(a, [0.1, 0.0], atol=1e-7)


def test_iou_hand_worked():
    a = jnp.array([[0.0, 0.0, 0.5, 0.5]])
    b = jnp.array([[0.25, 0.25, 0.75, 0.75],  # inter 1/16, union 7/16
                   [0.5, 0.5, 1.0, 1.0],      # touching corner: 0
                   [0.0, 0.0, 0.5, 0.5],      # identical: 1
                   [0.0, 0.0, 0.25, 0.5]])    # contained: 1/2
    np.testing.assert_allclose(boxes.iou(a, b), [[1 / 7, 0.0, 1.0, 0.5]], rtol=1e-6)


def test_iou_zero_area_is_zero_not_nan():
    z = jnp.array([[0.3, 0.3, 0.3, 0.3], [0.5, 0.5, 0.4, 0.4]])
    out = boxes.iou(z, z)
    assert np.all(np.isfinite(out)) and np.all(np.asarray(out) == 0.0)


def test_iou_properties_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.8, (40, 2))
    b = jnp.asarray(np.concatenate([xy, xy + rng.uniform(0.01, 0.5, (40, 2))], 1), jnp.float32)
    q = np.asarray(boxes.iou(b, b))
    np.testing.assert_allclose(q, q.T, atol=1e-7)
    np.testing.assert_allclose(np.diag(q), 1.0, atol=1e-6)
    assert q.min() >= 0.0 and q.max() <= 1.0 + 1e-6


def test_iou_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="`b`"):
        boxes.iou(jnp.zeros((2, 4)), jnp.zeros((3, 5)))


def test_encode_hand_worked():
    anchor = jnp.array([[0.5, 0.5, 0.2, 0.2]])
    gt = jnp.array([[0.42, 0.44, 0.62, 0.84]])  # centre (0.52, 0.64), size (0.2, 0.4)
    t = boxes.encode(gt, anchor)
    expected = [(0.52 - 0.5) / (0.1 * 0.2), (0.64 - 0.5) / (0.1 * 0.2), 0.0, math.log(2.0) / 0.2]
    np.testing.assert_allclose(t, [expected], rtol=1e-5, atol=1e-6)


def test_decode_inverts_encode():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 0.7, (100, 2))
    gt = np.concatenate([xy, xy + rng.uniform(0.02, 0.3, (100, 2))], 1).astype(np.float32)
    anchors = np.concatenate([rng.uniform(0.1, 0.9, (100, 2)), rng.uniform(0.05, 0.5, (100, 2))], 1)
    anchors = anchors.astype(np.float32)
    out = boxes.decode(boxes.encode(gt, anchors), anchors)
    np.testing.assert_allclose(out, gt, atol=1e-5)


def test_decode_clamps_huge_size_offsets():
    out = boxes.decode(jnp.array([[0.0, 0.0, 1e4, 1e4]]), jnp.array([[0.5, 0.5, 0.1, 0.1]]))
    assert np.all(np.isfinite(out))


def test_jit_equals_eager():
    a = jnp.array([[0.1, 0.1, 0.4, 0.5], [0.2, 0.3, 0.9, 0.8]])
    np.testing.assert_allclose(jax.jit(boxes.iou)(a, a), boxes.iou(a, a), atol=1e-7)
