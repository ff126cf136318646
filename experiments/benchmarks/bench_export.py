"""Latency of the exported detectors (NMS in the graph) next to ssd_jax.Detector, and file sizes.

    python experiments/benchmarks/bench_export.py [--models ssd_tiny ssd300_vgg16] [--rounds 5]
        [--formats stablehlo saved_model onnx tflite] [--tflite-models ssd_tiny ssdlite320_mobilenet_v2]
        [--out /tmp/bench_export] [--results experiments/benchmarks/results/export_latency]

For each model: a randomly initialised workdir (LeCun-normal kernels drawn in NumPy, default
model.json postprocess: score 0.01, IoU 0.45, top-k 400, 200 detections), exported in every
format (dynamic batch; TFLite at batch 1 and 8, its batch is fixed), then each runtime is timed on
the same uint8 batch already at the input size (raccoon photos when ../shared/data/raccoon
exists, else noise), batch 1 and 8, call for call interleaved (medians): Detector.predict_batch
(jit, buckets 1 and 8), ssd_jax.export.load (StableHLO through JAX), the SavedModel's
serving_default (TensorFlow), onnxruntime (CPU provider) and the LiteRT interpreter (XNNPACK).
Host resizing is not included (all take pre-resized images). Random weights keep NMS busy
(hundreds of candidates per image), a worst case for the post-processing.

Reported per runtime and batch: the median wall time per call and the median CPU time of this
process per call (all runtimes run in-process, so CPU seconds count every thread they use; on a
shared machine they move less with the load than wall time); per artifact: its size, the export
time and the time to load it and run the first call (deserialise + compile / session creation).
TFLite is exported only for ``--tflite-models`` (the issue's mobile models: VGG16's TFLite
conversion takes about 10 minutes per batch size here). The machine's load average before and
after each model is recorded. ``--results PATH`` writes ``PATH.json`` and ``PATH.md``.
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)  # this checkout's ssd_jax, whichever one the environment has installed
RACCOON = os.path.join(REPO, "..", "shared", "data", "raccoon", "JPEGImages")


def random_workdir(workdir, model, num_classes=21, seed=0):
    import jax
    import jax.numpy as jnp

    from ssd_jax import checkpoints, models

    module, spec = models.create(model, num_classes)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)), train=False))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)
        if name in ("scale", "var"):
            return np.full(leaf.shape, 20.0 if "_norm" in str(path) else 1.0, leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(draw, dict(shapes))
    ckpt = checkpoints.Checkpointer(workdir)
    ckpt.save(0, model={"params": variables["params"], "batch_stats": variables.get("batch_stats", {})},
              train={"step": np.zeros((), np.int32)})
    ckpt.wait()
    ckpt.close()
    checkpoints.write_model_info(workdir, {"model": model, "num_classes": num_classes,
                                           "image_size": list(spec.image_size),
                                           "normalization": models.input_normalization(model)})
    return spec.image_size


def size_mb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) / 1e6
    return os.path.getsize(path) / 1e6


def images_at(size, n=8):
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(RACCOON, "*.jpg")))[:n]
    if len(paths) < n:
        return np.random.default_rng(0).integers(0, 256, (n, *size, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize(size[::-1], Image.BILINEAR)) for p in paths])


def interleaved(fns: dict, rounds: int, pause_s: float = 0.3) -> dict:
    """``{key: (median wall s, median process CPU s)}`` per call; one warm-up call each, then
    ``rounds`` rounds calling every function once in turn (all see the same machine load)."""
    for fn in fns.values():
        fn()
    walls, cpus = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(pause_s)  # let the previous call's worker threads go idle
            w, c = time.perf_counter(), time.process_time()
            fn()
            walls[k].append(time.perf_counter() - w)
            cpus[k].append(time.process_time() - c)
    return {k: (float(np.median(walls[k])), float(np.median(cpus[k]))) for k in fns}


def bench_model(model, args):
    """Exports ``model`` in every format and times each runtime; returns a JSON-able record."""
    import ssd_jax
    from ssd_jax import export

    root = os.path.join(args.out, model)
    workdir = os.path.join(root, "workdir")
    if not os.path.exists(os.path.join(workdir, "model.json")):
        os.makedirs(workdir, exist_ok=True)
        random_workdir(workdir, model)
    load_before = os.getloadavg()
    detector = ssd_jax.Detector.from_workdir(workdir, buckets=(1, 8))
    images = images_at(detector.input_size)
    calls, artifacts, failures = {}, [], []
    for b in (1, 8):
        calls[("Detector (jit)", b)] = functools.partial(detector.predict_batch, images[:b])
    formats = [f for f in args.formats if f != "tflite" or model in args.tflite_models]
    for fmt in formats:
        for batch in ((1, 8) if fmt == "tflite" else ("dynamic",)):
            suffix = {"stablehlo": ".stablehlo", "saved_model": "", "onnx": ".onnx", "tflite": ".tflite"}[fmt]
            path = os.path.join(root, f"{fmt}_b{batch}{suffix}")
            start = time.perf_counter()
            try:
                if not (args.reuse and os.path.exists(export.metadata_path(path))):
                    export.export_detector(workdir, path, format=fmt, batch=batch)
            except Exception as e:  # report and go on with the other formats
                failures.append(f"{fmt} batch {batch}: {type(e).__name__}: {str(e)[:300]}")
                print(f"{model} {failures[-1]}", flush=True)
                continue
            record = {"format": fmt, "batch": batch, "size_mb": round(size_mb(path), 1),
                      "export_s": round(time.perf_counter() - start, 1)}
            for b in ((batch,) if batch != "dynamic" else (1, 8)):
                start = time.perf_counter()
                call = runner(fmt, path, images[:b])
                call()
                record[f"load_and_first_call_b{b}_s"] = round(time.perf_counter() - start, 2)
                calls[(fmt, b)] = call
            artifacts.append(record)
            print(f"{model}: {record}", flush=True)
    medians = interleaved(calls, args.rounds)
    rows = {}
    for (name, b), (wall, cpu) in medians.items():
        rows.setdefault(name, {})[f"batch{b}"] = {"wall_ms": round(wall * 1e3, 1), "cpu_ms": round(cpu * 1e3, 1)}
    return {"model": model, "input_size": list(detector.input_size), "num_classes": 21, "rounds": args.rounds,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()], "latency": rows, "artifacts": artifacts,
            "failures": failures}


def markdown(records, header) -> str:
    lines = [header, ""]
    for rec in records:
        h, w = rec["input_size"]
        lines += [f"## {rec['model']} {h}x{w}, 21 classes (load average before {rec['loadavg_before']}, "
                  f"after {rec['loadavg_after']})", "",
                  "| runtime | batch 1 wall ms | batch 1 CPU ms | batch 8 wall ms | batch 8 CPU ms |",
                  "|---|---|---|---|---|"]
        for name, row in rec["latency"].items():
            cells = []
            for b in (1, 8):
                v = row.get(f"batch{b}")
                cells += [f"{v['wall_ms']:.1f}", f"{v['cpu_ms']:.1f}"] if v else ["-", "-"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| artifact | size MB | export s | load + first call s |", "|---|---|---|---|"]
        for a in rec["artifacts"]:
            first = ", ".join(f"b{k[-3]}: {v}" for k, v in a.items() if k.startswith("load_and_first_call"))
            lines.append(f"| {a['format']} (batch {a['batch']}) | {a['size_mb']} | {a['export_s']} | {first} |")
        lines += [""] + [f"- failed: {f}" for f in rec["failures"]] + [""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["ssd_tiny", "ssd300_vgg16"])
    parser.add_argument("--formats", nargs="+", default=["stablehlo", "saved_model", "onnx", "tflite"])
    parser.add_argument("--tflite-models", nargs="+", default=["ssd_tiny", "ssdlite320_mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="/tmp/bench_export")
    parser.add_argument("--results", default="", help="write PATH.json and PATH.md")
    parser.add_argument("--reuse", action="store_true", help="keep artifacts already in --out (export s: ~0)")
    args = parser.parse_args()

    import json
    import platform

    import jax

    header = (f"# Exported-model latency (bench_export.py)\n\njax {jax.__version__}, {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.machine()}), medians of {args.rounds} interleaved rounds, "
              "random weights, default thresholds (0.01 / 0.45 / top-k 400 / 200 detections), raccoon photos at "
              "the input size; wall and process-CPU milliseconds per call.")
    print(header, flush=True)
    records = []
    for model in args.models:
        records.append(bench_model(model, args))
        text = markdown(records, header)
        print(text, flush=True)
        if args.results:
            os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
            with open(args.results + ".json", "w") as f:
                json.dump({"jax": jax.__version__, "cpus": os.cpu_count(), "models": records}, f, indent=2)
            with open(args.results + ".md", "w") as f:
                f.write(text)


def runner(fmt, path, images):
    """A no-argument call running ``images`` through the artifact at ``path``."""
    if fmt == "stablehlo":
        from ssd_jax import export

        model = export.load(path)
        return lambda: model(images)
    if fmt == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(path).signatures["serving_default"]
        x = tf.constant(images)
        return lambda: {k: v.numpy() for k, v in serve(images=x).items()}
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"images": images})
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        run = Interpreter(model_path=path).get_signature_runner("serving_default")
        return lambda: run(images=images)
    raise ValueError(fmt)


if __name__ == "__main__":
    main()
