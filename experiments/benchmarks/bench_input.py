"""Input pipeline throughput (images/s) with SSD augmentation on, CPU only.

    python experiments/benchmarks/bench_input.py --source raccoon --size 300 --batch 32 --batches 30
    python experiments/benchmarks/bench_input.py --source shapes --size 300
Prints images/s for: decoding alone (the source's raw stream, a ceiling), the training
pipeline (after warm-up batches) and the eval pipeline. The machine's load average is printed
too: on a shared 2-core machine the numbers scale with the CPU share actually available.

    python experiments/benchmarks/bench_input.py --scaling [--rounds 3] [--batches 20]
Per-core scaling of the SSD300 training pipeline: raccoon JPEGs (VOC layout, 473x367 pixels on
average, about VOC's 500x375) decoded and augmented at 300x300 with the VOC recipe's full SSD
augmentation (``ssd300_voc0712``'s ``data.augment``: photometric distortions, zoom-out up to
4x, IoU-constrained crops, flips; max_boxes 50, batch 32, Caffe normalisation), with 1 and 2
pipeline threads (``data.num_parallel_calls``) and the default (one per host core), interleaved
over rounds. Each measurement builds a fresh pipeline, skips 3 warm-up batches, and times
``--batches`` batches: wall images/s and images per CPU-second of the process (user + sys of
all its threads, the NumPy conversion included). Cores needed for an accelerator consuming R
images/s = R / (images per CPU-second at 1 thread). Writes ``<out>.json`` and ``<out>.md``
(default ``results/input_scaling``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import time

import numpy as np

from ssd_jax import data

# The shared raccoon set beside the repository (../shared/data/raccoon), read in place.
RACCOON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "raccoon")


def make_config(source: str, no_aug: bool):
    cfg = data.default_config()
    if source == "raccoon":
        cfg.source, cfg.root, cfg.train_split, cfg.eval_split = "voc_folder", RACCOON, "train", "val"
    elif source != "shapes":
        raise SystemExit(f"unknown source {source}")
    if no_aug:
        cfg.augment.update(dict(photometric=False, expand=False, crop=False, flip=False))
    return cfg


def rate(iterator, batch, batches, warmup=2):
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch * batches / (time.perf_counter() - start)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def measure_ssd300(threads: int, batch: int, batches: int, warmup: int = 3) -> dict:
    """One fresh SSD300 training pipeline on raccoon with ``threads`` (<= 0: the default)."""
    from ssd_jax import configs
    cfg = make_config("raccoon", no_aug=False)
    cfg.augment = configs.load("ssd300_voc0712").data.augment
    cfg.max_boxes = 50
    cfg.num_parallel_calls = threads
    from ssd_jax.data import pipeline
    it = data.train_iterator(cfg, (300, 300), batch, normalization="caffe", seed=0)
    for _ in range(warmup):
        next(it)
    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    it.close()
    del it
    gc.collect()
    images = batch * batches
    return dict(threads=pipeline.pipeline_threads(cfg), configured=threads, images=images, wall_s=wall, cpu_s=cpu,
                images_per_s=images / wall, images_per_cpu_s=images / cpu, load_before=load0,
                load_after=os.getloadavg()[0])


def scaling(args):
    from ssd_jax.data import pipeline
    settings = [1, 2, -1]
    raw = {str(t): [] for t in settings}
    print(f"host cores (affinity, cgroup quota): {pipeline.host_cores()}; CPU: {cpu_model()}", flush=True)
    for r in range(args.rounds):
        for t in settings[r % 3:] + settings[:r % 3]:
            row = measure_ssd300(t, args.batch, args.batches)
            raw[str(t)].append(row)
            print(f"round {r + 1} threads {row['threads']} ({'default' if t <= 0 else 'set'}): "
                  f"{row['images_per_s']:.1f} images/s, {row['images_per_cpu_s']:.1f} images per CPU-second, "
                  f"load {row['load_before']:.1f} -> {row['load_after']:.1f}", flush=True)
    med = {t: {k: float(np.median([row[k] for row in rows])) for k in ("images_per_s", "images_per_cpu_s")}
           for t, rows in raw.items()}
    per_cpu_s = med["1"]["images_per_cpu_s"]
    targets = {"100": 100, "300": 300, "700 (NVIDIA SSD300, one A100, AMP)": 700}
    cores = {name: rate / per_cpu_s for name, rate in targets.items()}
    loads = [v for rows in raw.values() for row in rows for v in (row["load_before"], row["load_after"])]
    result = dict(setup=f"raccoon JPEGs, 300x300, ssd300_voc0712 augmentation, batch {args.batch}, "
                        f"{args.batches} timed batches per measurement, {args.rounds} interleaved rounds",
                  cpu=cpu_model(), cpus=os.cpu_count(), host_cores=pipeline.host_cores(), rounds_raw=raw,
                  medians=med, images_per_cpu_s=per_cpu_s, cores_needed=cores, load_range=[min(loads), max(loads)])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    label = {"1": "1 thread", "2": "2 threads", "-1": f"default ({pipeline.host_cores()} threads, AUTOTUNE)"}
    lines = ["# SSD300 input pipeline scaling (`bench_input.py --scaling`)", "", f"Setup: {result['setup']}.",
             f"CPU: {result['cpu']}, {result['cpus']} CPUs; load average (1 min) during the runs "
             f"{result['load_range'][0]:.1f}-{result['load_range'][1]:.1f}.", "",
             "| pipeline threads | median images/s (wall) | median images per CPU-second "
             "| rounds (images/s; per CPU-s) |",
             "|---|---|---|---|"]
    for t, rows in raw.items():
        lines.append(f"| {label[t]} | {med[t]['images_per_s']:.1f} | {med[t]['images_per_cpu_s']:.1f} | "
                     + ", ".join(f"{row['images_per_s']:.0f}; {row['images_per_cpu_s']:.0f}" for row in rows) + " |")
    lines += ["", f"Busy host cores needed (at {per_cpu_s:.0f} images per CPU-second, 1 thread):", ""]
    lines += [f"- {name} images/s: {c:.1f} cores" for name, c in cores.items()]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="raccoon")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--no-aug", action="store_true")
    parser.add_argument("--parallel", type=int, default=None,
                        help="data.num_parallel_calls (0 or less: tf.data AUTOTUNE; default: the config's)")
    parser.add_argument("--scaling", action="store_true", help="SSD300 per-core scaling (see the docstring)")
    parser.add_argument("--rounds", type=int, default=3, help="--scaling: interleaved rounds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "input_scaling"), help="--scaling: output path stem")
    args = parser.parse_args()
    if args.scaling:
        return scaling(args)
    cfg = make_config(args.source, args.no_aug)
    if args.parallel is not None:
        cfg.num_parallel_calls = args.parallel
    size = (args.size, args.size)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    from ssd_jax.data import registry
    from ssd_jax.data.tf_setup import tf
    raw = registry.get_source(cfg).train_stream(cfg.train_split, 0, 0, 1, 0, 0, -1)
    raw_iter = iter(raw.map(lambda e: tf.shape(e["image"])).batch(args.batch).as_numpy_iterator())
    print(f"decode only (raw stream, no resize): {rate(raw_iter, args.batch, args.batches // 2):.1f} images/s")
    train = data.train_iterator(cfg, size, args.batch, normalization="caffe", seed=0)
    print(f"train {args.source} {args.size}x{args.size} batch {args.batch} aug={not args.no_aug}: "
          f"{rate(train, args.batch, args.batches):.1f} images/s")
    start, count = time.perf_counter(), 0
    for batch in data.eval_iterator(cfg, size, args.batch):
        count += int(batch["valid"].sum())
    print(f"eval  {args.source}: {count / (time.perf_counter() - start):.1f} images/s "
          f"({count} images, incl. start-up)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
