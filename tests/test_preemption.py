"""Fault tolerance: SIGTERM stops after a step with a checkpoint, SIGKILL at a random step then
resume ends with the parameters of an uninterrupted run, unreadable checkpoints are skipped.

Training runs are ``python -m ssd_jax.train`` subprocesses (4 CPU devices) on the tiny shapes
config; they share a persistent XLA compilation cache so only the first one compiles.
"""

import logging
import os
import random
import signal

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers as h

from ssd_jax import checkpoints

RUN = h.RUN
STEPS = RUN["num_steps"]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return h.compilation_cache_env(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_env):
    """An uninterrupted run: (workdir, {step: loss}, final flat variables)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run = h.run(workdir, env=cache_env, **RUN)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return workdir, h.logged_losses(workdir), final_variables(workdir)


def final_variables(workdir):
    variables, step = checkpoints.load_model_variables(str(workdir), "latest")
    assert step == STEPS
    return flax.traverse_util.flatten_dict(jax.device_get(variables))


def assert_same_variables(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg="/".join(key))


@pytest.mark.slow
def test_sigterm_saves_after_the_step_and_the_same_command_resumes(reference, tmp_path, cache_env):
    _, ref_losses, ref_variables = reference
    proc = h.start(tmp_path, env=cache_env, **RUN)
    h.wait_for_line(proc, "step 2/")
    proc.send_signal(signal.SIGTERM)
    code, out = h.finish(proc)
    assert code == 0, out[-3000:]
    assert "received SIGTERM: saved a checkpoint at step" in out and "re-run the same command" in out
    stopped = int(out.split("saved a checkpoint at step ")[1].split()[0])
    assert 2 <= stopped < STEPS, out[-2000:]  # stopped early, after a whole step
    assert str(stopped) in os.listdir(tmp_path / "checkpoints")
    assert not os.path.exists(tmp_path / "eval.json")  # no final evaluation after a stop
    assert max(h.train_steps_logged(tmp_path)) == stopped

    resumed = h.run(tmp_path, env=cache_env, **RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {stopped}" in resumed.stdout
    assert h.train_steps_logged(tmp_path) == list(range(1, STEPS + 1))  # every step ran once
    losses = h.logged_losses(tmp_path)
    np.testing.assert_allclose([losses[s] for s in range(1, STEPS + 1)],
                               [ref_losses[s] for s in range(1, STEPS + 1)], rtol=2e-5)
    assert_same_variables(final_variables(tmp_path), ref_variables)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(reference, tmp_path, cache_env):
    _, ref_losses, ref_variables = reference
    kill_after = random.Random(10).randint(3, STEPS - 1)
    proc = h.start(tmp_path, env=cache_env, **RUN)
    h.wait_for_line(proc, f"step {kill_after}/")
    proc.kill()  # SIGKILL: no handler, possibly in the middle of writing a checkpoint
    h.finish(proc)
    # Complete checkpoints only (the async save of the newest may have been cut: its temporary
    # folder is not a step); step 2's is complete unless the machine is very loaded.
    kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert all(s % 2 == 0 and s <= kill_after for s in kept)

    resumed = h.run(tmp_path, env=cache_env, **RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(resumed.stdout.split("at step ")[1].split()[0]) if kept else 0
    assert start == (max(kept) if kept else 0)
    logged = h.train_steps_logged(tmp_path)
    assert logged[-(STEPS - start):] == list(range(start + 1, STEPS + 1))  # nothing skipped after resume
    losses = h.logged_losses(tmp_path)  # the resumed run's loss where a step ran twice
    np.testing.assert_allclose([losses[s] for s in range(1, STEPS + 1)],
                               [ref_losses[s] for s in range(1, STEPS + 1)], rtol=2e-5)
    assert_same_variables(final_variables(tmp_path), ref_variables)


# ---------------------------------------------------------------- unreadable checkpoints

def tiny_state(value):
    model = {"params": {"w": jnp.full((3, 2), value, jnp.float32)}, "batch_stats": {}}
    train = {"opt_state": {"mu": jnp.full((3, 2), -value, jnp.float32)}, "step": jnp.asarray(int(value), jnp.int32)}
    return model, train


def corrupt(step_dir):
    """Truncates every array data file of a step folder (what a dying disk or copy leaves)."""
    hit = 0
    for root, _, files in os.walk(step_dir):
        if os.path.basename(root) == "d":
            for name in files:
                open(os.path.join(root, name), "wb").close()
                hit += 1
    assert hit, f"no data files found under {step_dir}"


def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3)
    for step in (1, 2):
        ckpt.save(step, *tiny_state(float(step)))
    ckpt.wait()
    checkpoints.write_model_info(str(tmp_path), {"model": "test"})
    corrupt(tmp_path / "checkpoints" / "2")

    with caplog.at_level(logging.WARNING, logger="ssd_jax.checkpoints"):
        step, model, train = ckpt.restore_latest(*tiny_state(0.0))
    assert step == 1
    np.testing.assert_array_equal(model["params"]["w"], np.full((3, 2), 1.0))
    np.testing.assert_array_equal(train["opt_state"]["mu"], np.full((3, 2), -1.0))
    assert "checkpoint step 2" in caplog.text and "unreadable" in caplog.text
    ckpt.close()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ssd_jax.checkpoints"):
        variables, step = checkpoints.load_model_variables(str(tmp_path), "latest")
    assert step == 1 and "checkpoint step 2" in caplog.text
    np.testing.assert_array_equal(variables["params"]["w"], np.full((3, 2), 1.0))
    with pytest.raises(ValueError):  # an explicitly requested step is not silently replaced (tensorstore's read error)
        checkpoints.load_model_variables(str(tmp_path), 2)
