"""Batched matching + encoding throughput: batch 32 x 8732 default boxes x 50 padded ground truths.

    python experiments/benchmarks/bench_matching.py [--batch 32] [--max-boxes 50] [--repeats 20]

Prints images/s of ``ssd_jax.matching.match_batch`` (jit + vmap) after compilation and, when
torchvision is installed, of torchvision's per-image ``SSDMatcher`` + ``BoxCoder.encode`` on the
same boxes in the same run.
"""

import argparse
import time

import numpy as np


def random_ground_truth(rng, batch, max_boxes):
    """Random VOC-like ground truths: 1..max_boxes objects per image, padded to max_boxes."""
    n = rng.integers(1, max_boxes + 1, size=batch)
    xy = rng.uniform(0.0, 0.8, size=(batch, max_boxes, 2))
    wh = rng.uniform(0.05, 0.6, size=(batch, max_boxes, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, 1.0)], -1).astype(np.float32)
    mask = np.arange(max_boxes)[None] < n[:, None]
    labels = rng.integers(1, 21, size=(batch, max_boxes)).astype(np.int32)
    return boxes, labels, mask


def time_calls(fn, repeats):
    fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_ssd_jax(anchors, boxes, labels, mask, repeats, mode):
    import jax

    from ssd_jax import matching

    fn = jax.jit(lambda b, lab, m: matching.match_batch(anchors, b, lab, m, mode=mode))
    args = [jax.device_put(x) for x in (boxes, labels, mask)]
    return time_calls(lambda: jax.block_until_ready(fn(*args)), repeats)


def bench_torchvision(anchors, boxes, labels, mask, repeats):
    import torch
    from torchvision.models.detection import _utils as det_utils

    matcher = det_utils.SSDMatcher(0.5)
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    from ssd_jax.boxes import center_to_corners
    anchors_xyxy = torch.from_numpy(np.array(center_to_corners(anchors)))
    from torchvision.ops import box_iou
    gts = [(torch.from_numpy(b[m]), torch.from_numpy(lab[m])) for b, lab, m in zip(boxes, labels, mask)]

    def run():
        for gt_boxes, gt_labels in gts:
            q = box_iou(gt_boxes, anchors_xyxy)
            matches = matcher(q)
            idx = matches.clamp(min=0)
            coder.encode_single(gt_boxes[idx], anchors_xyxy)
            torch.where(matches >= 0, gt_labels[idx], 0)

    return time_calls(run, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-boxes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from ssd_jax import anchors as anchor_lib
    anchors = anchor_lib.default_boxes(anchor_lib.SSD300_VOC)
    boxes, labels, mask = random_ground_truth(np.random.default_rng(0), args.batch, args.max_boxes)
    print(f"batch {args.batch} x {anchors.shape[0]} default boxes x {args.max_boxes} padded gt "
          f"({mask.sum()} real boxes)")
    times = {}
    for mode in ("argmax", "bipartite"):
        times[mode] = t = bench_ssd_jax(anchors, boxes, labels, mask, args.repeats, mode)
        print(f"ssd_jax match_batch ({mode:9s}): {t * 1e3:8.2f} ms/batch  {args.batch / t:8.1f} images/s")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        print("torchvision not installed: skipping its SSDMatcher + BoxCoder timing")
        return
    t = bench_torchvision(anchors, boxes, labels, mask, args.repeats)
    print(f"torchvision SSDMatcher+BoxCoder   : {t * 1e3:8.2f} ms/batch  {args.batch / t:8.1f} images/s")
    print(f"ssd_jax argmax / torchvision: {t / times['argmax']:.2f}x")


if __name__ == "__main__":
    main()
