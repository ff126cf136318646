"""ssd_jax.convert against PyTorch: torchvision ssd300_vgg16 and ssd.pytorch SSD300 outputs.

The fixtures (tests/fixtures/convert, made by experiments/make_convert_fixtures.py with torch
2.14.1 / torchvision 0.29.1) hold a synthetic image, the PyTorch models' raw head outputs and
torchvision's post-processed detections for weights from ``ssd_jax.testing.synthetic_state_dict``;
here the same weights are rebuilt in NumPy (no PyTorch), converted, and run through our model.
"""

import json
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax import anchors, boxes, checkpoints, cli, convert, convert_layouts, models, postprocess
from ssd_jax.data.normalize import normalize
from ssd_jax.testing import synthetic_state_dict
from ssd_jax.trained_anchors import trained_default_boxes

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "convert")


def _fixture(name):
    with np.load(os.path.join(FIXTURES, name)) as f:
        return {k: f[k] for k in f.files}


def _shapes(tree):
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)


def _rel_err(ours, theirs):
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def tv():
    """torchvision fixture + our model's outputs on the exact tensor torchvision's backbone saw."""
    fx = _fixture("torchvision_ssd300.npz")
    num_classes = fx["cls_logits"].shape[-1]
    params = convert.from_torchvision_ssd300_vgg16(synthetic_state_dict("torchvision_ssd300", num_classes),
                                                   num_classes=num_classes)
    module, _ = models.create("ssd300_vgg16", num_classes)
    loc, logits = jax.jit(module.apply)({"params": params}, jnp.asarray(fx["input"])[None])
    return fx, params, np.asarray(loc[0]), np.asarray(logits[0])


@pytest.fixture(scope="module")
def sp():
    fx = _fixture("ssd_pytorch.npz")
    num_classes = fx["conf"].shape[-1]
    params = convert.from_ssd_pytorch(synthetic_state_dict("ssd_pytorch", num_classes), num_classes=None)
    module, _ = models.create("ssd300_vgg16", num_classes)
    x = normalize(fx["image"], "caffe")  # our RGB caffe input; the fixture fed BGR - (104, 117, 123)
    loc, logits = jax.jit(module.apply)({"params": params}, jnp.asarray(x)[None])
    return fx, params, np.asarray(loc[0]), np.asarray(logits[0])


# ----------------------------------------------------------------------------- layouts

def test_expected_shapes_equal_the_real_pytorch_state_dicts():
    with open(os.path.join(FIXTURES, "layouts.json")) as f:
        layouts = json.load(f)
    for source in ("torchvision_ssd300", "ssd_pytorch", "vgg16_reducedfc"):
        real = {k: tuple(v) for k, v in layouts[source]["shapes"].items()}
        assert convert_layouts.expected_shapes(source, layouts[source]["num_classes"]) == real, source
    real = {k: tuple(v) for k, v in layouts["vgg16_imagenet"]["shapes"].items()}
    ours = convert_layouts.expected_shapes("vgg16_imagenet")
    assert {k: real[k] for k in ours} == ours
    assert sorted(set(real) - set(ours)) == ["classifier.6.bias", "classifier.6.weight"]


@pytest.mark.parametrize("source", ["torchvision_ssd300", "ssd_pytorch"])
def test_converted_tree_is_exactly_the_model_params_tree(source):
    module, _ = models.create("ssd300_vgg16", 7)
    want = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 300, 300, 3))))["params"]
    fn = convert.from_torchvision_ssd300_vgg16 if source == "torchvision_ssd300" else convert.from_ssd_pytorch
    got = fn(synthetic_state_dict(source, 7), num_classes=7)
    assert _shapes(got) == _shapes(flax.core.unfreeze(want))
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(got))


def test_kernel_layout_and_bgr_flip_by_hand():
    sd = synthetic_state_dict("ssd_pytorch", 3)
    p = convert.from_ssd_pytorch(sd, 3)
    w = sd["vgg.0.weight"]  # [O, I(BGR), kh, kw]
    k = p["base"]["conv1_1"]["kernel"]  # [kh, kw, I(RGB), O]
    assert k[1, 2, 0, 5] == w[5, 2, 1, 2] and k[0, 1, 2, 7] == w[7, 0, 0, 1]
    fc6 = p["base"]["fc6"]["kernel"]
    assert fc6[2, 0, 10, 3] == sd["vgg.31.weight"][3, 10, 2, 0]
    np.testing.assert_array_equal(p["base"]["conv4_3_norm"]["scale"], sd["L2Norm.weight"])
    np.testing.assert_array_equal(p["extras"]["conv9_2"]["bias"], sd["extras.3.bias"])
    np.testing.assert_array_equal(p["heads"]["conf_5"]["bias"], sd["conf.5.bias"])


