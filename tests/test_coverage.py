"""Default-box coverage (ssd_jax/coverage.py) on hand-worked cases."""

import numpy as np
import pytest

from ssd_jax import anchors, coverage

# One 1x1 map on a 100 px image: two identical 50 px squares centred at (0.5, 0.5) (no ratios).
ONE_SQUARE = anchors.DefaultBoxSpec(image_size=100, feature_map_sizes=(1,), min_sizes=(50,), max_sizes=(50,),
                                    aspect_ratios=((),))


def test_best_iou_of_hand_worked_boxes():
    gt = np.array([[0.25, 0.25, 0.75, 0.75],     # the default box itself: IoU 1
                   [0.5, 0.5, 1.0, 1.0],         # shifted by half a side: 0.0625 / 0.4375 = 1/7
                   [0.25, 0.25, 0.625, 0.625]])  # inside it, 0.375 side: 0.140625 / 0.25 = 0.5625
    best = coverage.best_iou(gt, anchors.default_boxes(ONE_SQUARE))
    np.testing.assert_allclose(best, [1.0, 1 / 7, 0.5625], rtol=1e-6)


def test_positives_count_threshold_matches_and_the_forced_box():
    boxes = anchors.default_boxes(ONE_SQUARE)  # two identical boxes
    # Alone, a covered box gets both default boxes; an uncovered one still gets its forced best box.
    assert coverage.positives_per_box(np.array([[0.25, 0.25, 0.75, 0.75]]), boxes, 0.5).tolist() == [2]
    assert coverage.positives_per_box(np.array([[0.5, 0.5, 1.0, 1.0]]), boxes, 0.5).tolist() == [1]
    # Two boxes on one image: both default boxes prefer the first (IoU 1), and the second forces
    # its best (the first default box, by first maximum) away from it.
    two = np.array([[0.25, 0.25, 0.75, 0.75], [0.25, 0.25, 0.625, 0.625]])
    assert coverage.positives_per_box(two, boxes, 0.5).tolist() == [1, 1]


def test_report_per_class_per_size_and_images_without_boxes():
    split = coverage.SplitBoxes.from_images(
        boxes=[np.array([[0.25, 0.25, 0.75, 0.75]]), np.zeros((0, 4)), np.array([[0.5, 0.5, 1.0, 1.0]])],
        labels=[np.array([1]), np.zeros(0), np.array([2])], image_hw=[(100, 100), (50, 50), (400, 400)])
    rep = coverage.report(split, anchors.default_boxes(ONE_SQUARE), 0.5, ("background", "a", "b"))
    assert rep["num_images"] == 3 and rep["images_without_boxes"] == 1
    assert rep["all"]["boxes"] == 2 and rep["all"]["coverage"] == 0.5
    assert rep["per_class"]["a"]["coverage"] == 1.0 and rep["per_class"]["b"]["coverage"] == 0.0
    # 50x50 px = 2500 (medium: 1024..9216); 200x200 px = 40000 (large).
    assert rep["per_size"]["medium"]["boxes"] == 1 and rep["per_size"]["large"]["boxes"] == 1
    assert rep["per_size"]["small"]["boxes"] == 0
    assert rep["uncovered"].tolist() == [1]


def test_fitted_spec_covers_at_least_as_much_and_prints_as_overrides():
    rng = np.random.default_rng(0)
    # Tall thin boxes (1:5) centred on the 8x8 map's cells: a 1:2 default box reaches IoU
    # 2k / (5 + 2k^2 - 2k) <= 0.46 with them (k = its width over theirs), a 1:4 one 0.81.
    cx, cy = (rng.integers(2, 6, (2, 200)) + 0.5) / 8
    w = rng.uniform(0.06, 0.08, 200)
    boxes = np.stack([cx - w / 2, cy - 2.5 * w, cx + w / 2, cy + 2.5 * w], axis=1)
    split = coverage.SplitBoxes.from_images([b[None] for b in boxes], [np.array([1])] * 200, [(128, 128)] * 200)
    model = anchors.paper_spec((8, 4, 2, 1), image_size=128, aspect_ratios=[(2.0,)] * 4)
    before = coverage.report(split, anchors.default_boxes(model), 0.5, ("bg", "bar"))["all"]["coverage"]
    spec, overrides = coverage.fit_spec(model, split, 0.5)
    after = coverage.report(split, anchors.default_boxes(spec), 0.5, ("bg", "bar"))["all"]["coverage"]
    assert after >= before + 0.3
    assert spec.num_boxes <= 1.5 * model.num_boxes
    assert anchors.spec_from_config(model, overrides)[0] == spec
    assert 4.0 in spec.aspect_ratios[0]
    flags = coverage.overrides_to_flags(overrides)
    assert flags.startswith("--config.anchors.s_min=") and "--config.anchors.aspect_ratios='" in flags


@pytest.mark.parametrize("bad, field", [
    (dict(aspect_ratios=((2.0, 0.0),)), "aspect_ratios"), (dict(sources=(0, 4)), "sources"),
    (dict(s_min=0.5, s_max=0.4), "s_min"), (dict(min_sizes=(10.0,)), "min_sizes"), (dict(clip="edges"), "clip"),
    (dict(aspect_ratios=((2.0,), (3.0,))), "aspect_ratios")])
def test_bad_anchor_configs_name_the_field(bad, field):
    model = anchors.paper_spec((8, 4, 2, 1), image_size=128)
    with pytest.raises(anchors.AnchorConfigError, match=f"config.anchors.{field}"):
        anchors.spec_from_config(model, bad)
