"""Host overhead: the device prefetch, metrics fetched only when the loop logs / saves, and the
input pipeline's thread count following the host's cores."""

import os

import jax
import numpy as np
import pytest
import train_helpers as h
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssd_jax import data, train, train_utils
from ssd_jax.data import pipeline
from ssd_jax.errors import NonFiniteLossError
from ssd_jax.runtime import DevicePrefetch


def _host_batches(n, reads):
    for i in range(n):
        reads.append(i)
        yield {"image": np.full((8, 2, 2, 3), i, np.float32), "labels": np.arange(8, dtype=np.int32) + 10 * i}


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_prefetch_yields_every_batch_in_order_sharded_and_reads_depth_ahead(depth):
    sharding = NamedSharding(train_utils.make_mesh(), P("data"))
    reads = []
    out = []
    for batch in DevicePrefetch(_host_batches(5, reads), sharding, depth=depth):
        # when batch i is handed out, exactly batches 0..i+depth have been read (fewer at the end)
        assert len(reads) == min(len(out) + 1 + depth, 5)
        out.append(batch)
    assert len(out) == 5
    for i, batch in enumerate(out):
        assert isinstance(batch["image"], jax.Array) and batch["image"].sharding == sharding
        assert len(batch["image"].addressable_shards) == jax.device_count() == 8
        np.testing.assert_array_equal(batch["image"], np.full((8, 2, 2, 3), i, np.float32))
        np.testing.assert_array_equal(batch["labels"], np.arange(8) + 10 * i)


def test_prefetch_rejects_a_negative_depth():
    with pytest.raises(ValueError, match="depth must be >= 0"):
        DevicePrefetch(iter([]), NamedSharding(train_utils.make_mesh(), P("data")), depth=-1)


def test_metrics_are_fetched_only_when_the_loop_logs_or_saves(tmp_path, monkeypatch):
    """6 steps, log every 3 and checkpoint every 3: two fetches of train metrics, of 3 steps each."""
    fetched = []
    device_get = jax.device_get

    def counting(tree):
        if isinstance(tree, list) and tree and all(isinstance(t, dict) and "loss" in t for t in tree):
            fetched.append(len(tree))
        return device_get(tree)

    monkeypatch.setattr(jax, "device_get", counting)
    result = train.train_and_evaluate(h.tiny_config(log_every=3), str(tmp_path))
    assert fetched == [3, 3]
    assert len(result["losses"]) == 6 and all(np.isfinite(result["losses"]))
    assert h.train_steps_logged(tmp_path) == [3, 6]
    assert h.logged_losses(tmp_path) == {3: result["losses"][2], 6: result["losses"][5]}


def test_a_non_finite_loss_between_checks_names_its_step_and_nothing_is_saved(tmp_path):
    """The loss is checked at the log / save step (6) but the error names the first bad step."""
    config = h.tiny_config(**{"optimizer.lr": 1e30, "optimizer.warmup_steps": 0, "optimizer.name": "sgd",
                              "log_every": 6, "checkpoint_every": 6})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step 2;"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints") or os.listdir(tmp_path / "checkpoints") == []
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_host_cores_is_the_affinity_set_capped_by_the_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    cpu_max = tmp_path / "cpu.max"
    assert pipeline.host_cores(str(cpu_max)) == 6  # no quota file
    cpu_max.write_text("max 100000\n")
    assert pipeline.host_cores(str(cpu_max)) == 6
    cpu_max.write_text("250000 100000\n")  # 2.5 CPUs -> 3 threads
    assert pipeline.host_cores(str(cpu_max)) == 3
    cpu_max.write_text("50000 100000\n")
    assert pipeline.host_cores(str(cpu_max)) == 1


@pytest.mark.parametrize("configured, expected", [(-1, 5), (0, 5), (3, 3)])
def test_pipeline_threads_follow_the_host_cores_unless_configured(monkeypatch, configured, expected):
    monkeypatch.setattr(pipeline, "host_cores", lambda: 5)
    cfg = data.default_config()
    cfg.shapes.num_train, cfg.shapes.num_eval, cfg.shapes.image_size = 8, 4, 32
    cfg.num_parallel_calls = configured
    ds = pipeline.train_dataset(cfg, (32, 32), 4)
    assert ds.options().threading.private_threadpool_size == expected
    batch = next(ds.as_numpy_iterator())
    assert batch["image"].shape == (4, 32, 32, 3)