# ----------------------------------------------------------------------------- torchvision

def test_torchvision_normalisation_is_ours_within_quantisation(tv):
    fx = tv[0]
    np.testing.assert_allclose(fx["transform_mean"] * 255, (123, 117, 104), atol=1e-3)
    np.testing.assert_allclose(fx["transform_std"] * 255, 1.0, rtol=1e-6)
    assert np.abs(normalize(fx["image"], "caffe") - fx["input"]).max() < 1e-3


def test_torchvision_raw_head_outputs_match(tv):
    fx, _, loc, logits = tv
    assert loc.shape == fx["bbox_regression"].shape == (8732, 4)
    assert _rel_err(loc, fx["bbox_regression"]) < 1e-4
    assert _rel_err(logits, fx["cls_logits"]) < 1e-4


def test_torchvision_default_boxes(tv):
    """SSD300_COCO with only w, h clipped (centres of the 10x10 map reach 304 px)."""
    ours = trained_default_boxes(convert.model_info("torchvision_ssd300", 91))
    np.testing.assert_allclose(np.asarray(boxes.center_to_corners(ours)) * 300, tv[0]["anchors"], atol=1e-3)
    assert ours[:, :2].max() > 1.01


def test_torchvision_detections_match(tv):
    fx, _, loc, logits = tv
    a = jnp.asarray(trained_default_boxes(convert.model_info("torchvision_ssd300", 91)))
    det = postprocess.detect(jnp.asarray(loc)[None], jnp.asarray(logits)[None], a, score_threshold=0.01,
                             iou_threshold=0.45, pre_nms_top_k=400, max_detections=200)
    n = int(det.num_valid[0])
    assert n == len(fx["scores"]) > 50
    np.testing.assert_array_equal(np.asarray(det.classes[0, :n]), fx["labels"])
    np.testing.assert_allclose(np.asarray(det.scores[0, :n]), fx["scores"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(det.boxes[0, :n]), fx["boxes"] / 300.0, atol=1e-4)


def test_coco_class_names_are_torchvisions():
    fx = _fixture("torchvision_ssd300.npz")
    assert tuple(str(s) for s in fx["coco_categories"]) == convert_layouts.COCO_91_CLASS_NAMES
    info = convert.model_info("torchvision_ssd300", 91)
    assert info["class_names"][12] == "N/A" and len(info["class_names"]) == 91
    assert info["anchors"] == {"preset": "SSD300_COCO", "clip": "wh"}


# ----------------------------------------------------------------------------- ssd.pytorch

def test_ssd_pytorch_raw_outputs_match(sp):
    fx, _, loc, logits = sp
    assert _rel_err(loc, fx["loc"]) < 1e-4
    assert _rel_err(logits, fx["conf"]) < 1e-4


def test_ssd_pytorch_priors_are_clipped_ssd300_voc():
    fx = _fixture("ssd_pytorch.npz")
    ours = trained_default_boxes(convert.model_info("ssd_pytorch", 21))
    np.testing.assert_allclose(ours, fx["priors"], atol=1e-6)
    np.testing.assert_allclose(anchors.default_boxes(anchors.SSD300_VOC.replace(clip=True)), fx["priors"], atol=1e-6)


def test_vgg16_reducedfc_is_the_ssd_pytorch_base():
    full = synthetic_state_dict("ssd_pytorch", 21)
    reduced = {k[len("vgg."):]: v for k, v in full.items() if k.startswith("vgg.")}
    base = convert.vgg16_base_from_reducedfc(reduced)
    want = convert.from_ssd_pytorch(full)["base"]
    del want["conv4_3_norm"]
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, base["base"], want))
    assert list(base) == ["base"]


# ----------------------------------------------------------------------------- ImageNet VGG16

