"""End-to-end images/s of ssd_jax.Detector (host resize + jitted normalise/network/postprocess).

    python experiments/benchmarks/bench_detector.py [--iters 3] [--models ssd_tiny ssd300_vgg16]

Random-init params, random uint8 images of 500x375 (w x h), batch 1 and 8; also the share of
time spent in the host preprocessing (convert + PIL bilinear resize). torchvision's
ssd300_vgg16 predict path (its own transform + postprocess) is timed too when importable.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax import models
from ssd_jax.detect import Detector


def timed(fn, iters):
    fn()  # compile / warm up
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def bench_ssd_jax(name, images, batch, iters):
    module, spec = models.create(name, 21)
    variables = module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)), train=False)
    det = Detector(module, variables, spec, ["background"] + [f"c{i}" for i in range(1, 21)],
                   normalization=models.input_normalization(name), buckets=(1, 8))
    batch_images = images[:batch]
    total = timed(lambda: det(batch_images), iters)
    pre = timed(lambda: det.preprocess(batch_images), iters)
    print(f"ssd_jax     {name:14s} batch {batch}: {batch / total:7.2f} images/s "
          f"({total * 1e3:8.1f} ms/call, host preprocess {pre * 1e3:6.1f} ms = {100 * pre / total:4.1f}%)", flush=True)


def bench_torchvision(images, batch, iters):
    try:
        import torch
        import torchvision
    except ImportError:
        print("torchvision not importable: skipped")
        return
    model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images[:batch]]

    def run():
        with torch.no_grad():
            model(tensors)
    total = timed(run, iters)
    print(f"torchvision ssd300_vgg16   batch {batch}: {batch / total:7.2f} images/s ({total * 1e3:8.1f} ms/call, "
          f"{torch.get_num_threads()} threads)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["ssd_tiny", "ssd300_vgg16"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(8)]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, images 500x375, {args.iters} timed calls each")
    for name in args.models:
        for batch in (1, 8):
            bench_ssd_jax(name, images, batch, args.iters if name != "ssd_tiny" else 5 * args.iters)
    for batch in (1, 8):
        bench_torchvision(images, batch, args.iters)


if __name__ == "__main__":
    main()
