"""COCO metrics: hand-worked values, and equality with pycocotools driven directly in pixels."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_jax.evaluation import COCO_METRIC_NAMES, coco_metrics

# (height, width) per image, and pixel boxes [x0, y0, x1, y1] with small (< 32^2), medium and
# large (> 96^2) areas.
SIZES = np.array([[300, 500], [480, 640]])
PIXEL_BOXES = [np.array([[10, 20, 30, 40], [100, 50, 160, 110], [200, 60, 420, 280]], np.float64),
               np.array([[5, 5, 25, 29], [300, 200, 360, 250], [50, 100, 450, 460]], np.float64)]
PIXEL_LABELS = [np.array([1, 2, 1]), np.array([2, 1, 2])]


def normalise(boxes, size):
    h, w = size
    return boxes / np.array([w, h, w, h], np.float64)


def ground_truths():
    return [{"boxes": normalise(b, s), "labels": lab} for b, s, lab in zip(PIXEL_BOXES, SIZES, PIXEL_LABELS)]


def shifted_pixel_boxes(boxes, fraction):
    """Shift each box right by ``fraction`` of its width: IoU = (1 - f) / (1 + f)."""
    width = boxes[:, 2] - boxes[:, 0]
    return boxes + np.stack([width, 0 * width, width, 0 * width], 1) * fraction


def test_perfect_detections_give_one_everywhere():
    dets = [{"boxes": g["boxes"], "scores": np.linspace(0.9, 0.5, len(g["labels"])), "classes": g["labels"]}
            for g in ground_truths()]
    r = coco_metrics(dets, ground_truths(), SIZES)
    assert set(r) == set(COCO_METRIC_NAMES)
    for key in COCO_METRIC_NAMES:
        if key != "AR1":
            assert r[key] == pytest.approx(1.0), key
    # AR1 keeps 1 detection per image and category: each category has 2 boxes in one image and 1
    # in the other, so 2 of its 3 boxes can be recalled -> 2/3.
    assert r["AR1"] == pytest.approx(2 / 3)


def test_shift_gives_hand_worked_ap():
    # Shift by 10% of the width: IoU = 0.9 / 1.1 = 0.818 for every box. The match succeeds at the
    # IoU thresholds .50, .55, ..., .80 (7 of 10) and fails at .85, .90, .95, with AP 1 or 0 each:
    # AP = 0.7, AP50 = AP75 = 1, AR100 = 0.7.
    dets = [{"boxes": normalise(shifted_pixel_boxes(b, 0.1), s), "scores": np.full(len(lab), 0.9), "classes": lab}
            for b, s, lab in zip(PIXEL_BOXES, SIZES, PIXEL_LABELS)]
    r = coco_metrics(dets, ground_truths(), SIZES)
    assert r["AP"] == pytest.approx(0.7)
    assert r["AP50"] == pytest.approx(1.0)
    assert r["AP75"] == pytest.approx(1.0)
    assert r["AR100"] == pytest.approx(0.7)


def direct_pycocotools(pixel_dets, category_ids, crowd=None):
    """COCOeval on gt/dt objects built here in absolute pixels, [x, y, w, h]."""
    images = [{"id": i, "height": int(h), "width": int(w)} for i, (h, w) in enumerate(SIZES)]
    anns = []
    for i, (boxes, labels) in enumerate(zip(PIXEL_BOXES, PIXEL_LABELS)):
        for j, (b, lab) in enumerate(zip(boxes, labels)):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": category_ids[lab],
                         "bbox": [b[0], b[1], w, h], "area": w * h,
                         "iscrowd": 0 if crowd is None else int(crowd[i][j])})
    results = []
    for i, (boxes, scores, labels) in enumerate(pixel_dets):
        for b, s, lab in zip(boxes, scores, labels):
            results.append({"image_id": i, "category_id": category_ids[lab],
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns,
                           "categories": [{"id": c} for c in sorted(set(category_ids.values()))]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        e = COCOeval(coco_gt, coco_dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return dict(zip(COCO_METRIC_NAMES, e.stats))


@pytest.mark.parametrize("seed", range(3))
def test_equals_pycocotools_built_in_pixels(seed):
    rng = np.random.default_rng(seed)
    category_ids = {1: 18, 2: 44}
    pixel_dets = []
    for boxes, labels, (h, w) in zip(PIXEL_BOXES, PIXEL_LABELS, SIZES):
        shifted = shifted_pixel_boxes(boxes, rng.uniform(0.0, 0.3, (len(boxes), 1)))
        x0, y0 = rng.uniform(0, w - 60), rng.uniform(0, h - 60)
        noise = np.array([[x0, y0, x0 + 50, y0 + 40], boxes[0] + 3])
        pixel_dets.append((np.concatenate([shifted, noise]), rng.random(len(boxes) + 2),
                           np.concatenate([labels, [1, 2]])))
    dets = [{"boxes": normalise(b, s), "scores": sc, "classes": lab} for (b, sc, lab), s in zip(pixel_dets, SIZES)]
    ours = coco_metrics(dets, ground_truths(), SIZES, category_ids=category_ids)
    theirs = direct_pycocotools(pixel_dets, category_ids)
    assert 0.0 < ours["AP"] < 1.0
    for key in COCO_METRIC_NAMES:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key


def test_iscrowd_key_is_used():
    # The last box of each image is a crowd region with no detection: COCO ignores it, AP stays 1.
    crowd = [np.array([0, 0, 1]), np.array([0, 0, 1])]
    gts = [dict(g, iscrowd=c) for g, c in zip(ground_truths(), crowd)]
    pixel_dets = [(b[:2], np.array([0.9, 0.8]), lab[:2]) for b, lab in zip(PIXEL_BOXES, PIXEL_LABELS)]
    dets = [{"boxes": normalise(b, s), "scores": sc, "classes": lab} for (b, sc, lab), s in zip(pixel_dets, SIZES)]
    ours = coco_metrics(dets, gts, SIZES)
    theirs = direct_pycocotools(pixel_dets, {1: 1, 2: 2}, crowd=crowd)
    assert ours["AP"] == pytest.approx(1.0)
    for key in COCO_METRIC_NAMES:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key


def test_no_detections_gives_zero_or_minus_one():
    # Only the large boxes as ground truth: small/medium ranges have nothing to average (-1).
    gts = [{"boxes": g["boxes"][2:], "labels": g["labels"][2:]} for g in ground_truths()]
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, np.int64)}] * 2
    r = coco_metrics(empty, gts, SIZES)
    for key in ("AP", "AP50", "AP75", "APl", "AR1", "AR10", "AR100", "ARl"):
        assert r[key] == 0.0, key
    for key in ("APs", "APm", "ARs", "ARm"):
        assert r[key] == -1.0, key


def test_pycocotools_output_is_silenced(capsys):
    dets = [{"boxes": g["boxes"], "scores": np.ones(len(g["labels"])), "classes": g["labels"]}
            for g in ground_truths()]
    coco_metrics(dets, ground_truths(), SIZES)
    assert capsys.readouterr().out == ""


def test_bad_input_raises_clear_error():
    dets = [{"boxes": g["boxes"], "scores": np.ones(len(g["labels"])), "classes": g["labels"]}
            for g in ground_truths()]
    with pytest.raises(ValueError, match="image_sizes"):
        coco_metrics(dets, ground_truths(), SIZES[:1])
    with pytest.raises(ValueError, match="label 2"):
        coco_metrics(dets, ground_truths(), SIZES, category_ids={1: 7})
    with pytest.raises(ValueError, match="entries"):
        coco_metrics(dets[:1], ground_truths(), SIZES)
