"""VOC AP: hand-worked cases, and a loop-based port of the official devkit on random cases."""

import math
import warnings

import numpy as np
import pytest

from ssd_jax.evaluation import average_precision, voc_map


def gt(boxes, labels, difficult=None):
    out = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "labels": np.asarray(labels, np.int64)}
    if difficult is not None:
        out["difficult"] = np.asarray(difficult, bool)
    return out


def det(boxes, scores, classes):
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "scores": np.asarray(scores, np.float64),
            "classes": np.asarray(classes, np.int64)}


A = [0.1, 0.1, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]
C = [0.1, 0.6, 0.3, 0.9]
FAR = [0.0, 0.0, 0.05, 0.05]  # overlaps none of A, B, C
A_NEAR = [0.12, 0.1, 0.42, 0.4]  # IoU with A = 0.28 * 0.3 / (0.09 + 0.09 - 0.084) = 0.875


# ---------------------------------------------------------------------------------------------
# Hand-worked cases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_07", [True, False])
def test_perfect_detector_has_ap_one(use_07):
    gts = [gt([A, B], [1, 2]), gt([C], [1])]
    dets = [det([A, B], [0.9, 0.8], [1, 2]), det([C], [0.7], [1])]
    r = voc_map(dets, gts, num_classes=3, use_07_metric=use_07)
    np.testing.assert_array_equal(r["ap"][1:], [1.0, 1.0])
    assert math.isnan(r["ap"][0])
    assert r["mAP"] == 1.0
    np.testing.assert_array_equal(r["num_gt"], [0, 2, 1])


@pytest.mark.parametrize("use_07", [True, False])
def test_false_positive_ranked_first(use_07):
    # 2 gts. Ranked: FP (0.9), TP (0.8), TP (0.7).
    # precision 0, 1/2, 2/3; recall 0, 1/2, 1. Envelope: 2/3 everywhere.
    # 11-point: all 11 thresholds have max precision 2/3 -> 2/3. Area: 0.5*2/3 + 0.5*2/3 = 2/3.
    gts = [gt([A], [1]), gt([B], [1])]
    dets = [det([FAR, A], [0.9, 0.8], [1, 1]), det([B], [0.7], [1])]
    r = voc_map(dets, gts, num_classes=2, use_07_metric=use_07)
    assert r["ap"][1] == pytest.approx(2 / 3)
    np.testing.assert_allclose(r["precision"][1], [0, 1 / 2, 2 / 3])
    np.testing.assert_allclose(r["recall"][1], [0, 1 / 2, 1])


def test_eleven_point_and_area_differ_as_worked_out():
    # 4 gts. Ranked: TP (0.9), FP (0.8), TP (0.7).
    # recall 1/4, 1/4, 1/2; precision 1, 1/2, 2/3.
    # 11-point: t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3 (only the recall-1/2 point); t >= .6 -> 0.
    #   AP = (3 * 1 + 3 * 2/3) / 11 = 5/11.
    # Area: envelope 1 on (0, 1/4], 2/3 on (1/4, 1/2], 0 after. AP = 1/4 + 1/4 * 2/3 = 5/12.
    gts = [gt([A, B, C, FAR], [1, 1, 1, 1])]
    dets = [det([A, [0.6, 0.1, 0.9, 0.3], B], [0.9, 0.8, 0.7], [1, 1, 1])]
    r07 = voc_map(dets, gts, num_classes=2, use_07_metric=True)
    r10 = voc_map(dets, gts, num_classes=2, use_07_metric=False)
    assert r07["ap"][1] == pytest.approx(5 / 11)
    assert r10["ap"][1] == pytest.approx(5 / 12)
    assert r07["mAP"] == pytest.approx(5 / 11)


