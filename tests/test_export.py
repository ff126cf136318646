"""ssd_jax.export: every format's detections equal the Detector's on real photos.

Two models, as the export issue asks: an ssd_tiny (96 px) briefly trained on the raccoon set
by the ordinary trainer once per session (30 steps; it already finds the raccoons, with top
scores well above chance, so the detections are a trained model's), and a randomly
initialised ssd300_vgg16 (3 classes) saved as a workdir (model.json + an orbax checkpoint,
as ``convert.write_workdir`` writes them), whose many overlapping low-confidence boxes are a
harder NMS case and whose 2 x 8732 class scores exceed the post-processing's candidate pool,
so its graph holds the exact fallback path too. Each format is exported from them and run on
raccoon photos resized as the Detector resizes them.

Tolerance: counts and classes exactly, boxes (normalised corners) and scores (probabilities)
within ATOL = 1e-4, the issue's bound. StableHLO is the Detector's own XLA program (bit
-identical); the other runtimes compute the same float32 ops with their own kernels and, for
ONNX, XLA's generic convolutions instead of the CPU Winograd ones (about 1e-5 relative), which
measured differ by at most ~1e-6 here, far below 1e-4 and far below the gaps between distinct
detections.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ssd_jax
from ssd_jax import cli
from ssd_jax import export as ssd_export

# Every test here exports a trained model (a training fixture, jax2tf / jax2onnx / TFLite conversions,
# subprocesses): the whole module is in the slow tier.
pytestmark = pytest.mark.slow

RACCOON = os.environ.get("SSD_JAX_RACCOON", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                          "shared", "data", "raccoon"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SIZE = 96
POSTPROCESS = {"score_threshold": 0.05, "iou_threshold": 0.5, "pre_nms_top_k": 100, "max_detections": 40}
ATOL = 1e-4
TRAIN = {"model": "ssd_tiny", "image_size": TINY_SIZE, "batch_size": 16, "num_steps": 30, "optimizer.lr": 3e-3,
         "optimizer.warmup_steps": 5, "eval.every": 0, "eval.batch_size": 8, "eval.with_coco": False,
         "eval.num_sample_images": 0, "checkpoint_every": 1000, "log_every": 10,
         **{f"postprocess.{k}": v for k, v in POSTPROCESS.items()}}


def write_random_workdir(workdir, model, num_classes=2, image_size=None, seed=0, postprocess=None):
    """model.json + checkpoints/0 of a randomly initialised model (what convert.write_workdir writes).

    The variables are drawn in NumPy from their shapes (LeCun-normal kernels as Flax initialises them, zero biases, unit
    BatchNorm statistics) so that no ``module.init`` has to be compiled.
    """
    import jax
    import jax.numpy as jnp

    from ssd_jax import checkpoints, models

    module, spec = models.create(model, num_classes, image_size=image_size)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)), train=False))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) * np.sqrt(1.0 / fan_in)).astype(leaf.dtype)
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype) * (20.0 if "_norm" in str(path) else 1.0)
        return np.zeros(leaf.shape, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(draw, dict(shapes))
    ckpt = checkpoints.Checkpointer(str(workdir))
    ckpt.save(0, model={"params": variables["params"], "batch_stats": variables.get("batch_stats", {})},
              train={"step": np.zeros((), np.int32)})
    ckpt.wait()
    ckpt.close()
    checkpoints.write_model_info(str(workdir), {
        "model": model, "num_classes": num_classes, "image_size": list(spec.image_size),
        "class_names": ["background", "raccoon"] + [f"class_{i}" for i in range(2, num_classes)],
        "normalization": models.input_normalization(model), "postprocess": dict(postprocess or {})})
    return str(workdir)


def photos(n):
    paths = sorted(glob.glob(os.path.join(RACCOON, "JPEGImages", "*.jpg")))
    if not paths:
        pytest.skip(f"no raccoon photos in {RACCOON}")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:n]]
    return images + [im[:, ::-1] for im in images][: max(0, n - len(images))]


def assert_same_detections(got, ref, atol=ATOL):
    """``got`` (dict of arrays) equals the Detector's ``Detections`` ``ref``: counts, classes, boxes, scores."""
    np.testing.assert_array_equal(np.asarray(got["num_valid"]), np.asarray(ref.num_valid))
    for i, n in enumerate(np.asarray(ref.num_valid)):
        np.testing.assert_array_equal(np.asarray(got["classes"])[i, :n], np.asarray(ref.classes)[i, :n])
        np.testing.assert_allclose(np.asarray(got["boxes"])[i, :n], np.asarray(ref.boxes)[i, :n], atol=atol)
        np.testing.assert_allclose(np.asarray(got["scores"])[i, :n], np.asarray(ref.scores)[i, :n], atol=atol)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """An ssd_tiny workdir trained briefly on the raccoon photos (``configs/raccoon.py`` with TRAIN)."""
    from ssd_jax import configs, train

    if not os.path.isdir(os.path.join(RACCOON, "Annotations")):
        pytest.skip(f"no raccoon set in {RACCOON}")
    config = configs.load("raccoon")
    config.data.root = RACCOON
    for key, value in TRAIN.items():
        *path, leaf = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[leaf] = value
    path = str(tmp_path_factory.mktemp("trained_tiny"))
    train.train_and_evaluate(config, path)
    return path


