"""detect: hand-built logits, padding rules, and a slow NumPy reference of the whole pipeline."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.postprocess import Detections, detect


def iou_np(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0) - inter
    return inter / union if union > 0 else 0.0


def reference_detect(loc_pred, logits, anchors, score_threshold, iou_threshold, pre_nms_top_k, max_detections):
    """Slow NumPy SSD post-processing of one image (float64): a list of (score, class, anchor, box)."""
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    cx = anchors[:, 0] + loc_pred[:, 0] * 0.1 * anchors[:, 2]
    cy = anchors[:, 1] + loc_pred[:, 1] * 0.1 * anchors[:, 3]
    w = anchors[:, 2] * np.exp(np.minimum(loc_pred[:, 2] * 0.2, math.log(1000 / 16)))
    h = anchors[:, 3] * np.exp(np.minimum(loc_pred[:, 3] * 0.2, math.log(1000 / 16)))
    boxes = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), 0, 1)
    detections = []
    for c in range(1, logits.shape[1]):
        cand = [a for a in range(len(anchors)) if probs[a, c] > score_threshold]
        cand = sorted(cand, key=lambda a: (-probs[a, c], a))[:pre_nms_top_k]
        kept = []
        for a in cand:
            if all(iou_np(boxes[k], boxes[a]) <= iou_threshold for k in kept):
                kept.append(a)
        detections += [(probs[a, c], c, a, boxes[a]) for a in kept]
    detections.sort(key=lambda d: (-d[0], d[1], d[2]))
    return detections[:max_detections]


def assert_matches_reference(det, loc_pred, logits, anchors, score_threshold, iou_threshold, pre_nms_top_k,
                             max_detections):
    for b in range(logits.shape[0]):
        expected = reference_detect(loc_pred[b], logits[b], anchors, score_threshold, iou_threshold,
                                    pre_nms_top_k, max_detections)
        n = len(expected)
        assert int(det.num_valid[b]) == n
        np.testing.assert_array_equal(np.asarray(det.classes[b, :n]), [d[1] for d in expected])
        np.testing.assert_allclose(np.asarray(det.scores[b, :n]), [d[0] for d in expected], rtol=1e-5)
        np.testing.assert_allclose(np.asarray(det.boxes[b, :n]), np.array([d[3] for d in expected]).reshape(n, 4),
                                   atol=1e-6)
        assert (np.asarray(det.scores[b, n:]) == 0).all() and (np.asarray(det.classes[b, n:]) == 0).all()
        assert (np.asarray(det.boxes[b, n:]) == 0).all()


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(0)
    batch, num_anchors, num_classes = 2, 200, 4
    centre = rng.uniform(0.1, 0.9, (num_anchors, 2))
    size = rng.uniform(0.05, 0.4, (num_anchors, 2))
    anchors = np.concatenate([centre, size], 1).astype(np.float32)
    loc_pred = rng.normal(scale=1.0, size=(batch, num_anchors, 4)).astype(np.float32)
    logits = rng.normal(scale=2.0, size=(batch, num_anchors, num_classes)).astype(np.float32)
    logits[..., 0] += 2.0  # many, not all, scores above 0.05
    logits[0, :, 1] += 2.0  # class 1 dominates image 0, so its pre-NMS top-k binds inside the pool
    return loc_pred, logits, anchors


# 16: the pool cannot finish, so the straightforward path (per-class top-k + sort) is taken;
# 80: the pool (of 600 candidates) finishes, with class 1 holding more than pre_nms_top_k of
# the pool in image 0.
@pytest.mark.parametrize("candidate_pool", [16, 80])
def test_matches_numpy_reference(random_case, candidate_pool):
    loc_pred, logits, anchors = random_case
    params = dict(score_threshold=0.05, iou_threshold=0.45, pre_nms_top_k=30, max_detections=40)
    det = detect(jnp.asarray(loc_pred), jnp.asarray(logits), jnp.asarray(anchors), candidate_pool=candidate_pool,
                 tile_size=16, **params)
    assert det.boxes.shape == (2, 40, 4) and det.boxes.dtype == jnp.float32
    assert det.classes.dtype == jnp.int32 and det.num_valid.dtype == jnp.int32
    assert_matches_reference(det, loc_pred, logits, anchors, **params)


def test_more_slots_than_candidates_are_padded(random_case):
    loc_pred, logits, anchors = random_case
    params = dict(score_threshold=0.3, iou_threshold=0.6, pre_nms_top_k=10, max_detections=64)
    det = detect(jnp.asarray(loc_pred), jnp.asarray(logits), jnp.asarray(anchors), **params)
    assert (np.asarray(det.num_valid) <= 3 * 10).all()  # at most 3 classes x top 10 candidates
    assert_matches_reference(det, loc_pred, logits, anchors, **params)


# Hand-built image: 3 default boxes, 3 classes. Boxes 0 and 1 overlap (IoU 0.905), box 2 is apart.
ANCHORS = np.array([[0.25, 0.25, 0.2, 0.2], [0.26, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]], np.float32)
PROBS = np.array([[0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.5, 0.005, 0.495]])
CORNERS = np.array([[0.15, 0.15, 0.35, 0.35], [0.16, 0.15, 0.36, 0.35], [0.65, 0.65, 0.85, 0.85]])


@jax.jit
def detect_hand_built(score_threshold, iou_threshold):
    logits = jnp.asarray(np.log(PROBS)[None], jnp.float32)
    return detect(jnp.zeros((1, 3, 4)), logits, jnp.asarray(ANCHORS), score_threshold, iou_threshold,
                  max_detections=5)


def run_hand_built(score_threshold, iou_threshold):
    return detect_hand_built(score_threshold, iou_threshold)  # traced thresholds: compiled once


def expect(det, rows):
    """rows: (anchor, class, score) in output order."""
    assert int(det.num_valid[0]) == len(rows)
    assert np.asarray(det.valid[0]).tolist() == [i < len(rows) for i in range(5)]
    np.testing.assert_array_equal(np.asarray(det.classes[0]), [r[1] for r in rows] + [0] * (5 - len(rows)))
    np.testing.assert_allclose(np.asarray(det.scores[0]), [r[2] for r in rows] + [0] * (5 - len(rows)), rtol=1e-5)
    boxes = [CORNERS[r[0]] for r in rows] + [np.zeros(4)] * (5 - len(rows))
    np.testing.assert_allclose(np.asarray(det.boxes[0]), np.array(boxes), atol=1e-6)


def test_hand_built_logits():
    # class 1: box 0 (0.8) suppresses box 1 (0.6); box 2 (0.005) is below 0.01.
    # class 2: box 2 (0.495), box 1 (0.3) suppresses box 0 (0.1).
    expect(run_hand_built(0.01, 0.45), [(0, 1, 0.8), (2, 2, 0.495), (1, 2, 0.3)])
    # IoU 0.905 is not above 0.95: nothing suppressed; ties none; all 5 above 0.01.
    expect(run_hand_built(0.01, 0.95), [(0, 1, 0.8), (1, 1, 0.6), (2, 2, 0.495), (1, 2, 0.3), (0, 2, 0.1)])
    # threshold 0.35 leaves only 0.8 (box 1's 0.6 is still suppressed) and 0.495
    expect(run_hand_built(0.35, 0.45), [(0, 1, 0.8), (2, 2, 0.495)])
    expect(run_hand_built(0.9, 0.45), [])
    assert detect_hand_built._cache_size() == 1


def test_equal_scores_lower_class_then_lower_anchor_first():
    anchors = np.array([[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]], np.float32)
    probs = np.array([[0.2, 0.4, 0.4], [0.2, 0.4, 0.4], [0.2, 0.4, 0.4]])
    det = detect(jnp.zeros((1, 3, 4)), jnp.asarray(np.log(probs)[None], jnp.float32), jnp.asarray(anchors),
                 max_detections=5)
    assert np.asarray(det.classes[0]).tolist() == [1, 1, 1, 2, 2]
    centres = np.asarray(det.boxes[0, :, 0] + det.boxes[0, :, 2]) / 2
    np.testing.assert_allclose(centres, [0.2, 0.5, 0.8, 0.2, 0.5], atol=1e-6)


def test_detections_is_a_pytree_and_bad_shapes_raise():
    det = Detections(boxes=jnp.zeros((1, 2, 4)), scores=jnp.zeros((1, 2)), classes=jnp.zeros((1, 2), jnp.int32),
                     num_valid=jnp.asarray([1], jnp.int32))
    assert len(jax.tree.leaves(det)) == 4
    assert np.asarray(det.valid).tolist() == [[True, False]]
    with pytest.raises(ValueError, match="anchors"):
        detect(jnp.zeros((1, 3, 4)), jnp.zeros((1, 3, 3)), jnp.zeros((4, 4)))
