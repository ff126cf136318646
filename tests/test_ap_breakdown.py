"""experiments/ap_breakdown.py: the default-box mirror and the NumPy (Soft-)NMS it scores with."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ap_breakdown
from ssd_jax import anchors, postprocess


def test_mirror_permutation_is_the_horizontal_flip():
    boxes = anchors.default_boxes(anchors.paper_spec([(5, 5), (3, 3), (1, 1)], image_size=100,
                                                     aspect_ratios=[(2.0,), (2.0, 3.0), (2.0,)]))
    m = ap_breakdown.mirror_permutation(boxes)
    np.testing.assert_allclose(boxes[m, 0], 1.0 - boxes[:, 0], atol=1e-6)
    np.testing.assert_allclose(boxes[m, 1:], boxes[:, 1:], atol=1e-6)
    np.testing.assert_array_equal(m[m], np.arange(len(boxes)))  # an involution
    # The centre column of a 5-wide map mirrors onto itself; its first box is index 2 * 4 (4 per location).
    assert m[2 * 4] == 2 * 4
    with pytest.raises(ValueError, match="not mirror-symmetric"):
        ap_breakdown.mirror_permutation(np.array([[0.3, 0.5, 0.2, 0.2]]))


def test_nms_numpy_hand_worked():
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.4], [0.6, 0.6, 1.0, 1.0]])
    scores = np.array([0.9, 0.8, 0.5])
    # IoU(0, 1) = 0.2 / 0.25 = 0.8 > 0.45: greedy removes box 1, Soft-NMS keeps it at 0.8 * (1 - 0.8).
    b, s = ap_breakdown.nms_numpy(boxes, scores, 0.45, soft=False, max_detections=10)
    np.testing.assert_allclose(s, [0.9, 0.5])
    np.testing.assert_allclose(b, boxes[[0, 2]])
    b, s = ap_breakdown.nms_numpy(boxes, scores, 0.45, soft=True, max_detections=10)
    np.testing.assert_allclose(s, [0.9, 0.5, 0.16])
    np.testing.assert_allclose(b, boxes[[0, 2, 1]])


def test_numpy_greedy_detections_equal_postprocess_detect():
    rng = np.random.default_rng(0)
    default = anchors.default_boxes(anchors.paper_spec([(4, 4), (2, 2)], image_size=64,
                                                       aspect_ratios=[(2.0,), (2.0,)]))
    loc = rng.normal(0, 1, (2, len(default), 4)).astype(np.float32)
    logits = rng.normal(0, 2, (2, len(default), 3)).astype(np.float32)
    pp = type("PP", (), dict(score_threshold=0.2, iou_threshold=0.45, pre_nms_top_k=50, max_detections=20))
    ours = ap_breakdown.numpy_detections(loc, logits, default, pp, soft=False)
    ref = postprocess.detect(jnp.asarray(loc), jnp.asarray(logits), jnp.asarray(default), score_threshold=0.2,
                             iou_threshold=0.45, pre_nms_top_k=50, max_detections=20)
    np.testing.assert_array_equal(ours["num_valid"], np.asarray(ref.num_valid))
    assert ours["num_valid"].min() > 0
    np.testing.assert_allclose(ours["scores"], np.asarray(ref.scores), atol=1e-6)
    np.testing.assert_array_equal(ours["classes"], np.asarray(ref.classes))
    np.testing.assert_allclose(ours["boxes"], np.asarray(ref.boxes), atol=1e-6)
