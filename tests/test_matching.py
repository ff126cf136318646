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
    """IoU ``[len(a), len(b)]`` of corner boxes, in float64."""
    a = a.astype(np.float64)[:, None]
    b = b.astype(np.float64)[None]
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    union = area_a + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def corners(anchors_center):
    return np.concatenate([anchors_center[:, :2] - anchors_center[:, 2:] / 2,
                           anchors_center[:, :2] + anchors_center[:, 2:] / 2], 1)


TIE = 2.0 ** -20  # IoUs within this fraction of the larger one are tied (matching module docstring)


def tied(value, best):
    return value >= best - np.abs(best) * TIE


def first_tied(row, best):
    return next(k for k, v in enumerate(row) if tied(v, best))


def np_match(anchors_center, gt_boxes, gt_labels, gt_mask, threshold=0.5, mode="argmax"):
    """Slow reference written from the paper / torchvision / Caffe descriptions, ties to the lowest index."""
    ac = corners(anchors_center)
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
        for j in range(len(gts)):  # sequential writes: later ground truths win a contested box
            if valid[j] and iou[j].max() > 0:
                k = first_tied(iou[j], iou[j].max())  # torch/np argmax: the first maximum
                matched[k], forced[k] = j, True
    else:
        work = iou.copy()
        for _ in range(len(gts)):
            best = work.max()
            if best <= 0:
                break
            k, j = np.argwhere(tied(work, best).T)[0]  # Caffe's scan order: box-major
            matched[k], forced[k] = j, True
            work[j, :] = -1
            work[:, k] = -1
    for k in range(num_a):
        if forced[k] or not len(gts) or iou[:, k].max() < threshold:
            continue
        kept = 0  # torchvision's argmax over ground truths: a later one must beat the kept one
        for j in range(1, len(gts)):
            if iou[j, k] - abs(iou[j, k]) * TIE > iou[kept, k]:
                kept = j
        matched[k] = kept
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
    return {mode: jax.jit(lambda b, lab, m, mode=mode: matching.match(ANCHORS, b, lab, m, mode=mode))
            for mode in matching.MODES}


def is_ambiguous(boxes, mask, anchors_center=ANCHORS, threshold=0.5):
    """True when float32 rounding could decide a tie or a threshold test of this case.

    Float32 IoUs differ from float64 ones by up to ~3e-7 relative, so two IoUs whose relative gap
    is near the tie tolerance may be tied in one and not the other; real ties (gap ~0) and clear
    wins are unambiguous, as are IoUs clear of the threshold.
    """
    q = np_iou(np.clip(boxes[mask], 0, 1), corners(anchors_center))
    if len(q) == 0:
        return False

    def near_tie(values):  # two values whose relative gap is near the tie tolerance
        v = np.unique(values[values > 0])
        lo, hi = np.searchsorted(v, v * (1 + 0.2 * TIE)), np.searchsorted(v, v * (1 + 2 * TIE), side="right")
        return bool(np.any(hi > lo))

    top = np.sort(q, axis=1)[:, -3:]  # forced matches: each row's best few (both modes)
    columns = q[:, q.max(0) >= threshold - 1e-3]  # step 2: the ground truths competing for a box
    return (near_tie(top.ravel()) or any(near_tie(c) for c in columns.T)
            or bool(np.any(np.abs(q - threshold) < 1e-6)))


@pytest.mark.parametrize("mode", matching.MODES)
def test_matches_numpy_reference_on_random_inputs(jit_match, mode):
    rng = np.random.default_rng(42)
    trial = 0
    while trial < 25:
        boxes, labels, mask = random_case(rng, n_valid=int(rng.integers(0, 9)))
        if is_ambiguous(boxes, mask):  # float32 vs float64 may legitimately disagree there
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
    boxes, labels, mask = (np.stack(x) for x in zip(*cases))
    batched = jax.jit(lambda b, lab, m: matching.match_batch(ANCHORS, b, lab, m))(boxes, labels, mask)
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


def test_ssd300_random_and_mirror_symmetric_boxes_match_numpy_reference_with_ties_to_lowest_index():
    """Ground truths centred between two horizontally adjacent default boxes of one shape: both
    overlap it equally (up to rounding), so each forced match is a tie the lower index must win."""
    spec_anchors = np.asarray(anchors.default_boxes(anchors.SSD300_VOC))
    fns = {mode: jax.jit(lambda b, lab, m, mode=mode: matching.match(spec_anchors, b, lab, m, mode=mode))
           for mode in matching.MODES}
    rng = np.random.default_rng(5)
    ac = corners(spec_anchors)
    checked = forced_ties = 0
    for _ in range(20):
        boxes, labels, mask = random_case(rng, m=5, n_valid=5)
        for i in range(3):  # 3 of the 5 ground truths: mirror-symmetric between two default boxes
            k = int(rng.integers(0, len(spec_anchors)))
            same = np.nonzero(np.all(spec_anchors[:, 1:] == spec_anchors[k, 1:], axis=1)
                              & (spec_anchors[:, 0] > spec_anchors[k, 0]))[0]
            if len(same) == 0:
                continue
            right = same[np.argmin(spec_anchors[same, 0])]
            cx, cy = (spec_anchors[k, 0] + spec_anchors[right, 0]) / 2, spec_anchors[k, 1]
            w, h = spec_anchors[k, 2:] * rng.uniform(0.7, 1.5, 2)
            boxes[i] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if is_ambiguous(boxes, mask, spec_anchors):
            continue
        q = np_iou(np.clip(boxes, 0, 1), ac)
        forced_ties += sum(int(np.sum(tied(row, row.max())) > 1) for row in q)
        checked += 1
        for mode, fn in fns.items():
            got = fn(boxes, labels, mask)
            want_t, want_l = np_match(spec_anchors, boxes, labels, mask, mode=mode)
            np.testing.assert_array_equal(got.labels, want_l, err_msg=f"{mode}, case {checked}")
            np.testing.assert_allclose(got.loc_targets, want_t, atol=5e-4, err_msg=f"{mode}, case {checked}")
    assert checked >= 6 and forced_ties >= 6  # enough cases, and they did exercise ties


