"""Detector restore, pixel mapping, overrides, bucketing, bad input (ssd_jax.detector, ssd_jax.images)
and the command line (ssd_jax.detect)."""

import json
import os
import shutil

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ssd_jax import anchors as anchor_lib
from ssd_jax import boxes as box_lib
from ssd_jax import checkpoints, cli, configs, models, postprocess, train
from ssd_jax.data.normalize import normalize
from ssd_jax.data.shapes import generate_example
from ssd_jax.detect import main
from ssd_jax.detector import Detector, ImageDetections
from ssd_jax.images import load_image, to_pixel_boxes, to_rgb_uint8

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A shapes ssd_tiny trained for 4 steps at 64 px (checkpoints only, no evaluation)."""
    path = str(tmp_path_factory.mktemp("detect") / "run")
    config = configs.load("shapes")
    config.num_steps = 4
    config.log_every = 2
    config.eval.every = 0
    config.eval.batch_size = 8
    config.eval.with_coco = False
    config.eval.num_sample_images = 0
    config.batch_size = 8
    config.image_size = IMAGE_SIZE
    config.data.shapes.num_train = 64
    config.data.shapes.num_eval = 8
    config.data.shapes.image_size = IMAGE_SIZE
    train.train_and_evaluate(config, path)
    return path


@pytest.fixture(scope="module")
def detector(workdir):
    return Detector.from_workdir(workdir, score_threshold=0.05, buckets=(1, 8))


def shapes_images(n, size=IMAGE_SIZE):
    return [generate_example(i, "eval", seed=3, image_size=size)[0] for i in range(n)]


def assert_same_detections(results, expected):
    """Per image: the same classes in the same order, boxes and scores equal up to float rounding
    (a batch and a single image may run different conv kernels)."""
    assert len(results) == len(expected)
    for r, e in zip(results, expected):
        assert r.classes.tolist() == e.classes.tolist()
        np.testing.assert_allclose(r.scores, e.scores, atol=1e-5)
        np.testing.assert_allclose(r.boxes, e.boxes, atol=1e-3)


def as_tuples(result: ImageDetections):
    return [(tuple(np.round(b, 3)), round(float(s), 5), int(c)) for b, s, c in
            zip(result.boxes, result.scores, result.classes)]


def test_restored_detector_matches_direct_model_call(workdir, detector):
    info = checkpoints.read_model_info(workdir)
    variables, _ = checkpoints.load_model_variables(workdir, "latest")
    module, spec = models.create(info["model"], info["num_classes"], image_size=tuple(info["image_size"]))
    images = np.stack(shapes_images(3))  # already at the input size: no resize involved
    loc, logits = module.apply(variables, jnp.asarray(normalize(images, info["normalization"])), train=False)
    pp = info["postprocess"]
    expected = postprocess.detect(loc, logits, jnp.asarray(anchor_lib.default_boxes(spec)), score_threshold=0.05,
                                  iou_threshold=pp["iou_threshold"], pre_nms_top_k=pp["pre_nms_top_k"],
                                  max_detections=pp["max_detections"])
    in_memory = Detector(module, variables, spec, info["class_names"], normalization=info["normalization"],
                         score_threshold=0.05, iou_threshold=pp["iou_threshold"],
                         pre_nms_top_k=pp["pre_nms_top_k"], max_detections=pp["max_detections"])
    restored = detector(list(images))
    for i, (a, b) in enumerate(zip(restored, in_memory(list(images)))):
        k = int(expected.num_valid[i])
        assert k > 0 and len(a) == len(b) == k
        np.testing.assert_allclose(a.boxes, np.asarray(expected.boxes[i, :k]) * IMAGE_SIZE, atol=1e-3)
        np.testing.assert_allclose(a.scores, expected.scores[i, :k], atol=1e-5)
        np.testing.assert_array_equal(a.classes, expected.classes[i, :k])
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_array_equal(a.classes, b.classes)
        assert a.class_names == tuple(info["class_names"][c] for c in expected.classes[i, :k])
        assert a.image_size == (IMAGE_SIZE, IMAGE_SIZE)
        assert "background" not in a.class_names


def test_to_pixel_boxes_known_box():
    # 200 wide, 100 high
    np.testing.assert_allclose(to_pixel_boxes([[0.25, 0.5, 0.75, 1.0]], (100, 200)), [[50, 50, 150, 100]])


class FixedOutput(nn.Module):
    """A fake SSD: zero offsets, and one default box (``anchor``) scores class 2 with p ~ 1."""
    num_anchors: int
    anchor: int

    @nn.compact
    def __call__(self, images, train=False):
        b = images.shape[0]
        logits = jnp.zeros((b, self.num_anchors, 3)).at[:, :, 0].set(10.0).at[:, self.anchor, 2].set(30.0)
        return jnp.zeros((b, self.num_anchors, 4)), logits


def test_boxes_map_back_to_a_non_square_image():
    spec = anchor_lib.paper_spec(((4, 4), (2, 2)), image_size=32, s_min=0.2, s_max=0.6)
    default = anchor_lib.default_boxes(spec)
    anchor = 5
    det = Detector(FixedOutput(len(default), anchor), {}, spec, ["background", "a", "b"],
                   normalization="unit", score_threshold=0.5, check=False)
    image = np.zeros((100, 200, 3), np.uint8)  # height 100, width 200
    result = det(image)
    corners = np.clip(np.asarray(box_lib.center_to_corners(jnp.asarray(default[anchor]))), 0, 1)
    expected = corners * [200, 100, 200, 100]
    assert len(result) == 1 and result.class_names == ("b",) and result.image_size == (100, 200)
    np.testing.assert_allclose(result.boxes[0], expected, rtol=1e-5, atol=1e-3)
    # The same box in a 40 x 300 (w x h) image of a PIL input, in a list.
    (tall,) = det([Image.new("RGB", (40, 300))])
    np.testing.assert_allclose(tall.boxes[0], corners * [40, 300, 40, 300], rtol=1e-5, atol=1e-3)


def test_score_threshold_gives_a_subset_without_recompiling(detector):
    images = shapes_images(2)
    low = detector(images, score_threshold=0.05)
    traces = detector.trace_count
    high = detector(images, score_threshold=0.3)
    assert detector.trace_count == traces  # thresholds are traced arguments
    assert sum(len(r) for r in high) < sum(len(r) for r in low)
    for lo, hi in zip(low, high):
        # Greedy NMS keeps a box depending only on better boxes: a higher threshold keeps
        # exactly the low-threshold detections that pass it.
        assert as_tuples(hi) == [t for t in as_tuples(lo) if t[1] > 0.3]
    capped = detector(images, score_threshold=0.05, max_detections=3)
    assert [as_tuples(c) for c in capped] == [as_tuples(r)[:3] for r in low]
    assert detector.trace_count == traces
    with pytest.raises(ValueError, match="max_detections"):
        detector(images, max_detections=detector.max_detections + 1)


def test_batch_buckets_bound_compilations(workdir):
    det = Detector.from_workdir(workdir, score_threshold=0.05, buckets=(1, 8))
    images = shapes_images(10, size=80)
    singles = [det(im) for im in images[:5]]
    assert det.trace_count == 1
    for n in (1, 3, 5):
        assert_same_detections(det(images[:n]), singles[:n])
    chunked = det(images)  # 10 > 8: chunks of 8 and 2, both bucket 8
    assert det.trace_count == 2
    assert_same_detections(chunked[:5], singles)
    assert len(chunked) == 10 and det([]) == []


def test_image_conversions():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(to_rgb_uint8(gray), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(to_rgb_uint8(gray[:, :, None]), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 17, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(rgba)), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(gray)), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.int64)), rgb)
    with pytest.raises(ValueError, match="uint8"):
        to_rgb_uint8(rgb / 255.0)
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        to_rgb_uint8(np.full((2, 2), 300))


def test_grayscale_rgba_and_tiny_inputs_give_the_rgb_result(detector):
    image = shapes_images(1, size=90)[0]
    expected = as_tuples(detector(image))
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
    assert as_tuples(detector(rgba)) == expected
    gray = image[:, :, 1]
    assert as_tuples(detector(gray)) == as_tuples(detector(np.repeat(gray[:, :, None], 3, 2)))
    one = detector(np.full((1, 1, 3), 200, np.uint8))
    assert one.image_size == (1, 1) and np.all((one.boxes >= 0) & (one.boxes <= 1))


def test_load_image_large_and_bad_files(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 1000), (10, 200, 30)).save(big)
    image, original = load_image(str(big), max_side=500)
    assert original == (1000, 3000) and max(image.shape[:2]) == 500 and image.shape[2] == 3
    png = tmp_path / "big.png"
    Image.new("L", (3000, 1000)).save(png)
    with pytest.raises(ValueError, match=r"big\.png.*too large"):
        load_image(str(png), max_decode_pixels=1_000_000)
    image, original = load_image(str(png), max_side=300)
    assert original == (1000, 3000) and image.shape == (100, 300, 3)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.jpg"):
        load_image(str(text))


def test_class_count_mismatch_and_missing_checkpoint(workdir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    info = json.loads((other / "model.json").read_text())
    info["num_classes"] += 2
    info["class_names"] += ["extra1", "extra2"]
    (other / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=rf"{other}.*{info['num_classes']} classes.*has {info['num_classes'] - 2}"):
        Detector.from_workdir(str(other))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "model.json").write_text(json.dumps(info))
    with pytest.raises(FileNotFoundError, match=f"{empty}"):
        Detector.from_workdir(str(empty))
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        Detector.from_workdir(str(tmp_path))


def test_cli_processes_good_images_and_reports_bad_ones(workdir, detector, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = np.asarray(Image.fromarray(shapes_images(1)[0]).resize((120, 70)))
    Image.fromarray(good).save(folder / "good.png")
    Image.fromarray(good).save(folder / "good_copy.jpg", quality=95)
    data = (folder / "good_copy.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])
    (folder / "readme.txt").write_text("hello")
    (folder / "good_copy.jpg").unlink()
    out = tmp_path / "out"
    rc = main(["--workdir", workdir, str(folder), "--out", str(out), "--score-threshold", "0.1"])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "broken.jpg" in printed and "readme.txt" in printed and "FAILED" in printed
    assert "good.png: 120x70" in printed and "1 of 3 images processed, 2 failed" in printed
    assert sorted(os.listdir(out)) == ["good.jpg", "good.json"]
    record = json.loads((out / "good.json").read_text())
    expected = detector(good, score_threshold=0.1)
    assert record["image_size"] == {"height": 70, "width": 120}
    assert len(record["detections"]) == len(expected) > 0
    np.testing.assert_allclose([d["box"] for d in record["detections"]], expected.boxes, atol=2e-3)
    assert [d["class_name"] for d in record["detections"]] == list(expected.class_names)
    assert Image.open(out / "good.jpg").size == (120, 70)
    assert main(["--workdir", workdir, str(folder / "good.png"), "--out", str(out)]) == 0
    assert cli.run(main, ["--workdir", str(tmp_path), str(folder), "--out", str(out)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "model.json is missing" in err and "Traceback" not in err