@pytest.fixture(scope="session")
def detector(workdir):
    return ssd_jax.Detector.from_workdir(workdir, buckets=(1, 3, 8))


@pytest.fixture(scope="session")
def batch8(detector):
    """8 raccoon photos at the model input size (the Detector's host resize) and its detections."""
    resized, _ = detector.preprocess(photos(8))
    return resized, detector.predict_batch(resized)


def test_briefly_trained_detector_finds_the_raccoons(batch8):
    """The reference is a trained model's: every photo has detections, confident ones among them."""
    _, ref = batch8
    num_valid, scores = np.asarray(ref.num_valid), np.asarray(ref.scores)
    assert num_valid.min() > 0
    assert all(scores[i, :n].min() > POSTPROCESS["score_threshold"] for i, n in enumerate(num_valid))
    assert scores[:, 0].max() > 0.3  # a confident detection on some photo (40 steps: ~0.7)
    assert set(np.asarray(ref.classes)[num_valid[:, None] > np.arange(scores.shape[1])]) == {1}


def sliced(ref, n):
    import jax

    return jax.tree_util.tree_map(lambda x: x[:n], ref)


@pytest.fixture(scope="module")
def stablehlo_path(workdir, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stablehlo") / "tiny.stablehlo")
    ssd_export.export_detector(workdir, path, format="stablehlo", batch="dynamic", platforms="cpu,cuda,tpu")
    return path


# ----------------------------------------------------------------------------- stablehlo

def test_stablehlo_symbolic_batch_matches_detector(stablehlo_path, batch8, detector):
    images, ref = batch8
    model = ssd_export.load(stablehlo_path)
    assert model.exported.platforms == ("cpu", "cuda", "tpu")
    assert model.input_shape == (None, TINY_SIZE, TINY_SIZE, 3)
    assert int(ref.num_valid.min()) > 0
    for b in (1, 3, 8):  # one artifact, three batch sizes
        out = model(images[:b])
        assert out["boxes"].shape == (b, POSTPROCESS["max_detections"], 4)
        assert_same_detections(out, sliced(ref, b))
    with open(stablehlo_path + ".json") as f:
        meta = json.load(f)
    assert meta["class_names"] == ["background", "raccoon"] and meta["input_size"] == [TINY_SIZE, TINY_SIZE]
    assert meta["postprocess"] == POSTPROCESS and meta["normalization"] == detector.normalization
    assert meta["batch"] == "dynamic" and meta["platforms"] == ["cpu", "cuda", "tpu"]


def test_stablehlo_runs_in_a_process_without_flax(stablehlo_path, batch8, tmp_path):
    images, ref = batch8
    np.save(tmp_path / "images.npy", images[:3])
    script = (
        "import sys, numpy as np\n"
        "import ssd_jax.export as e\n"
        f"out = e.load({stablehlo_path!r})(np.load({str(tmp_path / 'images.npy')!r}))\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **out)\n"
        "assert 'flax' not in sys.modules and 'ssd_jax.models' not in sys.modules, sorted(sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_detections(dict(np.load(tmp_path / "out.npz")), sliced(ref, 3))


def test_stablehlo_bad_input_is_a_clear_error(stablehlo_path, batch8, tmp_path):
    images, _ = batch8
    model = ssd_export.load(stablehlo_path)
    with pytest.raises(ssd_export.ExportError, match="uint8"):
        model(images.astype(np.float32))
    with pytest.raises(ssd_export.ExportError, match=r"shape \[\?, 96, 96, 3\].*resize"):
        model(np.zeros((1, 120, 96, 3), np.uint8))
    with pytest.raises(ssd_export.ExportError, match="shape"):
        model(images[0])
    bogus = tmp_path / "bogus.stablehlo"
    bogus.write_bytes(b"not an export")
    with pytest.raises(ssd_export.ExportError, match=r"not a serialized jax\.export"):
        ssd_export.load(str(bogus))


def test_stablehlo_in_graph_resize(workdir, stablehlo_path, batch8, tmp_path):
    import jax.numpy as jnp
    import tensorflow as tf

    from ssd_jax.export._graph import bilinear_resize

    images, _ = batch8
    path = str(tmp_path / "resize.stablehlo")
    ssd_export.export_detector(workdir, path, format="stablehlo", batch="dynamic", resize=True)
    model = ssd_export.load(path)
    assert model.input_shape == (None, None, None, 3)
    # At the input size the resize is the identity: the same detections as the fixed-size artifact.
    fixed = ssd_export.load(stablehlo_path)(images[:2])
    for key, value in model(images[:2]).items():
        np.testing.assert_allclose(value, fixed[key], atol=ATOL)
    # Any size: the resize is TF's bilinear (half-pixel centres, no antialias).
    photo = photos(1)[0]
    out = model(photo[None])
    assert out["boxes"].shape == (1, POSTPROCESS["max_detections"], 4)
    ours = np.asarray(bilinear_resize(jnp.asarray(photo[None], jnp.float32), (TINY_SIZE, TINY_SIZE)))
    theirs = tf.image.resize(photo[None].astype(np.float32), (TINY_SIZE, TINY_SIZE), "bilinear", antialias=False)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-3)


# ----------------------------------------------------------------------------- saved_model

def test_saved_model_matches_detector_without_flax(workdir, batch8, tmp_path):
    import tensorflow  # noqa: F401  (the test extra installs it; a missing one must fail, not skip)

    images, ref = batch8
    path = str(tmp_path / "saved_model")
    ssd_export.export_detector(workdir, path, format="saved_model", batch="dynamic", platforms="cpu,cuda")
    np.save(tmp_path / "images.npy", images)
    script = (
        "import os, sys, numpy as np\n"
        "import tensorflow as tf\n"
        f"serve = tf.saved_model.load({path!r}).signatures['serving_default']\n"
        f"images = np.load({str(tmp_path / 'images.npy')!r})\n"
        "for b in (1, 3, 8):\n"
        "    out = {k: v.numpy() for k, v in serve(images=tf.constant(images[:b])).items()}\n"
        f"    np.savez(os.path.join({str(tmp_path)!r}, f'out{{b}}.npz'), **out)\n"
        "assert 'flax' not in sys.modules, 'flax imported'\n")  # TensorFlow itself imports jax when installed
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    for b in (1, 3, 8):  # one artifact, three batch sizes
        assert_same_detections(dict(np.load(tmp_path / f"out{b}.npz")), sliced(ref, b))


# ----------------------------------------------------------------------------- onnx

def test_onnx_matches_detector(workdir, batch8, tmp_path):
    import jax2onnx  # noqa: F401  (the test extra installs both; a missing one must fail, not skip)
    import onnxruntime as ort
    images, ref = batch8
    path = str(tmp_path / "tiny.onnx")
    meta = ssd_export.export_detector(workdir, path, format="onnx", batch="dynamic")
    assert meta["nms"] == "onnx NonMaxSuppression"
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["B", TINY_SIZE, TINY_SIZE, 3]]
    names = [o.name for o in session.get_outputs()]
    assert names == ["boxes", "scores", "classes", "num_valid"]
    for b in (1, 3, 8):
        out = dict(zip(names, session.run(None, {"images": images[:b]})))
        assert_same_detections(out, sliced(ref, b))