def test_subsample_fc6_fc7_take_the_expected_slices():
    rng = np.random.default_rng(0)
    w6, b6 = rng.standard_normal((16, 2 * 7 * 7)), rng.standard_normal(16)
    k6, c6 = convert.subsample_fc6(w6, b6, in_channels=2)
    assert k6.shape == (4, 2, 3, 3) and c6.shape == (4,)
    for o in range(4):
        assert c6[o] == np.float32(b6[4 * o])
        for c in range(2):
            for ty in range(3):
                for tx in range(3):
                    assert k6[o, c, ty, tx] == np.float32(w6[4 * o, c * 49 + (3 * ty) * 7 + 3 * tx])
    w7, b7 = rng.standard_normal((12, 12)), rng.standard_normal(12)
    k7, c7 = convert.subsample_fc7(w7, b7)
    assert k7.shape == (3, 3, 1, 1)
    for o in range(3):
        assert c7[o] == np.float32(b7[4 * o])
        for i in range(3):
            assert k7[o, i, 0, 0] == np.float32(w7[4 * o, 4 * i])


def _imagenet_state_dict():
    """Real vgg16 shapes; the 100M-entry classifier matrices are zero-copy broadcasts."""
    shapes = convert_layouts.expected_shapes("vgg16_imagenet")
    rng = np.random.default_rng(1)
    sd = {k: rng.standard_normal(s).astype(np.float32) * 0.01 for k, s in shapes.items()
          if not k.startswith("classifier.")}
    fc6_cols = np.arange(512 * 49, dtype=np.float32)  # fc6[o, j] = j: every row alike
    sd["classifier.0.weight"] = np.broadcast_to(fc6_cols, (4096, 512 * 49))
    sd["classifier.0.bias"] = np.arange(4096, dtype=np.float32)
    sd["classifier.3.weight"] = np.broadcast_to(np.arange(4096, dtype=np.float32), (4096, 4096))
    sd["classifier.3.bias"] = -np.arange(4096, dtype=np.float32)
    sd["classifier.6.weight"] = np.broadcast_to(np.float32(0), (1000, 4096))  # ignored
    sd["classifier.6.bias"] = np.zeros(1000, np.float32)
    return sd


def test_vgg16_imagenet_base():
    sd = _imagenet_state_dict()
    p = convert.vgg16_base_from_torchvision_imagenet(sd)
    module, _ = models.create("ssd300_vgg16", 21)
    want = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 300, 300, 3))))["params"]["base"]
    want = _shapes(flax.core.unfreeze(want))
    del want["conv4_3_norm"]
    assert _shapes(p["base"]) == want
    fc6 = p["base"]["fc6"]  # HWIO [3, 3, 512, 1024]
    assert fc6["kernel"][2, 1, 7, 0] == 7 * 49 + 6 * 7 + 3 and fc6["bias"][5] == 20
    fc7 = p["base"]["fc7"]
    assert fc7["kernel"][0, 0, 9, 100] == 36 and fc7["bias"][3] == -12
    np.testing.assert_array_equal(p["base"]["conv3_2"]["kernel"], sd["features.12.weight"].transpose(2, 3, 1, 0))

    # conv1_1 folded from ImageNet mean/std input to caffe input: same output away from borders.
    w, b = sd["features.0.weight"], sd["features.0.bias"]
    patch = np.random.default_rng(2).integers(0, 256, (3, 3, 3)).astype(np.float64)  # [y, x, rgb]
    torch_in = (patch / 255 - np.array(convert.IMAGENET_MEAN_RGB)) / np.array(convert.IMAGENET_STD_RGB)
    torch_out = np.einsum("oiyx,yxi->o", w, torch_in) + b
    ours = p["base"]["conv1_1"]
    our_out = np.einsum("yxio,yxi->o", ours["kernel"], patch - np.array(convert.CAFFE_MEAN_RGB)) + ours["bias"]
    np.testing.assert_allclose(our_out, torch_out, rtol=1e-4, atol=1e-4)
    unfolded = convert.vgg16_base_from_torchvision_imagenet(sd, fold_normalization=False, include_fc=False)
    np.testing.assert_array_equal(unfolded["base"]["conv1_1"]["kernel"], w.transpose(2, 3, 1, 0))
    assert "fc6" not in unfolded["base"]


def test_vgg16_imagenet_features_weights_with_nan_classifier_need_include_fc_false():
    sd = _imagenet_state_dict()
    sd["classifier.0.bias"] = np.full(4096, np.nan, np.float32)
    with pytest.raises(ValueError, match=r"classifier.0 \(-> fc6\).*include_fc=False"):
        convert.vgg16_base_from_torchvision_imagenet(sd)
    assert "fc6" not in convert.vgg16_base_from_torchvision_imagenet(sd, include_fc=False)["base"]


# ----------------------------------------------------------------------------- errors

