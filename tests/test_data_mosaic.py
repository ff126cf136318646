"""Mosaic augmentation: the tile arithmetic by hand, and mosaics in the training pipeline."""

import ml_collections
import numpy as np
import pytest

from ssd_jax import data
from ssd_jax.data import copy_paste, mosaic
from ssd_jax.data.tf_setup import tf

SIZE = (40, 40)


def test_tile_layout_and_box_mapping_by_hand():
    assert mosaic.tile_layout((5, 6), 2, 2) == [(0, 0, (0, 0), (2, 3)), (0, 1, (0, 3), (2, 3)),
                                                (1, 0, (2, 0), (3, 3)), (1, 1, (2, 3), (3, 3))]
    assert mosaic.tile_layout((5, 6), 1, 2) == [(0, 0, (0, 0), (5, 3)), (0, 1, (0, 3), (5, 3))]
    layout = mosaic.tile_layout((5, 6), 2, 2)
    tiles = []
    for k, (_, _, _, (h, w)) in enumerate(layout):
        boxes = {1: [[0.5, 0.5, 1.0, 1.0]], 3: [[0.0, 0.0, 1.0, 1.0]]}.get(k, np.zeros((0, 4)))
        tiles.append((tf.fill([h, w, 3], float(k)), tf.constant(boxes, tf.float32),
                      tf.fill([len(boxes)], k), tf.zeros([len(boxes)], tf.bool)))
    image, boxes, labels, _ = (t.numpy() for t in mosaic.assemble(tiles, (5, 6), 2, 2))
    want = np.zeros((5, 6))
    want[:2, 3:], want[2:, :3], want[2:, 3:] = 1, 2, 3
    np.testing.assert_array_equal(image[..., 0], want)
    # tile 1 (rows 0-1, columns 3-5): x -> (3 + 3x) / 6, y -> 2y / 5; tile 3 (rows 2-4, columns 3-5)
    np.testing.assert_allclose(boxes, [[0.75, 0.2, 1.0, 0.4], [0.5, 0.4, 1.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(labels, [1, 3])


def shapes_config(prob, tiles=4, **augment):
    cfg = data.default_config()
    cfg.shapes.num_train, cfg.shapes.num_eval, cfg.shapes.image_size = 12, 4, 48
    cfg.max_boxes = 4
    cfg.augment.update({**dict(photometric=False, expand=False, crop=False, flip=False), **augment})
    cfg.augment.mosaic_prob, cfg.augment.mosaic_tiles = prob, tiles
    return cfg


def batches(cfg, size=SIZE, n=3, start_step=0):
    it = data.train_iterator(cfg, size, 4, normalization="unit", seed=3, start_step=start_step)
    return [next(it) for _ in range(n)]


def test_four_tiles_hold_the_example_and_three_donors():
    plain = batches(shapes_config(0.0), size=(20, 20))  # each example alone, rendered at the tile size
    tiled = batches(shapes_config(1.0))
    for p, t in zip(plain, tiled):
        assert t["boxes"].shape == (4, 16, 4)  # 4 tiles x max_boxes 4
        # augmentation off: the first tile is the stream's own example, its boxes come first
        np.testing.assert_allclose(t["image"][:, :20, :20], p["image"], atol=1e-6)
        for i in range(4):
            n = p["mask"][i].sum()
            np.testing.assert_allclose(t["boxes"][i, :n], p["boxes"][i, :n] * 0.5, atol=1e-6)
            np.testing.assert_array_equal(t["labels"][i, :n], p["labels"][i, :n])
            boxes = t["boxes"][i][t["mask"][i]]
            assert len(boxes) > n  # donors brought objects (every shapes image has at least one)
            # every box stays inside one quadrant
            col, row = boxes[:, 0] >= 0.5 - 1e-6, boxes[:, 1] >= 0.5 - 1e-6
            assert np.all(np.where(col, boxes[:, 0] >= 0.5 - 1e-6, boxes[:, 2] <= 0.5 + 1e-6))
            assert np.all(np.where(row, boxes[:, 1] >= 0.5 - 1e-6, boxes[:, 3] <= 0.5 + 1e-6))
        assert not np.allclose(t["image"][:, 20:, 20:], t["image"][:, :20, :20])


def test_two_tiles_split_either_way_and_mosaics_are_deterministic_and_resumable():
    cfg = shapes_config(1.0, tiles=2, flip=True, photometric=True)
    first, again = batches(cfg, n=4), batches(cfg, n=4)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    resumed = batches(cfg, n=1, start_step=3)[0]
    np.testing.assert_array_equal(resumed["image"], first[3]["image"])
    boxes = np.concatenate([b["boxes"][b["mask"]] for b in first])
    beside = np.all((boxes[:, 2] <= 0.5 + 1e-6) | (boxes[:, 0] >= 0.5 - 1e-6))
    above = np.all((boxes[:, 3] <= 0.5 + 1e-6) | (boxes[:, 1] >= 0.5 - 1e-6))
    assert first[0]["boxes"].shape[1] == 8 and not beside and not above  # both layouts occur in 16 images


def test_half_the_examples_become_mosaics_at_probability_one_half():
    tiled = batches(shapes_config(0.5), n=10)
    plain = batches(shapes_config(0.0), n=10)
    same = [np.array_equal(t["image"][i], p["image"][i]) for t, p in zip(tiled, plain) for i in range(4)]
    assert 10 <= sum(same) <= 30  # 40 examples; the others are mosaics (binomial(40, 0.5): 99.9% within)


@pytest.mark.parametrize("field, value, message", [
    ("mosaic_prob", 1.5, "mosaic_prob must be in"), ("mosaic_tiles", 3, "mosaic_tiles must be 2 or 4")])
def test_bad_mosaic_settings_name_the_field(field, value, message):
    cfg = data.default_config()
    cfg.augment[field] = value
    with pytest.raises(ValueError, match=message):
        mosaic.validate(cfg)


def test_mosaics_need_an_indexed_source():
    cfg = ml_collections.ConfigDict(dict(source="tfds", augment=dict(mosaic_prob=0.5, mosaic_tiles=4)))
    with pytest.raises(ValueError, match="need an indexed source"):
        mosaic.validate(cfg)


# ---------------------------------------------------------------- copy-paste

def test_paste_rectangle_by_hand():
    # image 100 x 200 (h, w); target box x 100-150, y 25-75 px; donor box 40 x 20 px (h, w)
    rect = copy_paste.paste_rectangle(tf.constant([0.5, 0.25, 0.75, 0.75]), tf.constant([40.0, 20.0]),
                                      tf.constant([100, 200]), tf.constant([0.5, 0.2, 0.5, 0.5]))
    # height 50 * (0.8 + 0.4 * 0.5) = 50, width 50 * 20 / 40 = 25, overlap 0.3 * 0.5 * 25 = 3.75 (right side)
    np.testing.assert_allclose(rect.numpy(), [25.0, 146.25, 75.0, 171.25], rtol=1e-6)
    left = copy_paste.paste_rectangle(tf.constant([0.5, 0.25, 0.75, 0.75]), tf.constant([40.0, 20.0]),
                                      tf.constant([100, 200]), tf.constant([0.5, 0.7, 0.5, 1.0]))
    # left side: x0 = 100 + 3.75 - 25; jitter (1 - 0.5) * 0.4 * 50 = 10 down
    np.testing.assert_allclose(left.numpy(), [35.0, 78.75, 85.0, 103.75], rtol=1e-6)


def _raw(image, boxes, labels):
    return {"image": tf.constant(image), "boxes": tf.constant(boxes, tf.float32),
            "labels": tf.constant(labels, tf.int32), "difficult": tf.zeros([len(labels)], tf.bool),
            "position": tf.constant(0, tf.int64)}


def test_paste_puts_the_donor_object_beside_the_target():
    example = _raw(np.zeros((40, 80, 3), np.uint8), [[0.25, 0.25, 0.5, 0.75]], [1])  # x 20-40, y 10-30 px
    donor_image = np.full((30, 60, 3), 100, np.uint8)
    donor_image[:, 30:] = 200
    donor = _raw(donor_image, [[0.5, 0.0, 1.0, 1.0]], [7])  # the right half (value 200) only
    pasted = 0
    for k in range(12):
        out = copy_paste.paste(example, donor, tf.constant([k, 1], tf.int64))
        boxes, image = out["boxes"].numpy(), out["image"].numpy()
        if len(boxes) == 1:  # declined: the paste would lie mostly outside the image
            np.testing.assert_array_equal(image, example["image"].numpy())
            continue
        pasted += 1
        np.testing.assert_array_equal(out["labels"].numpy(), [1, 7])
        x0, y0, x1, y1 = np.round(boxes[1] * [80, 40, 80, 40]).astype(int)
        assert np.all(image[y0:y1, x0:x1] == 200)  # only the donor's box region, never its left half
        outside = np.ones((40, 80), bool)
        outside[y0:y1, x0:x1] = False
        assert np.all(image[outside] == 0)
        assert x0 <= 40 and x1 >= 20 - 1 and (x1 <= 41 or x0 >= 19)  # touching the target on one side
        assert 10 - 6 <= (y0 + y1) / 2 <= 30 + 6  # roughly level with it
    assert pasted >= 6


def test_paste_leaves_images_without_boxes_alone():
    empty = _raw(np.zeros((20, 20, 3), np.uint8), np.zeros((0, 4)), [])
    donor = _raw(np.full((20, 20, 3), 9, np.uint8), [[0.0, 0.0, 1.0, 1.0]], [2])
    out = copy_paste.paste(empty, donor, tf.constant([0, 1], tf.int64))
    assert out["boxes"].shape[0] == 0 and int(tf.reduce_max(out["image"])) == 0


def test_pipeline_with_paste_adds_a_box_slot_and_stays_deterministic():
    cfg = shapes_config(0.0, paste_prob=1.0)
    first, again = batches(cfg), batches(cfg)
    assert first[0]["boxes"].shape == (4, 5, 4)  # max_boxes 4 + 1
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    plain = batches(shapes_config(0.0))
    assert sum(int(a["mask"].sum()) for a in first) > sum(int(p["mask"].sum()) for p in plain)
    with pytest.raises(ValueError, match="paste_prob must be in"):
        copy_paste.check(ml_collections.ConfigDict(dict(paste_prob=2.0)))