# ----------------------------------------------------------------------------- tflite

def test_tflite_matches_detector(workdir, batch8, tmp_path):
    import tensorflow  # noqa: F401  (the test extra installs both; a missing one must fail, not skip)
    from ai_edge_litert import interpreter as litert
    images, ref = batch8
    path = str(tmp_path / "tiny.tflite")
    ssd_export.export_detector(workdir, path, format="tflite", batch=3)
    runner = litert.Interpreter(model_path=path).get_signature_runner("serving_default")
    assert_same_detections(runner(images=images[:3]), sliced(ref, 3))
    with pytest.raises(ssd_export.ExportError, match="fixed batch"):
        ssd_export.export_detector(workdir, path, format="tflite", batch="dynamic")


# ----------------------------------------------------------------------------- ssd300_vgg16

@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """A random 3-class ssd300_vgg16 workdir, 8 raccoon photos at 300 x 300 and the Detector's
    detections (one compiled batch of 8; per-image results, so batches 1 and 3 are its slices)."""
    workdir = write_random_workdir(tmp_path_factory.mktemp("vgg") / "workdir", "ssd300_vgg16", num_classes=3,
                                   seed=1, postprocess={"max_detections": 50})
    detector = ssd_jax.Detector.from_workdir(workdir, buckets=(8,))
    images, _ = detector.preprocess(photos(8))
    ref = detector.predict_batch(images)
    assert int(ref.num_valid.min()) > 0
    return workdir, images, ref


