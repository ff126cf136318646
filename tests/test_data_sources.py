"""Sources: raccoon VOC folder, COCO JSON, TFDS (mocked), synthetic shapes."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ssd_jax import data
from ssd_jax.data import records, registry, shapes, voc_folder
from ssd_jax.data.tf_setup import tf

# The shared raccoon set lives beside the repository (../shared/data/raccoon), read in place.
RACCOON = os.environ.get("SSD_JAX_RACCOON", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                          "shared", "data", "raccoon"))


def raccoon_config():
    cfg = data.default_config()
    cfg.source, cfg.root, cfg.train_split, cfg.eval_split = "voc_folder", RACCOON, "train", "val"
    return cfg


def first_examples(ds, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), ex) for ex in ds.take(n)]


# ---------------------------------------------------------------- VOC folder (raccoon)

def test_raccoon_split_sizes_classes_and_box_count():
    cfg = raccoon_config()
    info = data.dataset_info(cfg)
    assert info.class_names == ("background", "raccoon")
    assert info.num_classes == 2 and info.num_train == 160 and info.num_eval == 40
    source = registry.get_source(cfg)
    total = sum(len(b) for split in ("train", "val") for b in source.records(split).boxes)
    assert total == 217
    for split in ("train", "val"):
        for boxes in source.records(split).boxes:
            assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > boxes[:, :2])


def test_truncated_raccoon_jpeg_is_skipped_with_its_name(tmp_path, caplog):
    ids = voc_folder.split_ids(RACCOON, "train")[:3]
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(tmp_path / sub)
    for image_id in ids:
        shutil.copy(os.path.join(RACCOON, "Annotations", f"{image_id}.xml"), tmp_path / "Annotations")
        shutil.copy(os.path.join(RACCOON, "JPEGImages", f"{image_id}.jpg"), tmp_path / "JPEGImages")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    cut = tmp_path / "JPEGImages" / f"{ids[1]}.jpg"
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])  # halfway: libjpeg would fill the rest
    cfg = raccoon_config()
    cfg.root, cfg.eval_split = str(tmp_path), "train"
    with caplog.at_level(logging.WARNING, logger="ssd_jax.data"):
        kept = registry.get_source(cfg).records("train")
    assert f"truncated JPEG {cut}" in caplog.text
    assert kept.names == [ids[0], ids[2]]
    cfg.strict = True
    with pytest.raises(records.BadFileError, match=f"truncated JPEG .*{ids[1]}.jpg"):
        registry.get_source(cfg)


def test_voc_coordinates_follow_one_based_convention():
    ann = voc_folder.parse_annotation(os.path.join(RACCOON, "Annotations", "raccoon-1.xml"))
    source = registry.get_source(raccoon_config())
    records = source.records("train")
    i = records.names.index("raccoon-1")
    x0, y0, x1, y1 = ann["objects"][0][1]
    w, h = ann["width"], ann["height"]
    np.testing.assert_allclose(records.boxes[i][0], [(x0 - 1) / w, (y0 - 1) / h, x1 / w, y1 / h], rtol=1e-6)


def test_raccoon_grayscale_images_decode_to_three_channels():
    source = registry.get_source(raccoon_config())
    found = 0
    for split in ("train", "val"):
        records = source.records(split)
        gray = [i for i, p in enumerate(records.paths) if Image.open(p).mode == "L"]
        load = source.load_fn(split)
        for i in gray:
            example = tf.nest.map_structure(lambda t: t.numpy(), load(tf.constant(i, tf.int64)))
            pil = np.asarray(Image.open(records.paths[i]))
            assert example["image"].shape == pil.shape + (3,)
            assert np.array_equal(example["image"][..., 0], example["image"][..., 2])
            diff = np.abs(example["image"][..., 1].astype(int) - pil.astype(int))  # IDCTs differ slightly
            assert diff.mean() < 1.0 and diff.max() <= 8
            found += 1
    assert found == 3


def test_raccoon_eval_visits_every_image_once_with_sizes():
    cfg = raccoon_config()
    batches = list(data.eval_iterator(cfg, (64, 64), 16, normalization="unit"))
    assert len(batches) == 3 == data.num_eval_batches(cfg, 16)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 40 and not valid[40:].any()
    ids = np.concatenate([b["image_id"] for b in batches])[valid]
    assert sorted(ids.tolist()) == list(range(40))
    records = registry.get_source(cfg).records("val")
    sizes = np.concatenate([b["orig_size"] for b in batches])[valid]
    for image_id, size in zip(ids, sizes):
        w, h = Image.open(records.paths[image_id]).size
        assert tuple(size) == (h, w)
    num_boxes = np.concatenate([b["mask"] for b in batches])[valid].sum()
    assert num_boxes == sum(len(b) for b in records.boxes)
    for b in batches:
        assert b["image"].shape == (16, 64, 64, 3) and b["image"].dtype == np.float32
        assert b["image"].min() >= 0.0 and b["image"].max() <= 1.0


# ---------------------------------------------------------------- COCO JSON

@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    Image.new("L", (40, 30), 90).save(root / "images" / "gray.png")
    Image.new("RGBA", (50, 40), (10, 200, 30, 128)).save(root / "images" / "rgba.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(root / "images" / "cmyk.jpg")
    ann = {
        "images": [dict(id=7, file_name="gray.png", width=40, height=30),
                   dict(id=3, file_name="rgba.png", width=50, height=40),
                   dict(id=9, file_name="cmyk.jpg", width=32, height=32)],
        "categories": [dict(id=12, name="zebra"), dict(id=5, name="apple")],
        "annotations": [
            dict(id=1, image_id=7, category_id=12, bbox=[4, 3, 20, 15], iscrowd=0),
            dict(id=2, image_id=7, category_id=5, bbox=[0, 0, 10, 10], iscrowd=1),
            dict(id=3, image_id=3, category_id=5, bbox=[10, 20, 30, 10], iscrowd=0),
            dict(id=4, image_id=3, category_id=5, bbox=[10, 20, 0, 10], iscrowd=0),  # zero width
            dict(id=5, image_id=9, category_id=12, bbox=[16, 16, 32, 32], iscrowd=0),  # clipped
        ]}
    (root / "ann.json").write_text(json.dumps(ann))
    return root


def coco_config(root):
    cfg = data.default_config()
    cfg.source, cfg.root, cfg.annotations = "coco_json", str(root / "images"), str(root / "ann.json")
    cfg.train_split, cfg.eval_split = "train", "val"
    return cfg


def test_coco_json_labels_boxes_and_crowd(coco_dir):
    cfg = coco_config(coco_dir)
    info = data.dataset_info(cfg)
    assert info.class_names == ("background", "apple", "zebra")  # sorted by category id: 5, 12
    source = registry.get_source(cfg)
    train, val = source.records("train"), source.records("val")
    assert train.image_ids == [3, 7, 9]
    by_id = dict(zip(train.image_ids, range(3)))
    np.testing.assert_allclose(train.boxes[by_id[7]], [[4 / 40, 3 / 30, 24 / 40, 18 / 30]], rtol=1e-6)
    assert train.labels[by_id[7]].tolist() == [2]  # crowd box dropped for training
    np.testing.assert_allclose(train.boxes[by_id[3]], [[10 / 50, 20 / 40, 40 / 50, 30 / 40]], rtol=1e-6)
    np.testing.assert_allclose(train.boxes[by_id[9]], [[0.5, 0.5, 1.0, 1.0]])
    assert val.labels[by_id[7]].tolist() == [2, 1] and val.difficult[by_id[7]].tolist() == [False, True]


def test_coco_json_images_decode_to_rgb(coco_dir):
    cfg = coco_config(coco_dir)
    batch = next(data.eval_iterator(cfg, (16, 16), 4, normalization="unit"))
    assert batch["valid"].tolist() == [True, True, True, False]
    assert batch["image_id"].tolist() == [3, 7, 9, -1]
    assert batch["orig_size"][:3].tolist() == [[40, 50], [30, 40], [32, 32]]
    pixels = np.rint(batch["image"][:3] * 255)
    np.testing.assert_allclose(pixels[0], np.broadcast_to([10, 200, 30], (16, 16, 3)), atol=1)  # alpha dropped
    np.testing.assert_allclose(pixels[1], 90, atol=1)  # gray -> R = G = B
    assert pixels[2, ..., 0].mean() > 200 and pixels[2, ..., 1:].mean() < 60  # CMYK (0,255,255,0) is red


# ---------------------------------------------------------------- TFDS through tfds.testing.mock_data

def _encoded_jpeg(rng, h, w):
    return tf.io.encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).numpy()


def _fake_tfds(coco: bool, num_examples: int):
    """as_dataset_fn for mock_data: records as TFDS yields them with SkipDecoding, some nonsensical."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        rng = np.random.default_rng(0 if split == "train" else 1)

        def gen():
            for i in range(num_examples):
                n = int(rng.integers(1, 6))
                n_labels = n if i % 3 else n + 2  # ragged lengths that disagree
                bbox = rng.random((n, 4)).astype(np.float32)  # ymin > ymax happens
                objects = dict(bbox=bbox, label=rng.integers(0, 20, n_labels))
                if coco:
                    objects["is_crowd"] = np.arange(n) == 0
                    ex = {"image/id": np.int64(1000 + i)}
                else:
                    objects["is_difficult"] = rng.random(n) < 0.3
                    ex = {"image/filename": f"{i:06d}.jpg"}
                yield dict(image=_encoded_jpeg(rng, int(rng.integers(20, 40)), int(rng.integers(20, 40))),
                           objects=objects, **ex)

        objects_sig = dict(bbox=tf.TensorSpec([None, 4], tf.float32), label=tf.TensorSpec([None], tf.int64))
        if coco:
            objects_sig["is_crowd"] = tf.TensorSpec([None], tf.bool)
            extra = {"image/id": tf.TensorSpec([], tf.int64)}
        else:
            objects_sig["is_difficult"] = tf.TensorSpec([None], tf.bool)
            extra = {"image/filename": tf.TensorSpec([], tf.string)}
        signature = dict(image=tf.TensorSpec([], tf.string), objects=objects_sig, **extra)
        return tf.data.Dataset.from_generator(gen, output_signature=signature)

    return as_dataset


