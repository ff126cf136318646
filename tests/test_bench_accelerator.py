"""experiments/benchmarks/bench_accelerator.py and accelerator_report.py: the GPU benchmark's
plumbing, run in its CPU smoke mode (the numbers mean nothing here; their consistency does)."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "experiments", "benchmarks")
SCRIPT = os.path.join(BENCH_DIR, "bench_accelerator.py")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("bench_accelerator")
report = _load("accelerator_report")


def test_random_batch_looks_like_the_input_pipeline():
    data = bench.random_batch(64, (30, 20), 50, 21, seed=3)
    pixels, boxes, labels, mask = data["pixels"], data["boxes"], data["labels"], data["mask"]
    assert pixels.shape == (64, 30, 20, 3) and pixels.dtype == np.uint8 and pixels.min() < 10 and pixels.max() > 245
    assert boxes.shape == (64, 50, 4) and boxes.dtype == np.float32
    assert labels.shape == mask.shape == (64, 50) and labels.dtype == np.int32 and mask.dtype == bool
    counts = mask.sum(1)
    assert counts.min() >= 1 and counts.max() <= 8 and len(set(counts.tolist())) > 1
    # valid boxes first, then padding (as the pipeline pads)
    assert all(mask[i, :c].all() and not mask[i, c:].any() for i, c in enumerate(counts))
    real = boxes[mask]
    assert (real >= 0).all() and (real <= 1).all()
    assert (real[:, 2] > real[:, 0]).all() and (real[:, 3] > real[:, 1]).all()
    assert (labels[mask] >= 1).all() and (labels[mask] <= 20).all()
    assert not labels[~mask].any() and not boxes[~mask].any()


def test_parse_quickstart_reads_the_trainers_lines():
    log = "\n".join([
        "training ssd_tiny on shapes (3 classes), 1 gpu device(s), 1 process(es), global batch 32, steps 0 -> 600, "
        "workdir /tmp/w",
        "step 50/600 | loss 9.1000 (loc 2.0000 conf 7.1000) | lr 1.50e-03 | 40.0 img/s | ETA 5m00s",
        "step 100/600 | loss 5.2000 (loc 1.5000 conf 3.7000) | lr 3.00e-03 | 900.0 img/s | ETA 0m20s",
        "step 150/600 | loss 4.0000 (loc 1.2000 conf 2.8000) | lr 3.00e-03 | 1100.0 img/s | ETA 0m15s",
        "[eval] step 600: VOC mAP@0.5 0.8123, COCO AP 0.5012 (200 images, 3.1s)",
        "trained 600 steps in 1m02s; final VOC mAP@0.5 0.8123",
    ])
    out = report.parse_quickstart(log)
    assert out["header"].startswith("training ssd_tiny")
    assert out["last_progress"] == dict(step=150, of=600, loss=4.0, images_per_s=1100.0)
    assert out["images_per_s_median"] == 1000.0  # the first line (compilation) left out
    assert out["evals"] == [dict(step=600, voc_map50=0.8123, coco_ap=0.5012)]
    assert out["completed"] and out["trained_steps"] == 600 and out["final_voc_map50"] == 0.8123
    stopped = report.parse_quickstart("\n".join(log.splitlines()[:3]))
    assert not stopped["completed"] and stopped["last_progress"]["step"] == 100


def test_merge_reports_missing_and_failed_phases(tmp_path):
    (tmp_path / "phases.tsv").write_text("install\t0\t12\tpython python3\nquickstart\t124\t90\tstopped by its 90s "
                                         "timeout\ntrain\t1\t30\t\ndetector\tskipped\t0\tout of time budget\n")
    (tmp_path / "train.json").write_text(json.dumps({"argv": ["--parts", "train"], "jax": "0.10.2",
                                                     "train": {"error": "RuntimeError: boom", "wall_s": 3.0}}))
    (tmp_path / "quickstart.log").write_text("step 50/600 | loss 9.1 (loc 2 conf 7.1) | lr 1e-3 | 40.0 img/s | ETA 1m")
    (tmp_path / "train.log").write_text("".join(f"line {i}\n\n" for i in range(10)) + "RuntimeError: boom\n")
    (tmp_path / "install.log").write_text("fine\n")
    doc = report.merge(str(tmp_path), "/tmp/w")
    assert doc["phases"]["quickstart"]["note"] == "stopped by its 90s timeout"
    assert doc["phases"]["train"]["log_tail"] == [*(f"line {i}" for i in range(5, 10)), "RuntimeError: boom"]
    assert "log_tail" not in doc["phases"]["install"]  # exit 0
    assert doc["phases"]["detector"]["rc"] == "skipped" and doc["total_wall_s"] == 132.0
    assert doc["quickstart"]["completed"] is False and doc["quickstart"]["rc"] == 124
    assert doc["train"] == {"error": "RuntimeError: boom", "wall_s": 3.0}
    assert doc["detector"] is None and doc["nvidia_smi"] is None and doc["environment"] is None
    assert doc["benchmark_meta"] == {"argv": ["--parts", "train"], "jax": "0.10.2"}


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_smoke_run_on_cpu_writes_consistent_numbers(tmp_path):
    out = tmp_path / "bench.json"
    # one CPU device, not conftest's 8: the mesh code is the trainer's (tested there), and 8-way
    # sharded compiles of four programs would double the test's time
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--model", "ssd_tiny", "--batch", "2", "--steps", "1",
         "--rounds", "1", "--pause", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ, "XLA_FLAGS": flags})
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    n = doc["device_count"]
    assert doc["backend"] == "cpu" and n == 1 == len(doc["devices"])

    train = doc["train"]
    assert train["config"] == "shapes" and "error" not in train
    assert set(train["ssd_jax"]) == {"float32", "bfloat16"}
    for r in train["ssd_jax"].values():
        assert r["global_batch"] == 2 * n and r["image_size"] == [128, 128]
        assert all(_positive(r[k]) for k in ("ms_per_step", "images_per_s", "compile_s", "gflop_per_step"))
        assert r["images_per_s"] == pytest.approx(2 * n / (r["ms_per_step"] / 1e3), rel=1e-3, abs=0.006)
        assert r["images_per_s_per_device"] == pytest.approx(r["images_per_s"] / n, rel=1e-3, abs=0.006)
        assert r["loss_finite"] and r["final_loss"] > 0
    if importlib.util.find_spec("torch") is None:  # the test extra has no torch: said, not hidden
        assert train["torchvision"]["skipped"].startswith("torch/torchvision not importable")
    else:
        assert "ssd_tiny" in train["torchvision"]["skipped"]  # torchvision's comparison is ssd300_vgg16 only

    det = doc["detector"]
    assert set(det["batches"]) == {"1", "8"} and "error" not in det
    for b, r in det["batches"].items():
        assert all(_positive(r[k]) for k in ("ms_per_call", "images_per_s", "first_call_s", "host_preprocess_ms"))
        assert r["images_per_s"] == pytest.approx(int(b) / (r["ms_per_call"] / 1e3), rel=1e-3, abs=0.006)
        assert 0 < r["host_preprocess_share"] < 1


@pytest.mark.slow
def test_gpu_requested_without_one_is_one_line():
    proc = subprocess.run([sys.executable, SCRIPT, "--device", "gpu", "--parts", "detector"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --device gpu but JAX's devices are")
    assert "Traceback" not in proc.stderr