@pytest.mark.slow
def test_ssd300_vgg16_stablehlo_matches_detector(vgg, tmp_path):
    workdir, images, ref = vgg
    path = str(tmp_path / "vgg.stablehlo")
    ssd_export.export_detector(workdir, path, format="stablehlo", batch="dynamic", platforms="cpu,cuda,tpu")
    model = ssd_export.load(path)
    assert model.input_shape == (None, 300, 300, 3)
    # One batch size: each is a VGG16 compile (minutes on a loaded 2-core machine); ssd_tiny and
    # the ONNX test below check batches 1, 3 and 8 of one symbolic artifact.
    assert_same_detections(model(images), ref)


@pytest.mark.slow
def test_ssd300_vgg16_onnx_matches_detector(vgg, tmp_path):
    """Max pooling and the Winograd layers export as converter-friendly ops (ops.platform.for_converters)."""
    import onnx
    import onnxruntime as ort

    workdir, images, ref = vgg
    path = str(tmp_path / "vgg.onnx")
    ssd_export.export_detector(workdir, path, format="onnx", batch="dynamic")
    ops = {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}
    assert "MaxPool" not in ops and "If" not in ops and "Conv" in ops
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for b in (1, 3, 8):
        assert_same_detections(dict(zip(names, session.run(None, {"images": images[:b]}))), sliced(ref, b))


@pytest.mark.slow
def test_ssd300_vgg16_saved_model_matches_detector(vgg, tmp_path):
    import tensorflow as tf

    workdir, images, ref = vgg
    path = str(tmp_path / "vgg_saved_model")
    ssd_export.export_detector(workdir, path, format="saved_model", batch="dynamic")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}  # one compile, as above
    assert_same_detections(out, ref)


# ----------------------------------------------------------------------------- errors and CLI

def test_cli_user_mistakes_give_one_line(workdir, tmp_path, capsys):
    from ssd_jax.export.__main__ import main

    out = str(tmp_path / "x.stablehlo")
    cases = [  # (argv, exit code: 1 the command ran and failed, 2 the command line is wrong; message)
        (["--workdir", str(tmp_path / "missing"), "--format", "stablehlo", "--out", out], 1, "does not exist"),
        (["--workdir", workdir, "--format", "pb", "--out", out], 2, "unknown format 'pb'"),
        (["--workdir", workdir, "--format", "stablehlo", "--out", out, "--platforms", "cpu,gpux"], 2,
         "unknown platform 'gpux'"),
        (["--workdir", workdir, "--format", "stablehlo", "--out", out, "--checkpoint", "7"], 1, "no checkpoint 7"),
        (["--workdir", workdir, "--format", "stablehlo", "--out", out, "--batch", "0"], 2, "batch must be"),
        (["--workdir", workdir, "--format", "tflite", "--out", out, "--batch", "dynamic"], 2, "fixed batch"),
    ]
    for argv, code, message in cases:
        assert cli.run(main, argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
        assert not os.path.exists(out)


def test_cli_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ssd_jax.export", "--workdir", str(tmp_path), "--format", "zip",
                             "--out", str(tmp_path / "m")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown format 'zip'; expected one of stablehlo, saved_model, onnx, tflite"]


def test_missing_extra_names_the_install_command(monkeypatch, workdir, tmp_path):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx -> ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[export\]'"):
        ssd_export.export_detector(workdir, str(tmp_path / "m.onnx"), format="onnx")
