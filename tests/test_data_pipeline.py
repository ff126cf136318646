"""Input pipelines: batch contents, determinism, exact resume, sharding, normalisation, bad files."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from ssd_jax import data
from ssd_jax.data import records, registry
from ssd_jax.visualize import draw_boxes, save_grid

SIZE = (40, 40)


def shapes_config(num_train=10, num_eval=7):
    cfg = data.default_config()
    cfg.shapes.num_train, cfg.shapes.num_eval, cfg.shapes.image_size = num_train, num_eval, 48
    cfg.max_boxes = 6
    return cfg


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.fixture(scope="module")
def shapes_batches():
    cfg = shapes_config()
    return take(data.train_iterator(cfg, SIZE, 4, normalization="unit", seed=5), 8)


def test_train_batches_have_documented_shapes_and_ranges(shapes_batches):
    for batch in shapes_batches:
        assert set(batch) == {"image", "boxes", "labels", "mask"}
        assert batch["image"].shape == (4, 40, 40, 3) and batch["image"].dtype == np.float32
        assert batch["boxes"].shape == (4, 6, 4) and batch["boxes"].dtype == np.float32
        assert batch["labels"].dtype == np.int32 and batch["mask"].dtype == bool
        assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
        mask, boxes, labels = batch["mask"], batch["boxes"], batch["labels"]
        assert np.all((labels[mask] >= 1) & (labels[mask] <= 4)) and np.all(labels[~mask] == 0)
        assert np.all(boxes[~mask] == 0) and np.all(boxes[mask][:, 2:] > boxes[mask][:, :2])
        assert np.all((boxes >= 0) & (boxes <= 1))
    assert any(b["mask"].sum() > 4 for b in shapes_batches)


def test_same_seed_same_batches_other_seed_differs(shapes_batches):
    cfg = shapes_config()
    again = take(data.train_iterator(cfg, SIZE, 4, normalization="unit", seed=5), 3)
    for a, b in zip(shapes_batches, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = next(data.train_iterator(cfg, SIZE, 4, normalization="unit", seed=6))
    assert not np.array_equal(other["image"], shapes_batches[0]["image"])


def test_start_step_reproduces_step_across_epochs(shapes_batches):
    cfg = shapes_config()
    for step in (3, 6):  # 10 examples, batch 4: step 3 starts mid-epoch 1, step 6 in epoch 2
        resumed = next(data.train_iterator(cfg, SIZE, 4, normalization="unit", seed=5, start_step=step))
        for key in resumed:
            np.testing.assert_array_equal(resumed[key], shapes_batches[step][key])


def test_train_stream_epochs_are_reshuffled_permutations_split_over_processes():
    cfg = shapes_config(num_train=9)
    source = registry.get_source(cfg)
    stream = source.train_stream("train", 1, 0, 1, 0, 0, 1)
    examples = list(stream.take(27))
    ids = [int(ex["image_id"]) for ex in examples]
    assert [int(ex["position"]) for ex in examples] == list(range(27))
    assert sorted(ids[:9]) == sorted(ids[9:18]) == sorted(ids[18:]) == list(range(9))
    assert ids[:9] != ids[9:18] or ids[9:18] != ids[18:]
    # 2 processes, 2 rows each: process p takes rows [2p, 2p + 2) of every global batch of 4.
    for process in range(2):
        part = source.train_stream("train", 1, process, 2, 0, 0, 1, batch_size=2)
        got = [(int(ex["image_id"]), int(ex["position"])) for ex in part.take(6)]
        want = [(ids[g], g) for step in range(3) for g in range(4 * step + 2 * process, 4 * step + 2 * process + 2)]
        assert got == want


def test_global_batches_do_not_depend_on_the_process_count(shapes_batches):
    cfg = shapes_config()
    one = take(data.train_iterator(cfg, SIZE, 8, normalization="unit", seed=5, start_step=1), 2)
    parts = [take(data.train_iterator(cfg, SIZE, 4, normalization="unit", seed=5, start_step=1,
                                      process_index=p, process_count=2), 2) for p in range(2)]
    for step in range(2):
        for key in one[step]:
            np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]), one[step][key])
    # and the single-process batch-8 stream at step 1 is the batch-4 stream at steps 2 and 3
    for key in one[0]:
        np.testing.assert_array_equal(one[0][key], np.concatenate([shapes_batches[2][key], shapes_batches[3][key]]))


def test_eval_is_sharded_padded_and_complete():
    cfg = shapes_config(num_eval=7)
    seen = []
    for process in range(2):
        batches = list(data.eval_iterator(cfg, SIZE, 3, normalization="caffe", process_index=process,
                                          process_count=2))
        assert len(batches) == 2  # ceil(ceil(7 / 2) / 3) for both processes
        for b in batches:
            assert b["image"].shape == (3, 40, 40, 3) and b["valid"].dtype == bool
            assert b["difficult"].shape == (3, 4) and b["orig_size"].shape == (3, 2)  # shapes.max_objects, not 6
            assert np.all(b["orig_size"][b["valid"]] == 48) and np.all(b["image_id"][~b["valid"]] == -1)
            assert not b["mask"][~b["valid"]].any()
            seen += b["image_id"][b["valid"]].tolist()
    assert sorted(seen) == list(range(7))


def test_normalize_modes_and_roundtrip():
    pixel = np.array([[[123, 117, 104]], [[255, 0, 51]]], np.uint8)
    np.testing.assert_allclose(data.normalize(pixel, "caffe")[0, 0], [0, 0, 0])
    np.testing.assert_allclose(data.normalize(pixel, "unit")[1, 0], [1.0, 0.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(data.normalize(pixel, "imagenet")[1, 0],
                               [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225], rtol=1e-5)
    for mode in ("caffe", "imagenet", "unit"):
        np.testing.assert_array_equal(data.denormalize(data.normalize(pixel, mode), mode), pixel)
    with pytest.raises(ValueError, match="normalization"):
        data.normalize(pixel, "bgr")


def test_pipeline_normalisation_matches_numpy_normalize():
    cfg = shapes_config()
    unit = next(data.eval_iterator(cfg, SIZE, 2, normalization="unit"))
    caffe = next(data.eval_iterator(cfg, SIZE, 2, normalization="caffe"))
    np.testing.assert_allclose(caffe["image"], data.normalize(unit["image"] * 255.0, "caffe"), atol=1e-3)


# ---------------------------------------------------------------- bad files

def write_voc(root, entries, split="train"):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(root / sub, exist_ok=True)
    for name, xml, image in entries:
        if xml is not None:
            (root / "Annotations" / f"{name}.xml").write_text(xml)
        if isinstance(image, bytes):
            (root / "JPEGImages" / f"{name}.jpg").write_bytes(image)
        elif image is not None:
            image.save(root / "JPEGImages" / f"{name}.jpg")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(e[0] for e in entries) + "\n")


def voc_xml(objects, width=32, height=24):
    body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}"
                   f"</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return f"<annotation><size><width>{width}</width><height>{height}</height></size>{body}</annotation>"


@pytest.fixture()
def bad_voc(tmp_path):
    good = Image.new("RGB", (32, 24), (200, 10, 10))
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    jpeg = tmp_path / "tmp.jpg"
    noisy.save(jpeg, quality=95)
    truncated = jpeg.read_bytes()[:int(0.7 * jpeg.stat().st_size)]  # header intact, data cut
    write_voc(tmp_path, [
        ("good", voc_xml([("cat", (1, 1, 16, 12), 0), ("dog", (6, 5, 5, 20), 0), ("dog", (10, 2, 40, 20), 1)]), good),
        ("corrupt", voc_xml([("cat", (1, 1, 8, 8), 0)]), b"this is not a jpeg at all"),
        ("broken_xml", "<annotation><object><name>cat</name>", good),
        ("no_image", voc_xml([("cat", (1, 1, 8, 8), 0)]), None),
        ("truncated", voc_xml([("dog", (2, 2, 30, 20), 0)], 64, 48), truncated),
    ])
    return tmp_path


def voc_config(root, strict=False):
    cfg = data.default_config()
    cfg.source, cfg.root, cfg.strict = "voc_folder", str(root), strict
    cfg.train_split = cfg.eval_split = "train"
    return cfg


def test_bad_files_are_skipped_with_warnings_naming_them(bad_voc, caplog):
    with caplog.at_level(logging.WARNING, logger="ssd_jax.data"):
        info = data.dataset_info(voc_config(bad_voc))
        batches = list(data.eval_iterator(voc_config(bad_voc), (16, 16), 4, normalization="unit"))
    text = caplog.text
    assert "corrupt.jpg" in text and "broken_xml.xml" in text and "no_image.jpg" in text
    assert "truncated JPEG" in text and "truncated.jpg" in text
    assert "1 boxes clipped" in text and "1 degenerate boxes dropped" in text
    assert info.class_names == ("background", "cat", "dog") and info.num_train == 1  # good only
    batch = batches[0]
    assert batch["valid"].tolist() == [True, False, False, False]
    good = batch["boxes"][0][batch["mask"][0]]
    np.testing.assert_allclose(good, [[0, 0, 0.5, 0.5], [9 / 32, 1 / 24, 1.0, 20 / 24]], atol=1e-6)
    assert batch["labels"][0].tolist()[:2] == [1, 2] and batch["difficult"][0].tolist()[:2] == [False, True]


def test_strict_mode_raises_naming_the_file(bad_voc):
    with pytest.raises(records.BadFileError, match=r"corrupt\.jpg|broken_xml\.xml|no_image\.jpg"):
        data.dataset_info(voc_config(bad_voc, strict=True))


def test_unknown_class_and_empty_split_are_clear_errors(tmp_path):
    write_voc(tmp_path, [("a", voc_xml([("cat", (1, 1, 8, 8), 0)]), Image.new("RGB", (32, 24)))])
    cfg = voc_config(tmp_path)
    cfg.class_names = ("dog",)
    with pytest.raises(ValueError, match=r"a.xml has class names \['cat'\]"):
        data.dataset_info(cfg)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("\n")
    cfg = voc_config(tmp_path)
    cfg.eval_split = "val"
    with pytest.raises(ValueError, match="'val' has no usable images"):
        data.dataset_info(cfg)


# ---------------------------------------------------------------- evaluation counts every box

@pytest.fixture()
def crowded_voc(tmp_path):
    """One class (cat), 64x64 images: "crowd" has 5 objects, "pair" 2, "one" 1; split "four" is one
    image with 4 objects."""
    objects = {"crowd": [(1 + 12 * i, 1, 10 + 12 * i, 10) for i in range(5)],
               "pair": [(1, 1, 20, 20), (30, 30, 60, 60)], "one": [(5, 5, 40, 40)],
               "four": [(1, 1, 30, 30), (33, 1, 62, 30), (1, 33, 30, 62), (33, 33, 62, 62)]}
    write_voc(tmp_path, [(name, voc_xml([("cat", b, 0) for b in boxes], 64, 64), Image.new("RGB", (64, 64)))
                         for name, boxes in objects.items()])
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("crowd\npair\none\n")
    (tmp_path / "ImageSets" / "Main" / "four.txt").write_text("four\n")
    return tmp_path


def evaluate_first_boxes_detected(cfg, num_detected=2):
    """Evaluator result over ``data.eval_iterator`` when the first ``num_detected`` boxes of every
    image are detected exactly (scores 1.0, 0.9, ...) and nothing else."""
    from ssd_jax.evaluation import Evaluator

    rec = registry.get_source(cfg).records(cfg.eval_split)
    evaluator = Evaluator(2, with_coco=True)
    for batch in data.eval_iterator(cfg, (16, 16), 2, normalization="unit"):
        b = len(batch["valid"])
        dets = dict(boxes=np.zeros((b, num_detected, 4), np.float32), scores=np.zeros((b, num_detected)),
                    classes=np.zeros((b, num_detected), np.int32), num_valid=np.zeros(b, np.int32))
        for i, image_id in enumerate(batch["image_id"]):
            if image_id >= 0:
                found = rec.boxes[image_id][:num_detected]
                n = len(found)
                dets["boxes"][i, :n], dets["classes"][i, :n], dets["num_valid"][i] = found, 1, n
                dets["scores"][i, :n] = 1.0 - 0.1 * np.arange(n)
        evaluator.add_batch(dets, batch)
    return evaluator.result()


def test_eval_counts_every_box_whatever_max_boxes(crowded_voc):
    cfg = voc_config(crowded_voc)
    cfg.max_boxes = 2  # "crowd" has 5 boxes: training keeps 2, evaluation must keep all
    assert data.eval_box_count(cfg) == 5
    batch = next(data.eval_iterator(cfg, (16, 16), 2, normalization="unit"))
    assert batch["boxes"].shape == (2, 5, 4) and batch["mask"].sum(axis=1).tolist() == [5, 2]
    small = evaluate_first_boxes_detected(cfg)
    cfg.max_boxes = 50
    large = evaluate_first_boxes_detected(cfg)
    assert small["num_gt"].tolist() == large["num_gt"].tolist() == [0, 8]
    assert small["mAP"] == large["mAP"] and small["AP"] == large["AP"]
    np.testing.assert_array_equal(small["ap"], large["ap"])


def test_missed_objects_lower_ap_even_beyond_max_boxes(crowded_voc):
    # 4 ground truths, the 2 best-scored detections exact: precision 1, 1 at recall 1/4, 1/2.
    # VOC07 11-point AP: recall thresholds 0, 0.1, ..., 0.5 reach precision 1, the 5 above none:
    # 6/11. Truncated to max_boxes=2 ground truths it would have been 1.0.
    cfg = voc_config(crowded_voc)
    cfg.train_split = cfg.eval_split = "four"
    cfg.max_boxes = 2
    result = evaluate_first_boxes_detected(cfg)
    assert result["num_gt"].tolist() == [0, 4]
    assert result["ap"][1] == pytest.approx(6 / 11) and result["mAP"] == pytest.approx(6 / 11)


# ---------------------------------------------------------------- max_boxes from the data

def test_max_boxes_derived_from_the_training_split_and_logged(crowded_voc, caplog):
    cfg = voc_config(crowded_voc)
    assert cfg.max_boxes == 0  # the default: derive
    with caplog.at_level(logging.WARNING, logger="ssd_jax.data"):
        batch = next(data.train_iterator(cfg, (16, 16), 2, normalization="unit"))
    assert batch["boxes"].shape == (2, 5, 4)  # "crowd" has 5 boxes
    assert "max_boxes=5 derived from the split (largest image 5 boxes" in caplog.text
    assert "drops no box" in caplog.text
    shapes_cfg = shapes_config()
    shapes_cfg.max_boxes = 0
    assert next(data.train_iterator(shapes_cfg, SIZE, 2, normalization="unit"))["boxes"].shape == (2, 4, 4)


def test_explicit_max_boxes_is_honoured_and_its_drops_logged(crowded_voc, caplog):
    cfg = voc_config(crowded_voc)
    cfg.max_boxes = 2
    with caplog.at_level(logging.WARNING, logger="ssd_jax.data"):
        batch = next(data.train_iterator(cfg, (16, 16), 2, normalization="unit"))
    assert batch["boxes"].shape == (2, 2, 4)
    assert "max_boxes=2 (data.max_boxes) drops 3 boxes in 1 of 3 images in training" in caplog.text
    cfg.max_boxes = -1
    with pytest.raises(ValueError, match=r"data\.max_boxes must be > 0, or 0"):
        next(data.train_iterator(cfg, (16, 16), 2, normalization="unit"))


def test_derived_max_boxes_ignores_an_outlier_maximum():
    from ssd_jax.data.max_boxes import choose_max_boxes, dropped_boxes

    assert choose_max_boxes(np.array([3, 1, 7, 2])) == 7
    assert choose_max_boxes(np.array([0, 0])) == 1
    assert choose_max_boxes(np.array([3] * 2000 + [60])) == 60  # small enough to keep whole
    assert choose_max_boxes(np.array([3] * 2000 + [500])) == 100  # outlier: 99.9th percentile, at least 100
    assert dropped_boxes(np.array([3] * 2000 + [500]), 100) == (400, 1)


def test_max_boxes_overflow_is_logged(caplog):
    cfg = shapes_config()
    cfg.max_boxes = 1
    cfg.augment.update(dict(expand=False, crop=False))
    with caplog.at_level(logging.WARNING, logger="ssd_jax.data"):
        iterator = data.train_iterator(cfg, SIZE, 4, normalization="unit")
        take(iterator, 3)
        iterator.close()  # training ends: the total is logged
    assert caplog.text.count("beyond max_boxes=1 dropped") == 2  # the first occurrence, and the total
    assert "beyond max_boxes=1 dropped in total" in caplog.text


# ---------------------------------------------------------------- drawing

def test_draw_boxes_and_grid(tmp_path):
    image = np.full((60, 80, 3), 128, np.uint8)
    drawn = draw_boxes(image, np.array([[0.25, 0.5, 0.75, 1.0]]), np.array([2]), scores=np.array([0.9]),
                       class_names=("background", "cat", "dog"))
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert np.any(drawn[45, 20] != 128) and np.all(drawn[5, 5] == 128) and np.all(image == 128)
    grid = save_grid([drawn, image, image], tmp_path / "g.png", columns=2, padding=1)
    assert grid.shape == (2 * 61 + 1, 2 * 81 + 1, 3)
    assert Image.open(tmp_path / "g.png").size == (163, 123)


def test_preview_command_takes_a_config_with_overrides(tmp_path, capsys):
    from ssd_jax import cli
    from ssd_jax.data import preview

    out = tmp_path / "grid.png"
    args = ["--config", "shapes", "--config.data.shapes.num_train=8", "--config.data.shapes.image_size=64",
            "--num", "4", "--size", "64", "--out", str(out)]
    assert cli.run(preview.main, args) == cli.EXIT_OK
    assert Image.open(out).size[0] > 2 * 64
    assert cli.run(preview.main, ["--config", "no_such_config"]) == cli.EXIT_USAGE
    assert "neither a file nor a packaged config" in capsys.readouterr().err
