"""End-to-end images/s of ssd_jax.Detector (host resize + jitted normalise/network/postprocess).

    python experiments/benchmarks/bench_detector.py [--rounds 5] [--models ssd_tiny ssd300_vgg16]

Random-init params, random uint8 images of 500x375 (w x h), batch 1 and 8; also the share of
time spent in the host preprocessing (convert + PIL bilinear resize). torchvision's
ssd300_vgg16 predict path (its own transform + postprocess) is timed too when importable,
call for call interleaved with ours. Times are medians over the rounds.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from timing import interleaved_medians

from ssd_jax import models
from ssd_jax.detector import Detector


def ssd_jax_calls(name, images):
    """``{(name, batch): call}`` and ``{(name, batch): preprocess-only call}`` for batch 1 and 8."""
    module, spec = models.create(name, 21)
    variables = module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)), train=False)
    det = Detector(module, variables, spec, ["background"] + [f"c{i}" for i in range(1, 21)],
                   normalization=models.input_normalization(name), buckets=(1, 8))
    return ({(name, b): (lambda b=b: det(images[:b])) for b in (1, 8)},
            {(name, b): (lambda b=b: det.preprocess(images[:b])) for b in (1, 8)})


def torchvision_calls(images):
    try:
        import torch
        import torchvision
    except ImportError:
        print("torchvision not importable: skipped")
        return {}
    model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    def run(b):
        with torch.no_grad():
            model(tensors[:b])
    return {("torchvision", b): (lambda b=b: run(b)) for b in (1, 8)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["ssd_tiny", "ssd300_vgg16"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(8)]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, images 500x375, medians of {args.rounds} rounds")
    calls, pre = {}, {}
    for name in args.models:
        c, p = ssd_jax_calls(name, images)
        calls.update(c)
        pre.update(p)
    calls.update(torchvision_calls(images))
    t = interleaved_medians(calls, args.rounds)
    tp = interleaved_medians(pre, args.rounds, pause_s=0.0)
    for (name, b), total in t.items():
        line = f"{name:14s} batch {b}: {b / total:7.2f} images/s ({total * 1e3:8.1f} ms/call"
        if (name, b) in tp:
            line += f", host preprocess {tp[name, b] * 1e3:6.1f} ms = {100 * tp[name, b] / total:4.1f}%"
        if name == "ssd300_vgg16" and ("torchvision", b) in t:
            line += f"; {t['torchvision', b] / total:.2f}x torchvision"
        print(line + ")")


if __name__ == "__main__":
    main()