def test_duplicate_detection_is_false_positive():
    # 2 gts. Ranked: A (TP), near-copy of A (duplicate: FP), B (TP).
    # recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # 11-point: t <= .5 (6 thresholds) -> 1; t >= .6 (5) -> 2/3. AP = (6 + 10/3) / 11 = 28/33.
    # Area: 1/2 * 1 + 1/2 * 2/3 = 5/6. (If duplicates were ignored AP would be 1.)
    gts = [gt([A, B], [1, 1])]
    dets = [det([A, A_NEAR, B], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert voc_map(dets, gts, 2, use_07_metric=True)["ap"][1] == pytest.approx(28 / 33)
    assert voc_map(dets, gts, 2, use_07_metric=False)["ap"][1] == pytest.approx(5 / 6)


def test_difficult_only_class_is_nan_and_left_out_of_mean():
    # Class 1: one gt, detected with a FP ranked first -> precision 0, 1/2; recall 0, 1 -> AP 1/2.
    # Class 2: only a difficult gt (detected): no ground truth counts -> NaN, not in the mean.
    gts = [gt([A, B], [1, 2], difficult=[False, True])]
    dets = [det([FAR, A, B], [0.9, 0.8, 0.7], [1, 1, 2])]
    r = voc_map(dets, gts, num_classes=3)
    assert r["ap"][1] == pytest.approx(0.5)
    assert math.isnan(r["ap"][2])
    np.testing.assert_array_equal(r["num_gt"], [0, 1, 0])
    assert r["mAP"] == pytest.approx(0.5)


def test_detection_on_difficult_box_is_ignored():
    # gts: A (normal), B (difficult). Ranked: on B (ignored), on A (TP), FAR (FP).
    # Without the ignored one: precision 1, 1/2; recall 1, 1 -> AP 1.
    # (Counted as FP it would give 1/2; counted as TP with 2 gts it would give recall 1/2.)
    gts = [gt([A, B], [1, 1], difficult=[False, True])]
    dets = [det([B, A, FAR], [0.9, 0.8, 0.7], [1, 1, 1])]
    for use_07 in (True, False):
        r = voc_map(dets, gts, 2, use_07_metric=use_07)
        assert r["ap"][1] == 1.0
    assert r["num_gt"][1] == 1
    assert r["num_detections"][1] == 3
    np.testing.assert_allclose(r["precision"][1], [1, 1 / 2])


def test_match_needs_iou_strictly_greater_than_threshold():
    # IoU of [0, 0, .5, 1] and [0, 0, 1, 1] is exactly 0.5 in floating point (0.5 / 1).
    gts = [gt([[0.0, 0.0, 0.5, 1.0]], [1])]
    dets = [det([[0.0, 0.0, 1.0, 1.0]], [0.9], [1])]
    assert voc_map(dets, gts, 2, iou_threshold=0.5)["ap"][1] == 0.0
    assert voc_map(dets, gts, 2, iou_threshold=0.49)["ap"][1] == 1.0


def test_tied_scores_rank_in_image_order():
    # One TP and one FP with the same score, in different images; 1 gt. The documented tie order
    # (image order) puts the first image first. TP first: precision 1, 1/2 -> AP 1.
    # FP first: precision 0, 1/2; recall 0, 1 -> AP 1/2.
    tp_image = (det([A], [0.5], [1]), gt([A], [1]))
    fp_image = (det([FAR], [0.5], [1]), gt(np.zeros((0, 4)), []))
    for images, expected in (([tp_image, fp_image], 1.0), ([fp_image, tp_image], 0.5)):
        r = voc_map([d for d, _ in images], [g for _, g in images], 2)
        assert r["ap"][1] == pytest.approx(expected)


def test_images_without_detections_or_ground_truth():
    # Image 0: gt A, no detections. Image 1: no gt, one detection (FP). Image 2: gt B, detected.
    # Ranked: FP (0.9), TP (0.3); 2 gts. precision 0, 1/2; recall 0, 1/2.
    # 11-point: t <= .5 (6 thresholds) -> 1/2, else 0 -> 3/11. Area: 1/2 * 1/2 = 1/4.
    gts = [gt([A], [1]), gt(np.zeros((0, 4)), []), gt([B], [1])]
    dets = [det(np.zeros((0, 4)), [], []), det([C], [0.9], [1]), det([B], [0.3], [1])]
    assert voc_map(dets, gts, 2, use_07_metric=True)["ap"][1] == pytest.approx(3 / 11)
    assert voc_map(dets, gts, 2, use_07_metric=False)["ap"][1] == pytest.approx(1 / 4)


def test_class_with_ground_truth_but_no_detections_has_ap_zero():
    gts = [gt([A, B], [1, 2])]
    dets = [det([A], [0.9], [1])]
    r = voc_map(dets, gts, 3)
    np.testing.assert_array_equal(r["ap"][1:], [1.0, 0.0])
    assert r["mAP"] == 0.5


def test_no_ground_truth_at_all_warns_and_gives_nan():
    with pytest.warns(UserWarning, match="no class"):
        r = voc_map([det([A], [0.9], [1])], [gt(np.zeros((0, 4)), [])], 2)
    assert math.isnan(r["mAP"])


@pytest.mark.parametrize("bad, match", [
    (lambda d, g: ([det([A], [0.9], [0])], g), "background"),
    (lambda d, g: ([det([A], [0.9], [5])], g), r"\[1, 2\]"),
    (lambda d, g: ([det([[0.1, np.nan, 0.2, 0.3]], [0.9], [1])], g), "non-finite"),
    (lambda d, g: ([det([A], [np.inf], [1])], g), "non-finite"),
    (lambda d, g: (d, [gt([A], [1]), gt([B], [1])]), "entries"),
    (lambda d, g: ([{"boxes": np.array([A]), "classes": np.array([1])}], g), "scores"),
    (lambda d, g: (d, [{"boxes": np.array([A]), "labels": np.array([1, 1])}]), "labels"),
])
def test_bad_input_raises_clear_error(bad, match):
    dets, gts = bad([det([A], [0.9], [1])], [gt([A], [1])])
    with pytest.raises(ValueError, match=match):
        voc_map(dets, gts, 3)


def test_average_precision_of_empty_curve_is_zero():
    assert average_precision(np.zeros(0), np.zeros(0), True) == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), False) == 0.0


