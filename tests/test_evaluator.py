"""Evaluator (padding, batching invariance, JAX inputs) and the report helpers."""

import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ssd_jax.evaluation import (
    COCO_METRIC_NAMES,
    Evaluator,
    coco_metrics,
    format_table,
    plot_pr_curves,
    save_json,
    voc_map,
    write_report,
)

NUM_CLASSES = 4
CLASS_NAMES = ["background", "cat", "dog", "raccoon"]
MAX_DETS, MAX_BOXES = 12, 8


def make_split(seed, num_images=23):
    """Per-image gts (some difficult, some images empty) and detections near them plus noise."""
    rng = np.random.default_rng(seed)
    dets, gts, sizes = [], [], []
    for _ in range(num_images):
        m = rng.integers(0, 5)
        xy = rng.uniform(0, 0.7, (m, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (m, 2))], 1)
        labels = rng.integers(1, NUM_CLASSES, m)
        gts.append({"boxes": boxes, "labels": labels, "difficult": rng.random(m) < 0.2})
        k = rng.integers(0, MAX_DETS + 1)
        near = rng.integers(0, max(m, 1), k)
        base = boxes[near] if m else rng.uniform(0, 0.5, (k, 4))
        d_boxes = np.sort(base.reshape(k, 2, 2) + rng.normal(0, 0.03, (k, 2, 2)), axis=1).reshape(k, 4)
        d_classes = labels[near] if m else rng.integers(1, NUM_CLASSES, k)
        d_classes = np.where(rng.random(k) < 0.8, d_classes, rng.integers(1, NUM_CLASSES, k))
        dets.append({"boxes": d_boxes, "scores": rng.random(k), "classes": d_classes})
        sizes.append((int(rng.integers(100, 600)), int(rng.integers(100, 600))))
    return dets, gts, np.array(sizes)


def batches(dets, gts, sizes, batch_size, as_dict=False):
    """Padded batches like the eval pipeline gives; padding filled with misleading values."""
    rng = np.random.default_rng(123)
    for start in range(0, len(dets), batch_size):
        idx = list(range(start, min(start + batch_size, len(dets))))
        b = batch_size
        # Garbage in padded slots: high-score detections and labelled boxes that would change
        # every number if they were counted.
        d_boxes = np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (b, MAX_DETS, 1))
        d_scores = np.full((b, MAX_DETS), 0.99, np.float32)
        d_classes = np.ones((b, MAX_DETS), np.int32)
        num_valid = np.full(b, MAX_DETS, np.int32)
        batch = {"boxes": np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (b, MAX_BOXES, 1)),
                 "labels": np.full((b, MAX_BOXES), 2, np.int32), "mask": np.zeros((b, MAX_BOXES), bool),
                 "difficult": np.zeros((b, MAX_BOXES), bool), "image_id": 1000 + np.arange(b),
                 "orig_size": rng.integers(100, 600, (b, 2)), "valid": np.zeros(b, bool)}
        for j, i in enumerate(idx):
            k, m = len(dets[i]["scores"]), len(gts[i]["labels"])
            d_boxes[j, :k], d_scores[j, :k], d_classes[j, :k] = dets[i]["boxes"], dets[i]["scores"], dets[i]["classes"]
            num_valid[j] = k
            batch["boxes"][j, :m], batch["labels"][j, :m] = gts[i]["boxes"], gts[i]["labels"]
            batch["mask"][j, :m] = True
            batch["difficult"][j, :m] = gts[i]["difficult"]
            batch["image_id"][j], batch["orig_size"][j], batch["valid"][j] = i, sizes[i], True
        fields = {"boxes": d_boxes, "scores": d_scores, "classes": d_classes, "num_valid": num_valid}
        if as_dict:
            yield fields, batch
        else:  # any object with these attributes, here holding JAX arrays
            yield types.SimpleNamespace(**{k: jnp.asarray(v) for k, v in fields.items()}), batch


def evaluate(dets, gts, sizes, batch_size, as_dict=False, **kwargs):
    ev = Evaluator(NUM_CLASSES, class_names=CLASS_NAMES, **kwargs)
    for d, batch in batches(dets, gts, sizes, batch_size, as_dict):
        ev.add_batch(d, batch)
    return ev


def as_float32(items):
    """The evaluator sees float32 arrays, like the pipeline gives; compare on the same values."""
    return [{k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in item.items()} for item in items]


@pytest.fixture(scope="module")
def split():
    return make_split(0)