def tfds_config(name, train_split, eval_split):
    cfg = data.default_config()
    cfg.source, cfg.tfds_name, cfg.train_split, cfg.eval_split = "tfds", name, train_split, eval_split
    cfg.shuffle_buffer = 8
    return cfg


@pytest.mark.parametrize("name,coco", [("voc/2007", False), ("coco/2017", True)])
def test_tfds_sources_survive_nonsensical_mock_examples(name, coco):
    cfg = tfds_config(name, "train", "validation" if coco else "test")
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds(coco, 6)):
        info = data.dataset_info(cfg)
        assert info.num_classes == (81 if coco else 21) and info.num_train == 6 and info.num_eval == 6
        assert info.class_names[0] == "background"
        batch = next(data.train_iterator(cfg, (32, 32), 4, normalization="unit"))
        eval_batches = list(data.eval_iterator(cfg, (32, 32), 4, normalization="unit"))
    assert batch["image"].shape == (4, 32, 32, 3)
    boxes, mask, labels = batch["boxes"], batch["mask"], batch["labels"]
    assert np.all(boxes[mask][:, 2:] > boxes[mask][:, :2]) and np.all((boxes >= 0) & (boxes <= 1))
    assert np.all((labels[mask] >= 1) & (labels[mask] < info.num_classes)) and np.all(labels[~mask] == 0)
    assert len(eval_batches) == 2
    valid = np.concatenate([b["valid"] for b in eval_batches])
    assert valid.sum() == 6
    ids = np.concatenate([b["image_id"] for b in eval_batches])[valid]
    assert sorted(ids.tolist()) == ([1000 + i for i in range(6)] if coco else list(range(6)))
    if coco:  # the first box of every image is a crowd: difficult in eval (when it survived sanitising)
        difficult = np.concatenate([b["difficult"] for b in eval_batches])
        assert not difficult[~np.concatenate([b["mask"] for b in eval_batches])].any()


