"""Shared by the training, multi-process and preemption tests: the tiny shapes config, as
command-line overrides and as a config object, and ways to start ``python -m ssd_jax.train`` in
subprocesses. (``tests`` is not a package: the tests ``import train_helpers``.)
"""

import json
import os
import socket
import subprocess
import sys
import time

from ssd_jax import configs

OVERRIDES = {
    "num_steps": 6, "batch_size": 8, "image_size": 64, "log_every": 1, "checkpoint_every": 3,
    "eval.every": 0, "eval.batch_size": 8, "eval.with_coco": False, "eval.num_sample_images": 2,
    "data.shapes.num_train": 48, "data.shapes.num_eval": 8, "data.shapes.image_size": 64,
    "postprocess.max_detections": 20, "optimizer.warmup_steps": 2,
}
TIMEOUT_S = 300
# The runs of test_multiprocess and test_preemption: the same programs (num_steps is part of the
# learning-rate schedule), so with 4 devices the single-process runs of both modules share one
# compilation through the persistent cache.
RUN = dict(num_steps=6, checkpoint_every=2)
DEVICES = 4


def tiny_config(**extra):
    """The packaged shapes config with OVERRIDES and then ``extra`` (dotted keys) applied."""
    config = configs.load("shapes")
    for key, value in {**OVERRIDES, **extra}.items():
        *path, leaf = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def cli_args(workdir, *extra_args, **overrides):
    """Command line of a tiny training run in ``workdir``; ``overrides`` replace OVERRIDES."""
    values = {**OVERRIDES, **{k.replace("__", "."): v for k, v in overrides.items()}}
    args = [sys.executable, "-m", "ssd_jax.train", "--config", "shapes", "--workdir", str(workdir)]
    return args + [f"--config.{k}={v}" for k, v in values.items()] + list(extra_args)


def compilation_cache_env(tmp_path_factory) -> dict:
    """Environment for a persistent XLA compilation cache shared by the training subprocesses:
    conftest's when it set one, else one for this pytest session."""
    env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        path = tmp_path_factory.getbasetemp() / "jax_compilation_cache"
        path.mkdir(exist_ok=True)
        env["JAX_COMPILATION_CACHE_DIR"] = str(path)
    return env


def cli_env(devices, env=None):
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu", **(env or {}))


def start(workdir, *extra_args, devices=DEVICES, env=None, **overrides):
    """A training subprocess (stdout and stderr as text pipes; stderr merged into stdout)."""
    return subprocess.Popen(cli_args(workdir, *extra_args, **overrides), env=cli_env(devices, env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)


def run(workdir, *extra_args, devices=DEVICES, env=None, timeout=TIMEOUT_S,
        **overrides) -> subprocess.CompletedProcess:
    """A training subprocess run to its end (stdout and stderr captured as text)."""
    return subprocess.run(cli_args(workdir, *extra_args, **overrides), env=cli_env(devices, env),
                          capture_output=True, text=True, timeout=timeout)


def wait_for_line(proc, prefix: str, timeout=TIMEOUT_S) -> list[str]:
    """Reads ``proc``'s output until a line starting with ``prefix``; returns the lines read."""
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process ended before {prefix!r}:\n" + "".join(lines[-40:]))
        lines.append(line)
        if line.startswith(prefix):
            return lines
    proc.kill()
    raise AssertionError(f"no {prefix!r} within {timeout}s:\n" + "".join(lines[-40:]))


def finish(proc, timeout=TIMEOUT_S) -> tuple[int, str]:
    """Waits for ``proc``; (return code, the rest of its output)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as timeout_error:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError("training subprocess timed out:\n" + out[-3000:]) from timeout_error
    return proc.returncode, out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_losses(workdir) -> dict:
    """{step: loss} from metrics.jsonl (a resumed step that ran twice keeps its last loss)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def train_steps_logged(workdir) -> list[int]:
    """Every step logged, in order, repeats included."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if r["split"] == "train"]
