"""Latency of the exported detectors (NMS in the graph) next to ssd_jax.Detector, and file sizes.

    python experiments/benchmarks/bench_export.py [--models ssd_tiny ssd300_vgg16] [--rounds 5]
        [--formats stablehlo saved_model onnx tflite] [--out /tmp/bench_export]

For each model: a randomly initialised workdir (LeCun-normal kernels drawn in NumPy, default
model.json postprocess: score 0.01, IoU 0.45, top-k 400, 200 detections), exported in every
format (dynamic batch; TFLite at batch 1 and 8, its batch is fixed), then each runtime is timed on
the same uint8 batch already at the input size (raccoon photos when ../shared/data/raccoon
exists, else noise), batch 1 and 8, call for call interleaved (medians): Detector.predict_batch
(jit, buckets 1 and 8), ssd_jax.export.load (StableHLO through JAX), the SavedModel's
serving_default (TensorFlow), onnxruntime (CPU provider) and the LiteRT interpreter (XNNPACK).
Host resizing is not included (all take pre-resized images). Random weights keep NMS busy
(hundreds of candidates per image), a worst case for the post-processing.
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import interleaved_medians

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["ssd_tiny", "ssd300_vgg16"])
    parser.add_argument("--formats", nargs="+", default=["stablehlo", "saved_model", "onnx", "tflite"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="/tmp/bench_export")
    args = parser.parse_args()

    import jax

    import ssd_jax
    from ssd_jax import export

    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; medians of {args.rounds} rounds, seconds per call")
    for model in args.models:
        root = os.path.join(args.out, model)
        workdir = os.path.join(root, "workdir")
        if not os.path.exists(os.path.join(workdir, "model.json")):
            os.makedirs(workdir, exist_ok=True)
            random_workdir(workdir, model)
        detector = ssd_jax.Detector.from_workdir(workdir, buckets=(1, 8))
        images = images_at(detector.input_size)
        calls, sizes, export_s = {}, {}, {}
        for b in (1, 8):
            calls[("Detector (jit)", b)] = functools.partial(detector.predict_batch, images[:b])
        for fmt in args.formats:
            for batch in ((1, 8) if fmt == "tflite" else ("dynamic",)):
                suffix = {"stablehlo": ".stablehlo", "saved_model": "", "onnx": ".onnx", "tflite": ".tflite"}[fmt]
                path = os.path.join(root, f"{fmt}_b{batch}{suffix}")
                start = time.perf_counter()
                try:
                    export.export_detector(workdir, path, format=fmt, batch=batch)
                except Exception as e:  # report and go on with the other formats
                    print(f"{model} {fmt} batch {batch}: export failed: {type(e).__name__}: {str(e)[:300]}")
                    continue
                export_s[(fmt, batch)] = time.perf_counter() - start
                sizes[(fmt, batch)] = size_mb(path)
                for b in ((batch,) if batch != "dynamic" else (1, 8)):
                    calls[(fmt, b)] = runner(fmt, path, images[:b])
        medians = interleaved_medians(calls, args.rounds)
        print(f"\n{model} {detector.input_size[0]}x{detector.input_size[1]}, 21 classes")
        print(f"{'runtime':<16}{'batch 1 ms':>12}{'batch 8 ms':>12}")
        for name in dict.fromkeys(k[0] for k in calls):
            row = [medians.get((name, b)) for b in (1, 8)]
            print(f"{name:<16}" + "".join(f"{v * 1e3:>12.1f}" if v is not None else f"{'-':>12}" for v in row))
        for key, mb in sizes.items():
            print(f"{key[0]} (batch {key[1]}): {mb:.1f} MB, exported in {export_s[key]:.0f} s")


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
