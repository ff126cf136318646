"""End-to-end training: the command line, resume, 1 vs 8 devices, config errors, non-finite loss.

One in-process run on the 8 CPU devices of conftest is the reference; command-line runs are
subprocesses (absl flags are process-global) that read the same tiny config.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import train_helpers as h

from ssd_jax import configs, train, train_utils
from ssd_jax.errors import ConfigError, NonFiniteLossError

STEPS = h.OVERRIDES["num_steps"]
CLI_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    result = train.train_and_evaluate(h.tiny_config(), str(workdir))
    return workdir, result


def test_in_process_run_writes_everything(reference_run):
    workdir, result = reference_run
    assert len(result["losses"]) == STEPS and all(np.isfinite(result["losses"]))
    assert 0.0 <= result["mAP"] <= 1.0 and result["num_images"] == 8
    for name in ("config.json", "model.json", "metrics.jsonl", "samples.png", "eval.json", "eval_pr.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert os.listdir(os.path.join(workdir, "best")) == ["6"]
    with open(os.path.join(workdir, "model.json")) as f:
        info = json.load(f)
    assert info["model"] == "ssd_tiny" and info["class_names"][0] == "background"


@pytest.mark.slow
def test_cli_on_one_device_then_resumed_on_eight_matches_the_reference(reference_run, tmp_path):
    """Two command-line runs: 3 steps on 1 device, then resumed to 6 steps on 8 devices.

    Steps 1-3 check that the device count does not change the losses; steps 4-6 check that resuming
    continues exactly where the uninterrupted in-process run (8 devices) went.
    """
    _, reference = reference_run
    first = h.run(tmp_path, "--config.num_steps=3", devices=1, timeout=CLI_TIMEOUT_S)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 cpu device(s)" in first.stdout
    second = h.run(tmp_path, devices=8, timeout=CLI_TIMEOUT_S)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed" in second.stdout and "at step 3" in second.stdout
    logged = h.logged_losses(tmp_path)
    assert sorted(logged) == list(range(1, STEPS + 1))  # steps 4..6 ran once, after 1..3
    np.testing.assert_allclose([logged[s] for s in range(1, STEPS + 1)], reference["losses"], rtol=1e-4)


def _module_run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], env=h.cli_env(1), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("module, args, code, message", [
    ("ssd_jax.train", ["--config", "shapes", "--workdir", "W", "--config.optimizer.lrr=0.1"], 2,
     "error: config has no field 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
    ("ssd_jax.train", ["--config", "no_such_config", "--workdir", "W"], 2,
     "error: config 'no_such_config' is neither a file nor a packaged config; packaged configs: "),
    ("ssd_jax.train", ["--config", "raccoon", "--workdir", "W", "--config.data.root=/no/such/folder"], 1,
     "error: "),
    ("ssd_jax.evaluate", ["--workdir", "/no/such/workdir"], 1, "error: /no/such/workdir has no config.json"),
    ("ssd_jax.diagnose", ["--config", "shapes", "--config.matching.iou_treshold=0.4"], 2,
     "did you mean 'matching.iou_threshold'?"),
])
def test_a_users_mistake_is_one_line_without_a_traceback(tmp_path, module, args, code, message):
    run = _module_run(module, *[str(tmp_path / a) if a == "W" else a for a in args])
    assert run.returncode == code, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr


def test_unknown_config_name_lists_the_packaged_ones():
    with pytest.raises(FileNotFoundError, match="shapes"):
        configs.resolve("no_such_config")


def test_batch_that_does_not_divide_over_devices_is_a_clear_error():
    assert jax.device_count() == 8
    with pytest.raises(ConfigError, match="batch_size=12 does not divide by the 8 devices"):
        train_utils.check_batch_size(12)


def test_non_finite_loss_stops_with_the_step(tmp_path):
    config = h.tiny_config(**{"optimizer.lr": 1e30, "optimizer.warmup_steps": 0, "optimizer.name": "sgd",
                            "checkpoint_every": 1})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step \d") as err:
        train.train_and_evaluate(config, str(tmp_path))
    bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
    kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
    assert kept and max(kept) < bad_step  # the last good checkpoint is kept, none after the NaN


def test_evaluate_command_reproduces_the_final_metrics(reference_run):
    from ssd_jax import evaluate

    workdir, result = reference_run
    again = evaluate.evaluate_workdir(str(workdir), "latest")
    assert again["step"] == STEPS
    np.testing.assert_allclose(again["mAP"], result["mAP"], atol=1e-6)
    np.testing.assert_array_equal(again["num_gt"], result["num_gt"])
    for name in ("eval_latest.json", "eval_latest_table.txt", "eval_latest_pr.png"):
        assert os.path.exists(os.path.join(workdir, name)), name


def test_every_packaged_config_loads_and_names_a_registered_model():
    from ssd_jax import models

    assert {"shapes", "raccoon", "ssd300_voc0712", "ssd512_voc0712", "ssd300_coco",
            "ssdlite320_mobilenet_v2_coco"} <= set(configs.names())
    for name in configs.names():
        config = configs.load(name)
        assert config.model in models.names(), name
        assert config.batch_size > 0 and config.num_steps > 0, name


def _one_step(config):
    """(state before, state after, compiled step) of one training step on a synthetic batch, 1 device."""
    task = train_utils.build_task(config)
    state = train_utils.init_state(task, seed=0)
    h, w = task.spec.image_size
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.5, (8, 2, 2))
    batch = {"image": rng.normal(size=(8, h, w, 3)).astype(np.float32),
             "boxes": np.concatenate([xy, xy + 0.4], -1).astype(np.float32),
             "labels": np.ones((8, 2), np.int32), "mask": np.ones((8, 2), bool)}
    step = jax.jit(train_utils.make_train_step(task, config)).lower(state, batch).compile()
    return state, step(state, batch)[0], step


def test_frozen_layers_stay_fixed_and_their_backward_pass_is_not_computed():
    frozen = ("base/conv1", "base/conv1_bn", "base/conv2")
    before, after, step = _one_step(h.tiny_config(**{"optimizer.frozen": frozen, "optimizer.warmup_steps": 0}))
    _, _, step_all = _one_step(h.tiny_config(**{"optimizer.warmup_steps": 0}))
    for name, old in before.params["base"].items():
        changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old),
                                                           jax.tree.leaves(after.params["base"][name]))]
        assert (not any(changed)) if name in ("conv1", "conv1_bn", "conv2") else all(changed), name
    flops = lambda compiled: compiled.cost_analysis()["flops"]
    # conv2's weight gradient and the input gradients of conv2 and conv1 are gone.
    assert flops(step) < 0.95 * flops(step_all)


def test_moving_average_follows_the_training_step():
    before, after, _ = _one_step(h.tiny_config(**{"optimizer.ema_decay": 0.99, "optimizer.warmup_steps": 0}))
    assert int(after.step) == 1
    for p0, p1, e1 in zip(*(jax.tree.leaves(t) for t in (before.params, after.params, after.ema_params))):
        np.testing.assert_allclose(e1, 0.1 * np.asarray(p0) + 0.9 * np.asarray(p1), rtol=1e-5, atol=1e-7)
    assert train_utils.model_variables(after)["params"] is after.ema_params
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        train_utils.build_task(h.tiny_config(**{"optimizer.ema_decay": 1.0}))


@pytest.mark.slow
def test_moving_average_is_evaluated_checkpointed_and_resumed_exactly(tmp_path):
    """With ema_decay the trainer scores and saves the average; 3 + 3 resumed steps equal 6 straight."""
    from ssd_jax import checkpoints, evaluate

    config = lambda **kw: h.tiny_config(**{"optimizer.ema_decay": 0.5, **kw})
    straight = train.train_and_evaluate(config(), str(tmp_path / "straight"))
    train.train_and_evaluate(config(num_steps=3), str(tmp_path / "resumed"))
    resumed = train.train_and_evaluate(config(), str(tmp_path / "resumed"))
    np.testing.assert_allclose(resumed["losses"], straight["losses"][3:], rtol=1e-5)
    np.testing.assert_allclose(resumed["mAP"], straight["mAP"], atol=1e-6)
    saved = [checkpoints.load_model_variables(str(tmp_path / d), "latest")[0]["params"]
             for d in ("straight", "resumed")]
    for a, b in zip(*(jax.tree.leaves(t) for t in saved)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    again = evaluate.evaluate_workdir(str(tmp_path / "straight"), "latest")  # scores the saved model item
    np.testing.assert_allclose(again["mAP"], straight["mAP"], atol=1e-6)
    ckpt = checkpoints.Checkpointer(str(tmp_path / "straight"))
    task = train_utils.build_task(config())
    state = train_utils.init_state(task, 0)
    _, model, train_item = ckpt.restore_latest(*train_utils.checkpoint_items(state))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(model["params"]),
                                                     jax.tree.leaves(train_item["train_params"]))]
    assert any(moved)  # the model item is the average, not the trained params
    # fine-tuning from it starts the average at the copied params (separate buffers: the step donates both)
    tuned = train.train_and_evaluate(config(num_steps=2, init_from=str(tmp_path / "straight")), str(tmp_path / "tuned"))
    assert len(tuned["losses"]) == 2 and all(np.isfinite(tuned["losses"]))


def test_frozen_path_typo_is_a_config_error():
    with pytest.raises(ConfigError, match=r"base/conv9.*name no parameters"):
        train_utils.build_task(h.tiny_config(**{"optimizer.frozen": ("base/conv9",)}))