def tie_anchors(num, low, high, low_on_left=True):
    """``num`` far-away 0.01-wide default boxes, except boxes ``low`` and ``high``: 0.25 squares
    centred at x = 0.375 and 0.625, y = 0.5 (which one is left is ``low_on_left``)."""
    a = np.tile(np.array([[0.02, 0.02, 0.01, 0.01]], np.float32), (num, 1))
    left, right = (low, high) if low_on_left else (high, low)
    a[left] = [0.375, 0.5, 0.25, 0.25]
    a[right] = [0.625, 0.5, 0.25, 0.25]
    return a


@pytest.mark.parametrize("mode", matching.MODES)
@pytest.mark.parametrize("low,high,low_on_left", [(1, 2, True), (1, 2, False), (255, 256, False),
                                                  (10, 700, True), (10, 700, False)])
def test_bit_identical_tie_forces_the_lower_default_box_index(mode, low, high, low_on_left):
    # Ground truth (.375, .375, .625, .625) is mirror-symmetric between the two 0.25 squares; all
    # numbers are dyadic, so both IoUs are exactly (.125 * .25) / (2 * .0625 - .03125) = 1/3.
    a = tie_anchors(800, low, high, low_on_left)
    gt = np.array([[0.375, 0.375, 0.625, 0.625]], np.float32)
    res = match_jit(a, gt, np.array([4], np.int32), np.array([True]), mode=mode)
    assert np.nonzero(np.asarray(res.labels))[0].tolist() == [low]
    np.testing.assert_allclose(res.matched_iou[low], 1 / 3, rtol=1e-6)


@pytest.mark.parametrize("gt_order", [(0, 1), (1, 0)])
def test_default_box_tied_between_two_ground_truths_goes_to_the_first(gt_order):
    # Default box 0 is (.375, .375, .625, .625); ground truths L = (.25, .375, .5, .625) and
    # R = (.5, .375, .75, .625) overlap it with IoU exactly 1/3 each. Boxes 1 and 2 equal L and R, so
    # they take the forced matches and box 0 is matched in step 2 (threshold 0.3): to the first.
    a = np.array([[0.5, 0.5, 0.25, 0.25], [0.375, 0.5, 0.25, 0.25], [0.625, 0.5, 0.25, 0.25]], np.float32)
    both = np.array([[0.25, 0.375, 0.5, 0.625], [0.5, 0.375, 0.75, 0.625]], np.float32)
    gt, labels = both[list(gt_order)], np.array([5, 6], np.int32)[list(gt_order)]
    for mode in matching.MODES:
        res = match_jit(a, gt, labels, np.array([True, True]), iou_threshold=0.3, mode=mode)
        np.testing.assert_array_equal(res.labels, [labels[0], 5, 6])
        np.testing.assert_allclose(res.matched_iou, [1 / 3, 1, 1], rtol=1e-6)


def test_ssd300_forced_boxes_of_many_mirror_symmetric_ground_truths_are_the_first_tied():
    """Forced matches only (threshold above 1): each ground truth's box must be the lowest-index box
    tied with its best IoU in float64, over many symmetric ground truths (ties about half the time)."""
    sa = np.asarray(anchors.default_boxes(anchors.SSD300_VOC))
    rng = np.random.default_rng(8)
    batch, m = 64, 5
    k = rng.integers(0, len(sa), (batch, m))
    right = k.copy()
    for idx, a in np.ndenumerate(k):  # the next default box to the right with the same shape and row
        same = np.nonzero(np.all(sa[:, 1:] == sa[a, 1:], axis=1) & (sa[:, 0] > sa[a, 0]))[0]
        right[idx] = same[np.argmin(sa[same, 0])] if len(same) else a
    centre = (sa[k, :2] + sa[right, :2]) / 2
    half = sa[k, 2:] * rng.uniform(0.7, 1.5, (batch, m, 2)) / 2
    boxes = np.clip(np.concatenate([centre - half, centre + half], -1), 0, 1).astype(np.float32)
    labels = np.tile(np.arange(1, m + 1, dtype=np.int32), (batch, 1))
    got = np.asarray(jax.jit(lambda b, lab, v: matching.match_batch(sa, b, lab, v, iou_threshold=1.5).labels)(
        boxes, labels, np.ones((batch, m), bool)))
    checked = ties = 0
    for i in range(batch):
        q = np_iou(boxes[i], corners(sa))
        top = np.sort(q, axis=1)[:, -3:]
        gaps = (top[:, -1:] - top[:, :-1]) / top[:, -1:]
        for j in range(m):
            if np.any((gaps[j] > 0.2 * TIE) & (gaps[j] < 2 * TIE)):
                continue  # float32 rounding could decide this tie
            k = first_tied(q[j], q[j].max())
            mine = np.nonzero(got[i] == j + 1)[0].tolist()
            # Its first tied box, unless a later ground truth claimed the same box (later wins).
            assert mine == [k] or (mine == [] and got[i, k] > j + 1), (i, j, k, mine)
            checked += 1
            ties += int(gaps[j, -1] <= 0.2 * TIE)
    assert checked >= 100 and ties >= 50
