"""nms_padded against a slow, obviously-correct NumPy greedy NMS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.nms import greedy_nms_sorted, nms_padded

N = 96  # one box count for most cases, so the function compiles few times


def iou_np(a, b):
    """IoU of two corner boxes, float32, same formula as ssd_jax.boxes.iou."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), np.float32(0))
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), np.float32(0))
    inter = np.float32(iw * ih)
    area_a = max(a[2] - a[0], np.float32(0)) * max(a[3] - a[1], np.float32(0))
    area_b = max(b[2] - b[0], np.float32(0)) * max(b[3] - b[1], np.float32(0))
    union = np.float32(np.float32(area_a + area_b) - inter)
    return inter / union if union > 0 else np.float32(0)


def greedy_nms_reference(boxes, scores, threshold):
    """Textbook greedy NMS: visit by (score desc, index asc), keep unless IoU > threshold with a kept box."""
    boxes = np.asarray(boxes, np.float32)
    order = sorted((i for i in range(len(scores)) if scores[i] > -np.inf), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(iou_np(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


def random_case(rng, kind):
    if kind == "uniform":
        centre = rng.uniform(0, 1, (N, 2))
        size = rng.uniform(0.02, 0.5, (N, 2))
    elif kind == "clustered":
        centres = rng.uniform(0.2, 0.8, (4, 2))
        centre = centres[rng.integers(0, 4, N)] + rng.normal(scale=0.02, size=(N, 2))
        size = rng.uniform(0.1, 0.3, (N, 2))
    else:  # identical: a few distinct boxes repeated many times
        distinct = rng.uniform(0.2, 0.8, (5, 2))
        centre = distinct[rng.integers(0, 5, N)]
        size = np.full((N, 2), 0.2)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    if rng.uniform() < 0.5:
        scores = rng.integers(0, 4, N).astype(np.float32)  # many equal scores
    else:
        scores = rng.uniform(size=N).astype(np.float32)
    scores[rng.uniform(size=N) < 0.2] = -np.inf
    return boxes, scores


def check(boxes, scores, threshold, max_output, **kwargs):
    expected = greedy_nms_reference(boxes, scores, threshold)[:max_output]
    idx, num = nms_padded(jnp.asarray(boxes), jnp.asarray(scores), threshold, max_output, **kwargs)
    idx = np.asarray(idx)
    assert idx.dtype == np.int32 and idx.shape == (max_output,)
    assert int(num) == len(expected)
    assert idx[:len(expected)].tolist() == expected
    assert (idx[len(expected):] == -1).all()


@pytest.mark.parametrize("kind", ["uniform", "clustered", "identical"])
def test_matches_reference_on_random_cases(kind):
    rng = np.random.default_rng({"uniform": 0, "clustered": 1, "identical": 2}[kind])
    for _ in range(12):
        boxes, scores = random_case(rng, kind)
        threshold = float(rng.choice([0.3, 0.45, 0.7]))
        check(boxes, scores, threshold, max_output=N)
        # truncated output, several tiles, top-k pool of 16 (fast path or its full-sort fallback)
        check(boxes, scores, threshold, max_output=7, tile_size=16, candidate_pool=16)


def nms_small(boxes, scores, threshold, valid=None):
    """nms_padded on a few boxes, padded to N with -inf scores (keeps compiled shapes few)."""
    boxes = np.asarray(boxes, np.float32)
    n = len(boxes)
    boxes = np.concatenate([boxes, np.tile([[0.4, 0.4, 0.6, 0.6]], (N - n, 1))]).astype(np.float32)
    scores = np.concatenate([np.asarray(scores, np.float32), np.full(N - n, -np.inf, np.float32)])
    if valid is not None:
        valid = jnp.asarray(np.concatenate([valid, np.ones(N - n, bool)]))
    idx, num = nms_padded(jnp.asarray(boxes), jnp.asarray(scores), threshold, 7, valid=valid, tile_size=16,
                          candidate_pool=16)
    idx = np.asarray(idx)
    assert (idx[int(num):] == -1).all()
    return idx[:int(num)].tolist()


def test_all_invalid_single_box_and_empty():
    rng = np.random.default_rng(3)
    boxes, _ = random_case(rng, "uniform")
    idx, num = nms_padded(jnp.asarray(boxes), jnp.full((N,), -jnp.inf, jnp.float32), 0.5, 7, tile_size=16,
                          candidate_pool=16)
    assert int(num) == 0 and (np.asarray(idx) == -1).all()
    assert nms_small([[0.1, 0.1, 0.4, 0.4]], [0.3], 0.5) == [0]
    idx, num = nms_padded(jnp.zeros((0, 4)), jnp.zeros((0,)), 0.5, 3)
    assert int(num) == 0 and np.asarray(idx).tolist() == [-1, -1, -1]


def test_nan_scores_and_valid_mask_are_never_selected():
    boxes = [[0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.2, 0.2, 0.3, 0.3]]
    assert nms_small(boxes, [np.nan, 0.2, 0.9], 0.5) == [2, 1]
    assert nms_small(boxes, [0.1, 0.2, 0.9], 0.5, valid=[True, True, False]) == [1, 0]


def test_suppression_is_strictly_greater_than_threshold():
    boxes = [[0, 0, 1, 1], [0, 0, 1, 0.5]]  # IoU exactly 0.5
    assert nms_small(boxes, [0.9, 0.8], 0.5) == [0, 1]
    assert nms_small(boxes, [0.9, 0.8], 0.49) == [0]


def test_equal_scores_lower_index_first():
    boxes = [[0, 0, 0.2, 0.2], [0.01, 0, 0.21, 0.2], [0.6, 0.6, 0.8, 0.8]]
    assert nms_small(boxes, [0.5, 0.5, 0.5], 0.5) == [0, 2]
    assert nms_small(boxes[::-1], [0.5, 0.5, 0.5], 0.5) == [0, 1]


def test_traced_threshold_under_jit_and_vmap():
    rng = np.random.default_rng(4)
    cases = [random_case(rng, "clustered") for _ in range(3)]
    boxes = jnp.asarray(np.stack([c[0] for c in cases]))
    scores = jnp.asarray(np.stack([c[1] for c in cases]))
    thresholds = jnp.asarray([0.3, 0.5, 0.7])
    idx, num = jax.jit(jax.vmap(lambda b, s, t: nms_padded(b, s, t, 20)))(boxes, scores, thresholds)
    for i, (b, s) in enumerate(cases):
        expected = greedy_nms_reference(b, s, float(thresholds[i]))[:20]
        assert np.asarray(idx[i])[:int(num[i])].tolist() == expected


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="boxes"):
        nms_padded(jnp.zeros((5, 3)), jnp.zeros((5,)), 0.5, 2)
    with pytest.raises(ValueError, match="scores"):
        nms_padded(jnp.zeros((5, 4)), jnp.zeros((4,)), 0.5, 2)


def test_greedy_core_handles_gaps_in_valid():
    # Valid boxes may sit anywhere in the priority order (detect masks out candidates past a
    # class's pre-NMS top-k): the walk must not stop at the count of valid boxes.
    boxes = jnp.asarray(np.tile([[0.1, 0.1, 0.3, 0.3]], (40, 1)), jnp.float32)
    valid = jnp.zeros((40,), bool).at[jnp.asarray([25, 39])].set(True)
    groups = jnp.zeros((40,), jnp.int32).at[39].set(1)
    positions, num = jax.jit(greedy_nms_sorted, static_argnums=(4, 5))(boxes, valid, groups, 0.5, 4, 8)
    assert np.asarray(positions).tolist() == [25, 39, -1, -1] and int(num) == 2
