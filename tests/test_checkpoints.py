"""Checkpointer and load_model_variables on tiny trees in a temporary workdir."""

import logging
import os

import numpy as np
import pytest

from ssd_jax import checkpoints
from ssd_jax.errors import CheckpointError


def state(value):
    model = {"params": {"w": np.full((3, 2), value, np.float32), "b": np.full((2,), -value, np.float32)},
             "batch_stats": {"mean": np.full((2,), 2 * value, np.float32)}}
    train = {"opt_state": {"mu": np.full((3, 2), value / 10, np.float32)}, "step": np.array(value, np.int32)}
    return model, train


def corrupt(step_dir):
    """Empties every file of a step folder (a disk error after the save completed)."""
    hit = 0
    for root, _, files in os.walk(step_dir):
        for name in files:
            if not name.startswith("_CHECKPOINT_METADATA"):
                open(os.path.join(root, name), "wb").close()
                hit += 1
    assert hit


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


def test_save_and_restore_latest_keeps_the_newest_keep_steps(workdir):
    ckpt = checkpoints.Checkpointer(workdir, keep=2)
    assert ckpt.restore_latest(*state(0.0)) is None
    for step in (10, 20, 30):
        ckpt.save(step, *state(float(step)))
    ckpt.save(30, *state(99.0))  # an existing step is not saved again
    ckpt.wait()
    assert ckpt.latest_step() == 30
    assert sorted(ckpt.latest.all_steps()) == [20, 30]
    step, model, train = ckpt.restore_latest(*state(0.0))
    assert step == 30
    np.testing.assert_array_equal(model["params"]["w"], np.full((3, 2), 30.0))
    np.testing.assert_array_equal(model["batch_stats"]["mean"], [60.0, 60.0])
    np.testing.assert_allclose(train["opt_state"]["mu"], np.full((3, 2), 3.0))
    assert int(train["step"]) == 30
    ckpt.close()


def test_save_best_keeps_the_highest_metric_and_the_later_step_on_a_tie(workdir):
    ckpt = checkpoints.Checkpointer(workdir, keep=3)
    for step, m in [(1, 0.5), (2, 0.7), (3, 0.6)]:
        ckpt.save_best(step, state(float(step))[0], {"mAP": m, "note": "not a number"})
    ckpt.wait()
    assert ckpt.best.all_steps() == [2]
    ckpt.save_best(4, state(4.0)[0], {"mAP": 0.7})  # a tie: orbax keeps the later step
    ckpt.wait()
    assert ckpt.best.all_steps() == [4]
    ckpt.close()
    variables, step = checkpoints.load_model_variables(workdir, "best")
    assert step == 4
    np.testing.assert_array_equal(variables["params"]["w"], np.full((3, 2), 4.0))


def test_best_falls_back_to_latest_and_steps_are_found_in_either_folder(workdir):
    ckpt = checkpoints.Checkpointer(workdir, keep=3)
    for step in (5, 6):
        ckpt.save(step, *state(float(step)))
    ckpt.wait()
    variables, step = checkpoints.load_model_variables(workdir, "best")  # no evaluation yet
    assert step == 6
    np.testing.assert_array_equal(variables["params"]["b"], [-6.0, -6.0])
    ckpt.save_best(4, state(4.0)[0], {"mAP": 0.3})
    ckpt.wait()
    ckpt.close()
    assert checkpoints.load_model_variables(workdir, "best")[1] == 4
    assert checkpoints.load_model_variables(workdir, "latest")[1] == 6
    assert checkpoints.load_model_variables(workdir, 5)[1] == 5
    variables, step = checkpoints.load_model_variables(workdir, "4")  # only in best/
    assert step == 4
    np.testing.assert_array_equal(variables["params"]["w"], np.full((3, 2), 4.0))


def test_missing_checkpoint_lists_what_is_available(workdir):
    with pytest.raises(FileNotFoundError, match="available: none"):
        checkpoints.load_model_variables(workdir, "latest")
    ckpt = checkpoints.Checkpointer(workdir, keep=3)
    ckpt.save(7, *state(7.0))
    ckpt.save_best(7, state(7.0)[0], {"mAP": 0.1})
    ckpt.wait()
    ckpt.close()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 8 .*available: checkpoints/7, best/7"):
        checkpoints.load_model_variables(workdir, 8)


def test_unreadable_latest_falls_back_to_the_previous_with_a_warning(workdir, caplog):
    ckpt = checkpoints.Checkpointer(workdir, keep=3)
    for step in (1, 2):
        ckpt.save(step, *state(float(step)))
    ckpt.wait()
    ckpt.close()
    corrupt(os.path.join(workdir, "checkpoints", "2"))
    with caplog.at_level(logging.WARNING, logger="ssd_jax.checkpoints"):
        variables, step = checkpoints.load_model_variables(workdir, "latest")
    assert step == 1 and "checkpoint step 2" in caplog.text and "unreadable" in caplog.text
    np.testing.assert_array_equal(variables["params"]["w"], np.full((3, 2), 1.0))


def test_resume_falls_back_over_a_corrupt_step_but_never_starts_afresh_over_checkpoints(workdir):
    ckpt = checkpoints.Checkpointer(workdir, keep=3)
    for step in (1, 2):
        ckpt.save(step, *state(float(step)))
    ckpt.wait()
    ckpt.close()
    corrupt(os.path.join(workdir, "checkpoints", "2"))
    step, model, _ = checkpoints.Checkpointer(workdir).restore_latest(*state(0.0))
    assert step == 1 and float(model["params"]["w"][0, 0]) == 1.0
    corrupt(os.path.join(workdir, "checkpoints", "1"))
    with pytest.raises(CheckpointError, match=r"none of the 2 checkpoints in .* restores \(steps \[2, 1\]"):
        checkpoints.Checkpointer(workdir).restore_latest(*state(0.0))


def test_model_info_round_trip_and_missing(workdir):
    with pytest.raises(FileNotFoundError, match=r"model\.json is missing"):
        checkpoints.read_model_info(workdir)
    info = {"model": "ssd300_vgg16", "num_classes": 21, "class_names": ["bg", "cat"]}
    checkpoints.write_model_info(workdir, info)
    assert checkpoints.read_model_info(workdir) == info
