"""Benchmark SSD post-processing (`detect`) and `nms_padded` on SSD300 shapes.

Prints milliseconds per call after compilation (median of several calls). Compares with
torchvision's `batched_nms` / `nms` when torchvision is importable.

Usage: python experiments/benchmarks/bench_postprocess.py [--repeats 10] [--tile-sizes 32,128] [--pools 1024,512,0]

The machine is shared: run it when idle, numbers under load are inflated.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax.anchors import SSD300_VOC, default_boxes
from ssd_jax.nms import nms_padded
from ssd_jax.postprocess import detect

BATCH, NUM_CLASSES = 8, 21


def median_ms(fn, repeats):
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def make_logits(rng, num_anchors, kind):
    """`uniform`: N(0,1) logits, every class score of every anchor exceeds 0.01 (worst case
    for the threshold); `peaked`: background-dominant logits with a few hundred confident
    peaks per image, each spread over its neighbouring anchors (like a trained model)."""
    if kind == "uniform":
        return rng.normal(size=(BATCH, num_anchors, NUM_CLASSES)).astype(np.float32)
    logits = rng.normal(size=(BATCH, num_anchors, NUM_CLASSES)).astype(np.float32)
    logits[..., 0] += 4.0
    for b in range(BATCH):
        for _ in range(30):
            cls = rng.integers(1, NUM_CLASSES)
            start = rng.integers(0, num_anchors - 40)
            logits[b, start:start + 40, cls] += rng.uniform(4.0, 9.0, size=40)
    return logits


def random_boxes(rng, n):
    centre = rng.uniform(0, 1, (n, 2))
    size = rng.uniform(0.02, 0.4, (n, 2))
    return np.clip(np.concatenate([centre - size / 2, centre + size / 2], 1), 0, 1).astype(np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tile-sizes", default="32,128")
    parser.add_argument("--pools", default="1024,512,0", help="candidate_pool values (0 = no top-k pool)")
    args = parser.parse_args()
    tiles = [int(t) for t in args.tile_sizes.split(",")]
    pools = [int(p) for p in args.pools.split(",")]
    rng = np.random.default_rng(0)
    anchors = jnp.asarray(default_boxes(SSD300_VOC))
    num_anchors = anchors.shape[0]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {num_anchors} anchors, batch {BATCH}, "
          f"{NUM_CLASSES} classes")

    loc = jnp.asarray(rng.normal(scale=0.5, size=(BATCH, num_anchors, 4)).astype(np.float32))
    for kind in ("uniform", "peaked"):
        logits = jnp.asarray(make_logits(rng, num_anchors, kind))
        for pool in pools:
            for tile in tiles:
                fn = functools.partial(detect, loc, logits, anchors, tile_size=tile, candidate_pool=pool)
                ms = median_ms(fn, args.repeats)
                nv = np.asarray(fn().num_valid)
                print(f"detect  logits={kind:8s} pool={pool:5d} tile={tile:4d}: {ms:8.2f} ms / batch of {BATCH}"
                      f"  (mean detections {nv.mean():.0f})")

    boxes_np = random_boxes(rng, num_anchors)
    scores_np = rng.uniform(size=num_anchors).astype(np.float32)
    boxes, scores = jnp.asarray(boxes_np), jnp.asarray(scores_np)
    for max_output in (200, num_anchors):
        for tile in tiles:
            fn = functools.partial(nms_padded, boxes, scores, 0.45, max_output, tile_size=tile)
            ms = median_ms(fn, args.repeats)
            print(f"nms_padded N={num_anchors} max_output={max_output:5d} tile={tile:4d}: {ms:8.2f} ms"
                  f"  (kept {int(fn()[1])})")

    try:
        import torch
        import torchvision
    except ImportError:
        print("torchvision not importable: torch comparison skipped")
        return
    tb, ts = torch.from_numpy(boxes_np), torch.from_numpy(scores_np)
    times = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        keep = torchvision.ops.nms(tb, ts, 0.45)
        times.append(time.perf_counter() - t0)
    print(f"torchvision.ops.nms N={num_anchors}: {1e3 * np.median(times[1:]):8.2f} ms  (kept {len(keep)})")

    from torchvision.models.detection import _utils as det_utils
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    anchors_xyxy = torch.from_numpy(np.asarray(jnp.concatenate(
        [anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)))
    for kind in ("uniform", "peaked"):
        logits_t = torch.from_numpy(make_logits(rng, num_anchors, kind))
        loc_t = torch.from_numpy(np.asarray(loc))

        def tv_postprocess(loc_t, logits_t):  # torchvision SSD.postprocess_detections, normalised boxes
            out = []
            for b in range(BATCH):
                boxes_b = coder.decode_single(loc_t[b], anchors_xyxy).clamp(0, 1)
                probs = torch.softmax(logits_t[b], -1)
                all_boxes, all_scores, all_labels = [], [], []
                for c in range(1, NUM_CLASSES):
                    s = probs[:, c]
                    keep_idxs = s > 0.01
                    s, bx = s[keep_idxs], boxes_b[keep_idxs]
                    s, idx = s.topk(min(400, s.size(0)))
                    all_boxes.append(bx[idx]), all_scores.append(s)
                    all_labels.append(torch.full_like(idx, c))
                bx, s, lab = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
                keep = torchvision.ops.batched_nms(bx, s, lab, 0.45)[:200]
                out.append((bx[keep], s[keep], lab[keep]))
            return out

        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            tv_postprocess(loc_t, logits_t)
            times.append(time.perf_counter() - t0)
        print(f"torchvision SSD postprocess logits={kind}: {1e3 * np.median(times[1:]):8.2f} ms / batch of {BATCH}")


if __name__ == "__main__":
    main()
