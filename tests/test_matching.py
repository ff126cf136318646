"""Matching against a slow NumPy reference, hand-built cases and bad input."""

import jax
import numpy as np
import pytest

from ssd_jax import anchors, matching

SMALL_SPEC = anchors.DefaultBoxSpec(image_size=100, feature_map_sizes=(5, 3, 1), min_sizes=(20, 45, 70),
                                    max_sizes=(45, 70, 95), aspect_ratios=((2,), (2, 3), (2,)))
ANCHORS = anchors.default_boxes(SMALL_SPEC)  # 5*5*4 + 9*6 + 4 = 158 boxes
match_jit = jax.jit(matching.match, static_argnames=("iou_threshold", "mode", "variances"))


def np_iou(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for k, q in enumerate(b):
            iw = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
            ih = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, k] = inter / union if union > 0 else 0.0
    return out


def np_match(anchors_center, gt_boxes, gt_labels, gt_mask, threshold=0.5, mode="argmax"):
    """Slow reference written from the paper / torchvision / Caffe descriptions."""
    ac = np.concatenate([anchors_center[:, :2] - anchors_center[:, 2:] / 2,
                         anchors_center[:, :2] + anchors_center[:, 2:] / 2], 1)
    valid = []
    for box, m in zip(gt_boxes, gt_mask):
        b = np.clip(box, 0, 1) if np.all(np.isfinite(box)) else None
        valid.append(bool(m) and b is not None and b[2] > b[0] and b[3] > b[1])
    gts = [np.clip(b, 0, 1) if v else None for b, v in zip(gt_boxes, valid)]
    num_a = len(ac)
    iou = np.full((len(gt_boxes), num_a), -1.0)
    for j, g in enumerate(gts):
        if g is not None:
            iou[j] = np_iou(g[None], ac)[0]
    matched = np.full(num_a, -1)
    forced = np.zeros(num_a, bool)
    if mode == "argmax":
        for j in range(len(gts)):  # sequential writes: later ground truths win
            if valid[j] and iou[j].max() > 0:
                matched[int(np.argmax(iou[j]))] = j
                forced[int(np.argmax(iou[j]))] = True
    else:
        work = iou.copy()
        for _ in range(len(gts)):
            j, k = np.unravel_index(np.argmax(work), work.shape)
            if work[j, k] <= 0:
                break
            matched[k], forced[k] = j, True
            work[j, :] = -1
            work[:, k] = -1
    for k in range(num_a):
        if not forced[k] and len(gts) and iou[:, k].max() >= threshold:
            matched[k] = int(np.argmax(iou[:, k]))
    labels = np.where(matched >= 0, np.asarray(gt_labels)[np.maximum(matched, 0)], 0)
    targets = np.zeros((num_a, 4))
    for k in np.nonzero(matched >= 0)[0]:
        g = gts[matched[k]]
        d = anchors_center[k].astype(np.float64)
        gc = [(g[0] + g[2]) / 2, (g[1] + g[3]) / 2, g[2] - g[0], g[3] - g[1]]
        targets[k] = [(gc[0] - d[0]) / (0.1 * d[2]), (gc[1] - d[1]) / (0.1 * d[3]),
                      np.log(gc[2] / d[2]) / 0.2, np.log(gc[3] / d[3]) / 0.2]
    return targets, labels