def test_tfds_voc_07_plus_12_concatenates():
    cfg = tfds_config("voc/2007+voc/2012", "trainval", "test")
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds(False, 5)):
        info = data.dataset_info(cfg)
    assert info.num_train == 10 and info.class_names[1:4] == ("aeroplane", "bicycle", "bird")


def test_tfds_default_mock_gives_clear_error_at_startup():
    # TFDS's own random mock examples of voc have ragged "objects" fields of different lengths,
    # which TFDS itself refuses to encode: that must surface as a clear error, not a hang.
    cfg = tfds_config("voc/2007", "trainval", "test")
    with tfds.testing.mock_data(num_examples=4), pytest.raises(ValueError, match="voc/2007: reading record 0"):
        data.dataset_info(cfg)


# ---------------------------------------------------------------- synthetic shapes

def test_shapes_deterministic_per_seed_and_split():
    a = shapes.generate_example(5, "train", seed=1, image_size=64)
    b = shapes.generate_example(5, "train", seed=1, image_size=64)
    c = shapes.generate_example(5, "train", seed=2, image_size=64)
    d = shapes.generate_example(5, "val", seed=1, image_size=64)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_shapes_boxes_are_tight_single_object():
    for i in range(20):
        image, boxes, labels = shapes.generate_example(i, "train", seed=3, image_size=64, max_objects=1, clutter=0.0)
        assert boxes.shape == (1, 4) and 1 <= labels[0] <= 4
        changed = np.any(image != image[0, 0], axis=-1)  # plain background, so the object is what differs
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        expected = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / 64
        np.testing.assert_allclose(boxes[0], expected, atol=1e-6)
        side = np.minimum(boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1])
        assert side >= 0.15


def test_shapes_topmost_object_box_is_tight_in_clutter():
    checked = 0
    for i in range(15):
        image, boxes, labels = shapes.generate_example(i, "train", seed=4, image_size=96)
        assert 1 <= len(boxes) <= 4
        top = boxes[-1]
        colour = image[int((top[1] + top[3]) / 2 * 96), int((top[0] + top[2]) / 2 * 96)]
        same = np.all(image == colour, axis=-1)
        rows, cols = np.flatnonzero(same.any(1)), np.flatnonzero(same.any(0))
        if labels[-1] in (1, 2):  # circle/square: the centre pixel is always the object's own
            np.testing.assert_allclose(top, np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / 96, atol=1e-6)
            checked += 1
    assert checked >= 3