def test_all_key_problems_are_reported_together():
    sd = synthetic_state_dict("torchvision_ssd300", 4)
    del sd["backbone.features.5.weight"], sd["head.regression_head.module_list.3.bias"]
    sd["backbone.extra.2.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    sd["foo.bar"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as e:
        convert.from_torchvision_ssd300_vgg16(sd, num_classes=4)
    msg = str(e.value)
    for piece in ("missing (2)", "backbone.features.5.weight", "head.regression_head.module_list.3.bias",
                  "unexpected (1): foo.bar", "wrong shape (1)", "backbone.extra.2.0.weight: (1, 1, 1, 1) "
                  "(expected (128, 512, 1, 1))"):
        assert piece in msg, piece
    with pytest.raises(ValueError, match=r"wrong shape \(12\): conf.0.weight: \(24, 512, 3, 3\) \(expected \(84, 512"):
        convert.from_ssd_pytorch({"module." + k: v for k, v in synthetic_state_dict("ssd_pytorch", 6).items()})


def test_reading_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError, torch installed or not
    with pytest.raises(ImportError, match=r"pip install -e '\.\[torch\]'"):
        convert.from_ssd_pytorch(str(path))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        convert.from_ssd_pytorch(str(tmp_path / "missing.pth"))


# ----------------------------------------------------------------------------- workdir / CLI

def test_cli_writes_a_loadable_workdir_and_base_only_init_from(tmp_path, sp):
    from ssd_jax import train_utils

    _, params, _, _ = sp
    num_classes = params["heads"]["conf_0"]["bias"].shape[0] // 4
    sd_path = tmp_path / "ssd.npz"
    np.savez(sd_path, **synthetic_state_dict("ssd_pytorch", num_classes))
    convert.main(["--from", "ssd_pytorch", str(sd_path), "--workdir", str(tmp_path / "full")])
    info = checkpoints.read_model_info(str(tmp_path / "full"))
    assert info["model"] == "ssd300_vgg16" and info["num_classes"] == num_classes
    assert info["normalization"] == "caffe" and info["image_size"] == [300, 300]
    assert info["postprocess"] == dict(score_threshold=0.01, iou_threshold=0.45, pre_nms_top_k=400,
                                       max_detections=200)
    variables, step = checkpoints.load_model_variables(str(tmp_path / "full"))
    assert step == 0
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, dict(variables["params"]), params))
    # The Detector decodes against the default boxes the weights were trained with (ssd.pytorch's
    # PriorBox: SSD300_VOC with all four values clipped), not the factory's unclipped ones.
    from ssd_jax import anchors
    from ssd_jax.detector import Detector
    detector = Detector.from_workdir(str(tmp_path / "full"))
    assert detector.spec == anchors.SSD300_VOC.replace(clip=True)

    # Base-only workdir (vgg16_reducedfc) -> init_from copies exactly the base arrays.
    reduced = {k[len("vgg."):]: v for k, v in synthetic_state_dict("ssd_pytorch", 21).items()
               if k.startswith("vgg.")}
    np.savez(tmp_path / "reduced.npz", **reduced)
    convert.main(["--from", "vgg16_reducedfc", str(tmp_path / "reduced.npz"), "--workdir", str(tmp_path / "base")])
    assert checkpoints.read_model_info(str(tmp_path / "base"))["num_classes"] == 21
    module, _ = models.create("ssd300_vgg16", 21)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 300, 300, 3))))["params"]
    fresh = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.5, np.float32), flax.core.unfreeze(shapes))
    state = train_utils.TrainState(step=np.int32(0), params=fresh, batch_stats={}, opt_state=None)
    loaded = train_utils.load_pretrained(state, str(tmp_path / "base"))
    want = convert.vgg16_base_from_reducedfc(reduced)["base"]
    np.testing.assert_array_equal(loaded.params["base"]["fc7"]["kernel"], want["fc7"]["kernel"])
    np.testing.assert_array_equal(loaded.params["base"]["conv1_1"]["kernel"], want["conv1_1"]["kernel"])
    assert float(loaded.params["base"]["conv4_3_norm"]["scale"][0]) == 0.5  # not in the file: kept
    assert float(loaded.params["heads"]["conf_0"]["kernel"][0, 0, 0, 0]) == 0.5

    # Refuses to write into a workdir that has checkpoints: one line, exit 1.
    args = ["--from", "vgg16_reducedfc", str(tmp_path / "reduced.npz"), "--workdir", str(tmp_path / "base")]
    assert cli.run(convert.main, args) == cli.EXIT_FAILED