def assert_same_numbers(a, b):
    np.testing.assert_array_equal(a["ap"], b["ap"])
    np.testing.assert_array_equal(a["num_gt"], b["num_gt"])
    assert a["mAP"] == b["mAP"] or (math.isnan(a["mAP"]) and math.isnan(b["mAP"]))
    for key in COCO_METRIC_NAMES:
        if key in a or key in b:
            assert a[key] == b[key], key


def test_padding_is_ignored_and_matches_functional_api(split):
    dets, gts, sizes = split
    r = evaluate(dets, gts, sizes, batch_size=5).result()
    expected = voc_map(as_float32(dets), as_float32(gts), NUM_CLASSES)
    expected.update(coco_metrics(as_float32(dets), as_float32(gts), sizes))
    assert_same_numbers(r, expected)
    assert r["num_images"] == len(dets)
    assert 0.0 < r["mAP"] < 1.0
    assert r["class_names"] == CLASS_NAMES


@pytest.mark.parametrize("use_07", [True, False])
def test_batch_split_does_not_change_numbers(split, use_07):
    dets, gts, sizes = split
    a = evaluate(dets, gts, sizes, batch_size=4, use_07_metric=use_07).result()
    b = evaluate(dets, gts, sizes, batch_size=7, as_dict=True, use_07_metric=use_07).result()
    c = evaluate(dets, gts, sizes, batch_size=len(dets) + 3, use_07_metric=use_07).result()
    assert_same_numbers(a, b)
    assert_same_numbers(a, c)


def test_shuffling_detections_within_images_does_not_change_numbers(split):
    dets, gts, sizes = split
    rng = np.random.default_rng(5)
    shuffled = []
    for d in dets:
        p = rng.permutation(len(d["scores"]))
        shuffled.append({k: v[p] for k, v in d.items()})
    assert_same_numbers(evaluate(dets, gts, sizes, 6).result(), evaluate(shuffled, gts, sizes, 6).result())


def test_reset_and_options(split):
    dets, gts, sizes = split
    ev = evaluate(dets, gts, sizes, 8, with_coco=False)
    first = ev.result()
    assert "AP" not in first
    ev.reset()
    with pytest.raises(ValueError, match="no images"):
        ev.result()
    for d, batch in batches(dets, gts, sizes, 8):
        ev.add_batch(d, batch)
    assert_same_numbers(first, ev.result())


def test_difficult_and_missing_optional_keys():
    # One image, gt A (difficult) detected: with the difficult flag the class has no gt (NaN);
    # without the "difficult" key it counts and the detection is a TP (AP 1).
    dets = {"boxes": np.array([[[0.1, 0.1, 0.4, 0.4]]]), "scores": np.array([[0.9]]),
            "classes": np.array([[1]]), "num_valid": np.array([1])}
    batch = {"boxes": np.array([[[0.1, 0.1, 0.4, 0.4]]]), "labels": np.array([[1]]),
             "mask": np.array([[True]]), "difficult": np.array([[True]])}
    ev = Evaluator(2, with_coco=False)
    ev.add_batch(dets, batch)
    with pytest.warns(UserWarning, match="no class"):
        assert math.isnan(ev.result()["ap"][1])
    ev = Evaluator(2, with_coco=False)
    ev.add_batch(dets, {k: v for k, v in batch.items() if k != "difficult"})
    assert ev.result()["ap"][1] == 1.0


def test_bad_batches_raise_clear_errors(split):
    dets, gts, sizes = split
    d, batch = next(batches(dets, gts, sizes, 4, as_dict=True))
    with pytest.raises(ValueError, match="orig_size"):
        Evaluator(NUM_CLASSES).add_batch(d, {k: v for k, v in batch.items() if k != "orig_size"})
    with pytest.raises(ValueError, match="num_valid"):
        Evaluator(NUM_CLASSES).add_batch({k: v for k, v in d.items() if k != "num_valid"}, batch)
    with pytest.raises(ValueError, match="mask"):
        Evaluator(NUM_CLASSES).add_batch(d, dict(batch, mask=batch["mask"][:, :2]))
    with pytest.raises(ValueError, match="class_names"):
        Evaluator(NUM_CLASSES, class_names=["a"])


def test_duplicate_image_id_warns(split):
    dets, gts, sizes = split
    ev = Evaluator(NUM_CLASSES, with_coco=False)
    d, batch = next(batches(dets, gts, sizes, 4, as_dict=True))
    ev.add_batch(d, batch)
    with pytest.warns(UserWarning, match="added twice"):
        ev.add_batch(d, batch)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def result(split):
    dets, gts, sizes = split
    r = evaluate(dets, gts, sizes, 8).result()
    r["ap"] = r["ap"].copy()
    r["ap"][3] = np.nan  # pretend class 3 has no ground truth
    return r


