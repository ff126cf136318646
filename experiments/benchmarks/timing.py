"""Timing shared by the benchmark scripts that compare ssd_jax with torchvision call for call."""

from __future__ import annotations

import time

import numpy as np


def interleaved_medians(fns: dict, rounds: int, pause_s: float = 0.3) -> dict:
    """Median seconds of each no-argument callable in ``fns``.

    One warm-up call each, then ``rounds`` rounds that call every function once, in turn, so
    that all of them see the same machine load. A short pause before each call lets the
    previous one's worker threads go idle (OpenMP threads spin for a while after a parallel
    region), so no call is slowed by another's.
    """
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(pause_s)
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}