def random_case(rng, m=8, n_valid=5):
    xy = rng.uniform(-0.1, 0.85, (m, 2))
    wh = rng.uniform(0.03, 0.6, (m, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    labels = rng.integers(1, 6, m).astype(np.int32)
    mask = np.arange(m) < n_valid
    return boxes, labels, mask


@pytest.fixture(scope="module")
def jit_match():
    return {mode: jax.jit(lambda b, l, m, mode=mode: matching.match(ANCHORS, b, l, m, mode=mode))
            for mode in matching.MODES}


def has_near_tie(boxes, mask, tol=1e-5):
    """True when float32 rounding could flip an arg-max or a threshold test of this case."""
    ac = np.concatenate([ANCHORS[:, :2] - ANCHORS[:, 2:] / 2, ANCHORS[:, :2] + ANCHORS[:, 2:] / 2], 1)
    q = np_iou(np.clip(boxes[mask], 0, 1), ac)
    if len(q) == 0:
        return False
    top_rows = np.sort(q, axis=1)[:, -2:]
    top_cols = np.sort(q, axis=0)[-2:] if len(q) > 1 else np.zeros((2, q.shape[1]))
    return bool(np.any((top_rows[:, 1] > 0) & (top_rows[:, 1] - top_rows[:, 0] < tol))
                or np.any((top_cols[1] > 0) & (top_cols[1] - top_cols[0] < tol))
                or np.any(np.abs(q - 0.5) < tol))


@pytest.mark.parametrize("mode", matching.MODES)
def test_matches_numpy_reference_on_random_inputs(jit_match, mode):
    rng = np.random.default_rng(42)
    trial = 0
    while trial < 25:
        boxes, labels, mask = random_case(rng, n_valid=int(rng.integers(0, 9)))
        if has_near_tie(boxes, mask):  # float32 vs float64 may legitimately disagree there
            continue
        trial += 1
        got = jit_match[mode](boxes, labels, mask)
        want_t, want_l = np_match(ANCHORS, boxes, labels, mask, mode=mode)
        np.testing.assert_array_equal(got.labels, want_l, err_msg=f"trial {trial}")
        np.testing.assert_allclose(got.loc_targets, want_t, atol=2e-4, err_msg=f"trial {trial}")


def test_every_valid_ground_truth_is_matched_on_ssd300():
    spec_anchors = anchors.default_boxes(anchors.SSD300_VOC)
    rng = np.random.default_rng(3)
    boxes, _, mask = random_case(rng, m=20, n_valid=20)
    boxes = np.clip(boxes, 0, 1)
    labels = np.arange(1, 21, dtype=np.int32)  # a distinct label per ground truth
    res = match_jit(spec_anchors, boxes, labels, mask)
    assert set(np.unique(res.labels)) - {0} == set(range(1, 21))
    pos = np.asarray(res.labels) > 0
    assert np.all(np.asarray(res.matched_iou)[pos] > 0)


def test_hand_built_case_threshold_and_forced_match():
    anchors_c = np.array([[0.25, 0.25, 0.5, 0.5],   # corners (0, 0, .5, .5)
                          [0.75, 0.75, 0.5, 0.5],   # corners (.5, .5, 1, 1)
                          [0.5, 0.5, 1.0, 1.0]], np.float32)
    # gt A = (0, 0, .5, .6): IoU .25/.3 = .833 with box 0 and .3/1 = .3 with box 2 (below 0.5).
    # gt B = (.6, .6, .9, .9): IoU .09/.25 = .36 with box 1 (its best: forced), .09 with box 2.
    gt = np.array([[0.0, 0.0, 0.5, 0.6], [0.6, 0.6, 0.9, 0.9], [0, 0, 0, 0]], np.float32)
    res = match_jit(anchors_c, gt, np.array([3, 7, 9], np.int32), np.array([True, True, False]))
    np.testing.assert_array_equal(res.labels, [3, 7, 0])
    np.testing.assert_allclose(res.matched_iou, [0.25 / 0.3, 0.36, 0.3], rtol=1e-5)
    np.testing.assert_allclose(res.loc_targets[2], 0.0)
    np.testing.assert_allclose(res.loc_targets[1], [(0.75 - 0.75) / 0.05, 0.0, np.log(0.6) / 0.2,
                                                    np.log(0.6) / 0.2], atol=1e-5)


def test_contested_box_goes_to_the_later_ground_truth_in_argmax_mode():
    anchors_c = np.array([[0.5, 0.5, 0.4, 0.4], [0.1, 0.1, 0.05, 0.05]], np.float32)
    gt = np.array([[0.3, 0.3, 0.7, 0.7], [0.31, 0.31, 0.69, 0.69]], np.float32)
    res = match_jit(anchors_c, gt, np.array([1, 2], np.int32), np.array([True, True]))
    assert int(res.labels[0]) == 2
    bip = match_jit(anchors_c, gt, np.array([1, 2], np.int32), np.array([True, True]), mode="bipartite")
    assert int(bip.labels[0]) == 1  # bipartite: the higher IoU pair (exact overlap) is taken first


def test_no_ground_truth_gives_all_background_and_finite_targets():
    gt = np.zeros((4, 4), np.float32)
    res = match_jit(ANCHORS, gt, np.zeros(4, np.int32), np.zeros(4, bool))
    assert np.all(np.asarray(res.labels) == 0)
    assert np.all(np.asarray(res.loc_targets) == 0)


def test_degenerate_ground_truths_are_padding_and_never_nan():
    gt = np.array([[0.5, 0.5, 0.4, 0.9],        # xmin > xmax
                   [0.2, 0.2, 0.2, 0.6],        # zero width
                   [np.nan, 0.1, 0.5, 0.5],     # NaN
                   [np.inf, 0.1, 0.5, 0.5],     # inf
                   [1.2, 1.2, 1.5, 1.5],        # fully outside: empty after clipping
                   [-0.2, 0.1, 0.4, 0.5]],      # partly outside: clipped and kept
                  np.float32)
    labels = np.arange(1, 7, dtype=np.int32)
    res = match_jit(ANCHORS, gt, labels, np.ones(6, bool))
    assert np.all(np.isfinite(res.loc_targets)) and np.all(np.isfinite(res.matched_iou))
    assert set(np.unique(res.labels)) == {0, 6}
    grad = jax.jit(jax.grad(lambda g: matching.match(ANCHORS, g, labels, np.ones(6, bool)).loc_targets.sum()))(gt)
    assert np.all(np.isfinite(grad))


def test_vmap_batch_equals_python_loop():
    rng = np.random.default_rng(7)
    cases = [random_case(rng) for _ in range(4)]
    b, l, m = (np.stack(x) for x in zip(*cases))
    batched = jax.jit(lambda b, l, m: matching.match_batch(ANCHORS, b, l, m))(b, l, m)
    for i, case in enumerate(cases):
        single = match_jit(ANCHORS, *case)
        np.testing.assert_array_equal(batched.labels[i], single.labels)
        np.testing.assert_allclose(batched.loc_targets[i], single.loc_targets, atol=1e-5)


def test_jit_equals_eager():
    boxes, labels, mask = random_case(np.random.default_rng(11))
    eager = matching.match(ANCHORS, boxes, labels, mask)
    jitted = jax.jit(matching.match)(ANCHORS, boxes, labels, mask)
    np.testing.assert_array_equal(eager.labels, jitted.labels)
    np.testing.assert_allclose(eager.loc_targets, jitted.loc_targets, atol=1e-6)


def test_bad_shapes_and_dtypes_name_the_argument():
    b = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="gt_labels"):
        matching.match(ANCHORS, b, np.zeros(2, np.int32), np.ones(3, bool))
    with pytest.raises(ValueError, match="gt_boxes"):
        matching.match(ANCHORS, np.zeros((3, 5), np.float32), np.zeros(3, np.int32), np.ones(3, bool))
    with pytest.raises(TypeError, match="gt_mask"):
        matching.match(ANCHORS, b, np.zeros(3, np.int32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="gt_labels"):
        matching.match(ANCHORS, b, np.zeros(3, np.float32), np.ones(3, bool))
    with pytest.raises(ValueError, match="mode"):
        matching.match(ANCHORS, b, np.zeros(3, np.int32), np.ones(3, bool), mode="hungarian")
