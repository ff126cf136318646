"""Input pipeline throughput (images/s) with SSD augmentation on, CPU only.

    python experiments/benchmarks/bench_input.py --source raccoon --size 300 --batch 32 --batches 30
    python experiments/benchmarks/bench_input.py --source shapes --size 300
Prints images/s for: decoding alone (the source's raw stream, a ceiling), the training
pipeline (after warm-up batches) and the eval pipeline. The machine's load average is printed
too: on a shared 2-core machine the numbers scale with the CPU share actually available.
"""

from __future__ import annotations

import argparse
import os
import time

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="raccoon")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--no-aug", action="store_true")
    parser.add_argument("--parallel", type=int, default=None,
                        help="data.num_parallel_calls (0 or less: tf.data AUTOTUNE; default: the config's)")
    args = parser.parse_args()
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
