"""python -m ssd_jax.diagnose on the raccoon photos; background-only batches train."""

import json
import os

import jax.numpy as jnp
import numpy as np
from PIL import Image

from ssd_jax import anchors, cli, configs, diagnose, losses, matching, models

RACCOON = os.environ.get("SSD_JAX_RACCOON", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                          "shared", "data", "raccoon"))


def test_diagnose_raccoon_reports_fits_and_draws(tmp_path, capsys):
    args = ["--config", "raccoon", f"--config.data.root={RACCOON}", "--out", str(tmp_path)]
    assert cli.run(diagnose.main, args) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "training split: 160 images, 173 boxes, 0 images without objects" in printed
    assert "coverage per size" in printed and "fitted" in printed
    result = json.loads((tmp_path / "diagnose.json").read_text())
    current, fitted = result["current"]["all"], result["fitted"]["all"]
    assert current["boxes"] == fitted["boxes"] == 173
    assert fitted["coverage"] >= current["coverage"] and fitted["mean_best_iou"] >= current["mean_best_iou"]
    assert result["current"]["per_size"]["small"]["boxes"] + result["current"]["per_size"]["medium"]["boxes"] \
        + result["current"]["per_size"]["large"]["boxes"] == 173
    # The printed overrides reproduce the fitted spec when trained with.
    config = cli.load_config("raccoon", [(f"anchors.{k}", repr(v)) for k, v in result["fitted_overrides"].items()])
    assert models.config_spec(config).num_boxes == result["fitted"]["num_default_boxes"]
    for name in ("box_stats.png", "coverage.png"):
        assert Image.open(tmp_path / name).size[0] > 300
    if current["coverage"] < 1:
        assert (tmp_path / "uncovered.png").exists()


def test_a_batch_of_background_only_images_gives_a_finite_loss():
    spec = anchors.paper_spec((4, 2, 1), image_size=64)
    default = jnp.asarray(anchors.default_boxes(spec))
    batch, num_boxes = 3, 5
    targets = matching.match_batch(default, jnp.zeros((batch, num_boxes, 4)), jnp.zeros((batch, num_boxes), jnp.int32),
                                   jnp.zeros((batch, num_boxes), bool))
    assert int(jnp.sum(targets.labels)) == 0  # no positives at all
    rng = np.random.default_rng(0)
    loc = jnp.asarray(rng.normal(size=(batch, spec.num_boxes, 4)), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(batch, spec.num_boxes, 3)), jnp.float32)
    for normalization in ("batch", "image"):
        loss, metrics = losses.multibox_loss(loc, logits, targets.loc_targets, targets.labels,
                                             normalization=normalization)
        assert np.isfinite(float(loss)) and float(metrics["loc_loss"]) == 0.0


def test_shapes_config_diagnoses_without_an_output_folder(capsys):
    config = configs.load("shapes")
    with config.unlocked():
        config.data.shapes.num_train = 40
    result = diagnose.diagnose(config, None)
    assert result["num_images"] == 40 and result["split_images"] == 40
    assert "default boxes of ssd_tiny at 128x128: 1532" in capsys.readouterr().out
