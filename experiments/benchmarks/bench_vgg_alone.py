"""VGG16 SSD300 training step, ours and torchvision's, each alone in its own process.

    python experiments/benchmarks/bench_vgg_alone.py [--rounds 3] [--steps 4] [--frozen]

``bench_models.py`` interleaves the two frameworks call for call in one process, which keeps
machine load equal but lets each disturb the other (torch's allocations make our step's page
faults dearer). Here each round starts one fresh process per framework, alternating, and
times ``--steps`` training steps after two warm-up steps (the same network, batch 4, loss and
SGD-momentum update as ``bench_models.py``). Needs torch and torchvision installed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _one(framework: str, steps: int, frozen: bool) -> list[float]:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_models

    if framework == "jax":
        from ssd_jax.configs._base import CAFFE_VGG16_FROZEN
        _, step, _ = bench_models.jax_model("ssd300_vgg16", 4, frozen=CAFFE_VGG16_FROZEN if frozen else ())
    else:
        _, step = bench_models.torchvision_model(4, frozen_features=10 if frozen else 0)
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frozen", action="store_true", help="conv1_1 .. conv2_2 frozen on both sides")
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(" ".join(f"{t:.4f}" for t in _one(args.worker, args.steps, args.frozen)))
        return
    medians = {"jax": [], "torch": []}
    for r in range(args.rounds):
        for framework in medians:
            cmd = [sys.executable, __file__, "--worker", framework, "--steps", str(args.steps)]
            out = subprocess.run(cmd + (["--frozen"] if args.frozen else []), check=True,
                                 capture_output=True, text=True).stdout.split()
            times = [float(t) for t in out[-args.steps:]]
            medians[framework].append(statistics.median(times))
            print(f"round {r + 1} {framework:5s}: median {medians[framework][-1]:.2f} s "
                  f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
    ours, theirs = statistics.median(medians["jax"]), statistics.median(medians["torch"])
    print(f"ssd300_vgg16 batch 4 training step{' (frozen conv1_1..conv2_2)' if args.frozen else ''}, "
          f"each alone: ours {ours:.2f} s, torchvision {theirs:.2f} s -> ours / torchvision {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