def test_format_table(result):
    text = format_table(result, CLASS_NAMES)
    lines = text.splitlines()
    assert "background" not in text
    dog = next(line for line in lines if line.startswith("dog"))
    assert f"{100 * result['ap'][2]:6.2f}" in dog and dog.split()[-1] == str(result["num_gt"][2])
    assert next(line for line in lines if line.startswith("raccoon")).split()[1] == "n/a"
    assert f"{100 * result['mAP']:6.2f}" in next(line for line in lines if line.startswith("mean"))
    assert next(line for line in lines if line.startswith("AP50 ")).split()[1] == f"{100 * result['AP50']:.2f}"
    assert f"images: {result['num_images']}" in text


def test_save_json_round_trip(result, tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    save_json(result, str(path))
    data = json.loads(path.read_text())
    assert data["ap"][0] is None and data["ap"][3] is None
    assert data["ap"][1] == pytest.approx(result["ap"][1])
    assert data["num_gt"] == result["num_gt"].tolist()
    assert data["AP"] == pytest.approx(result["AP"])
    assert "precision" not in data
    save_json(result, str(path), include_curves=True)
    assert len(json.loads(path.read_text())["precision"][1]) == len(result["precision"][1])


def test_plot_and_write_report(result, tmp_path):
    path = tmp_path / "pr.png"
    plot_pr_curves(result, CLASS_NAMES, str(path))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200
    paths = write_report(result, str(tmp_path / "report"), CLASS_NAMES, prefix="val")
    assert paths["table"] == format_table(result, CLASS_NAMES)
    for key in ("table_path", "json_path", "pr_path"):
        assert (tmp_path / "report").joinpath(paths[key].split("/")[-1]).stat().st_size > 0


@pytest.mark.parametrize("use_07,expected", [(True, 6 / 11), (False, 0.5)])
def test_missed_ground_truth_lowers_ap_by_hand(use_07, expected):
    # One class, one image, 4 ground truths of which the 2 detections find 2 exactly: precision
    # 1, 1 at recall 1/4, 1/2. VOC07: the 11 recall thresholds 0..0.5 reach precision 1, the 5
    # above none: 6/11; area under the envelope: 0.5. With only the 2 found boxes as ground
    # truth (truncation to max_boxes=2) it would have been 1.0.
    gt = np.array([[0.0, 0.0, 0.4, 0.4], [0.5, 0.0, 0.9, 0.4], [0.0, 0.5, 0.4, 0.9], [0.5, 0.5, 0.9, 0.9]])
    dets = dict(boxes=gt[None, :2], scores=np.array([[0.9, 0.8]]), classes=np.ones((1, 2), np.int32),
                num_valid=np.array([2]))
    for boxes, want in ((gt, expected), (gt[:2], 1.0)):
        evaluator = Evaluator(2, use_07_metric=use_07, with_coco=False)
        evaluator.add_batch(dets, {"boxes": boxes[None], "labels": np.ones((1, len(boxes)), np.int32)})
        result = evaluator.result()
        assert result["ap"][1] == pytest.approx(want) and result["num_gt"][1] == len(boxes)


def test_box_dimension_may_change_between_batches(split):
    dets, gts, sizes = split
    one = evaluate(dets, gts, sizes, batch_size=5).result()
    evaluator = Evaluator(NUM_CLASSES, class_names=CLASS_NAMES)
    for i, (d, g) in enumerate(zip(dets, gts)):  # image i alone, padded to a box dimension of its own
        n, m = len(g["boxes"]), len(g["boxes"]) + i % 3
        boxes, labels, difficult = np.zeros((1, m, 4), np.float32), np.zeros((1, m), np.int32), np.zeros((1, m), bool)
        boxes[0, :n], labels[0, :n], difficult[0, :n] = g["boxes"], g["labels"], g["difficult"]
        fields = {key: np.asarray(d[key], np.float32 if key != "classes" else np.int32)[None]
                  for key in ("boxes", "scores", "classes")}
        evaluator.add_batch(dict(fields, num_valid=np.array([len(d["scores"])])),
                            dict(boxes=boxes, labels=labels, mask=np.arange(m)[None] < n, difficult=difficult,
                                 orig_size=sizes[i:i + 1]))
    assert_same_numbers(evaluator.result(), one)