# ---------------------------------------------------------------------------------------------
# Independent reference: the devkit's voc_eval (py-faster-rcnn), loop-based, no +1 pixel.
# ---------------------------------------------------------------------------------------------

def reference_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_voc_eval(detections, ground_truths, cls, ovthresh, use_07_metric):
    class_recs, npos = {}, 0
    for i, g in enumerate(ground_truths):
        sel = g["labels"] == cls
        difficult = g.get("difficult", np.zeros(len(g["labels"]), bool))[sel]
        class_recs[i] = {"bbox": g["boxes"][sel], "difficult": difficult, "det": [False] * int(sel.sum())}
        npos += int(np.sum(~difficult))
    image_ids, confidence, bbs = [], [], []
    for i, d in enumerate(detections):
        for k in range(len(d["scores"])):
            if d["classes"][k] == cls:
                image_ids.append(i)
                confidence.append(d["scores"][k])
                bbs.append(d["boxes"][k])
    if npos == 0:
        return float("nan")
    nd = len(image_ids)
    confidence = np.array(confidence)
    BB = np.array(bbs).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind]
    image_ids = [image_ids[x] for x in sorted_ind]
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d]
        ovmax = -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin, 0.0)
            ih = np.maximum(iymax - iymin, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0]) * (bb[3] - bb[1])
                   + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return reference_voc_ap(rec, prec, use_07_metric)


def random_case(rng, num_images, num_classes):
    """Ground truths with difficult flags, and detections near them (with duplicates) plus noise."""
    gts, dets = [], []
    for _ in range(num_images):
        m = rng.integers(0, 6)
        xy = rng.uniform(0, 0.7, (m, 2))
        wh = rng.uniform(0.05, 0.3, (m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(1, num_classes, m)
        gts.append(gt(boxes, labels, difficult=rng.random(m) < 0.2))
        d_boxes, d_classes = [], []
        for b, lab in zip(boxes, labels):
            for _ in range(rng.choice([0, 1, 1, 2, 3])):  # misses, hits and duplicates
                size = b[2:] - b[:2]
                d_boxes.append(b + rng.normal(0, 0.12, 4) * np.concatenate([size, size]))
                d_classes.append(lab if rng.random() < 0.85 else rng.integers(1, num_classes))
        for _ in range(rng.integers(0, 4)):  # background false positives
            xy = rng.uniform(0, 0.8, 2)
            d_boxes.append(np.concatenate([xy, xy + rng.uniform(0.02, 0.2, 2)]))
            d_classes.append(rng.integers(1, num_classes))
        k = len(d_boxes)
        dets.append(det(np.array(d_boxes).reshape(-1, 4), rng.random(k), np.array(d_classes, np.int64)))
    return dets, gts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
def test_matches_loop_based_devkit_port(seed, use_07, iou_threshold):
    rng = np.random.default_rng(seed)
    num_classes = 5
    dets, gts = random_case(rng, num_images=40, num_classes=num_classes)
    r = voc_map(dets, gts, num_classes, iou_threshold=iou_threshold, use_07_metric=use_07)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [reference_voc_eval(dets, gts, c, iou_threshold, use_07) for c in range(1, num_classes)]
    np.testing.assert_allclose(r["ap"][1:], expected, rtol=0, atol=1e-12)
    assert r["mAP"] == pytest.approx(np.nanmean(expected), abs=1e-12)


def test_shuffling_detections_within_images_changes_nothing():
    rng = np.random.default_rng(11)
    dets, gts = random_case(rng, num_images=30, num_classes=4)
    shuffled = []
    for d in dets:
        p = rng.permutation(len(d["scores"]))
        shuffled.append({k: v[p] for k, v in d.items()})
    for use_07 in (True, False):
        a = voc_map(dets, gts, 4, use_07_metric=use_07)
        b = voc_map(shuffled, gts, 4, use_07_metric=use_07)
        np.testing.assert_array_equal(a["ap"], b["ap"])
        for c in range(1, 4):
            np.testing.assert_array_equal(a["precision"][c], b["precision"][c])
            np.testing.assert_array_equal(a["recall"][c], b["recall"][c])
