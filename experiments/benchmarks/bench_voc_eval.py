"""Time VOC mAP on a VOC2007-test-sized split: 5,000 images x 200 detections, 21 classes, ~12k gts.

Target: under 10 s for the VOC metrics on the dev CPU. Usage:

    python experiments/benchmarks/bench_voc_eval.py [--images 5000] [--dets 200] [--coco] [--evaluator]

``--evaluator`` also times the streaming ``Evaluator`` (padded batches of 32, VOC only);
``--coco`` also times ``coco_metrics`` (pycocotools, slow: ~25 s per 1,000 images x 200 detections).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssd_jax.evaluation import Evaluator, coco_metrics, voc_map


def synthetic_split(rng, num_images, dets_per_image, num_classes, gts_per_image=2.4):
    """Ground truths (with ~10% difficult) and detections: jittered copies of the gts + random boxes."""
    dets, gts = [], []
    for _ in range(num_images):
        m = max(1, rng.poisson(gts_per_image))
        xy = rng.uniform(0, 0.7, (m, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (m, 2))], 1)
        labels = rng.integers(1, num_classes, m)
        gts.append({"boxes": boxes, "labels": labels, "difficult": rng.random(m) < 0.1})
        near = rng.integers(0, m, dets_per_image // 4)
        size = np.tile(boxes[near, 2:] - boxes[near, :2], 2)
        jittered = boxes[near] + rng.normal(0, 0.1, (near.size, 4)) * size
        xy = rng.uniform(0, 0.8, (dets_per_image - near.size, 2))
        noise = np.concatenate([xy, xy + rng.uniform(0.02, 0.3, xy.shape)], 1)
        classes = np.concatenate([labels[near], rng.integers(1, num_classes, noise.shape[0])])
        dets.append({"boxes": np.concatenate([jittered, noise]), "scores": rng.random(dets_per_image),
                     "classes": classes})
    return dets, gts


def pad_batches(dets, gts, batch_size, max_dets, max_boxes):
    for start in range(0, len(dets), batch_size):
        chunk = range(start, min(start + batch_size, len(dets)))
        b = batch_size
        out_d = {"boxes": np.zeros((b, max_dets, 4), np.float32), "scores": np.zeros((b, max_dets), np.float32),
                 "classes": np.zeros((b, max_dets), np.int32), "num_valid": np.zeros(b, np.int32)}
        batch = {"boxes": np.zeros((b, max_boxes, 4), np.float32), "labels": np.zeros((b, max_boxes), np.int32),
                 "mask": np.zeros((b, max_boxes), bool), "difficult": np.zeros((b, max_boxes), bool),
                 "image_id": np.arange(start, start + b), "orig_size": np.full((b, 2), 375),
                 "valid": np.zeros(b, bool)}
        for j, i in enumerate(chunk):
            k, m = len(dets[i]["scores"]), len(gts[i]["labels"])
            out_d["boxes"][j, :k] = dets[i]["boxes"]
            out_d["scores"][j, :k] = dets[i]["scores"]
            out_d["classes"][j, :k] = dets[i]["classes"]
            out_d["num_valid"][j] = k
            batch["boxes"][j, :m] = gts[i]["boxes"]
            batch["labels"][j, :m] = gts[i]["labels"]
            batch["mask"][j, :m] = True
            batch["difficult"][j, :m] = gts[i]["difficult"]
            batch["valid"][j] = True
        yield out_d, batch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=200)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coco", action="store_true")
    parser.add_argument("--evaluator", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    dets, gts = synthetic_split(rng, args.images, args.dets, args.classes)
    num_gt = sum(len(g["labels"]) for g in gts)
    print(f"{args.images} images, {args.images * args.dets} detections, {num_gt} ground truths, "
          f"{args.classes} classes")
    for use_07 in (True, False):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = voc_map(dets, gts, args.classes, use_07_metric=use_07)
            times.append(time.perf_counter() - t0)
        name = "VOC07 11-point" if use_07 else "VOC area"
        print(f"voc_map {name:15s}: best {min(times):.2f} s, median {np.median(times):.2f} s "
              f"(mAP {100 * r['mAP']:.2f})")
    if args.evaluator:
        ev = Evaluator(args.classes, with_coco=False)
        t0 = time.perf_counter()
        for d, batch in pad_batches(dets, gts, 32, args.dets, 64):
            ev.add_batch(d, batch)
        t1 = time.perf_counter()
        r = ev.result()
        t2 = time.perf_counter()
        print(f"Evaluator: add_batch total {t1 - t0:.2f} s, result {t2 - t1:.2f} s (mAP {100 * r['mAP']:.2f})")
    if args.coco:
        sizes = np.full((args.images, 2), 375)
        t0 = time.perf_counter()
        c = coco_metrics(dets, gts, sizes)
        print(f"coco_metrics: {time.perf_counter() - t0:.1f} s (AP {100 * c['AP']:.2f})")


if __name__ == "__main__":
    main()
