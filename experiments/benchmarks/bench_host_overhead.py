"""Host overhead of the training loop: the trainer's images/s against the bare compiled step's.

    python experiments/benchmarks/bench_host_overhead.py [--rounds 3] [--steps 100]
        [--out experiments/benchmarks/results/host_overhead]

The quick-start config (``shapes``: ``ssd_tiny``, 128x128, global batch 32, on this process's
devices, 1 CPU device by default). Three measurements, interleaved round by round so that all
see the same machine load, each over ``--steps`` training steps after compilation:

- ``bare``: the trainer's jitted step (same function, compiler options, donation and
  shardings) in a tight Python loop over ``--batches`` batches already on the device, blocking
  once at the end: what the devices can do.
- ``trainer_premat``: ``ssd_jax.train.train_and_evaluate`` itself, with ``data.train_iterator``
  replaced by a cycle over the same host (NumPy) batches: the cost of the loop alone (host to
  device copies, dispatch, metric fetches, logging, stop polls, checkpoint triggers).
- ``trainer_tfdata``: the same with the real tf.data pipeline, whose augmentation threads run
  in this process on the same cores as the step.

Trainer timing: from its first log line (step ``log_every``, after compilation) to its last
(``log_every + steps``), taken where it writes ``metrics.jsonl`` (so the window includes the
log writes and the metric fetches behind them). ``log_every`` (50) and ``checkpoint_every`` /
``eval.every`` (600) are the config's unless given; with ``num_steps = log_every + steps`` no
checkpoint or evaluation falls inside the window unless ``--checkpoint_every`` says so. The
final evaluation is shortened (``--num_eval`` images, no COCO) as it is outside the window.
CPU seconds are the process's user + sys (``getrusage``, all threads); the load average is read
before and after each measurement. Results go to ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import resource
import tempfile
import time
import typing

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssd_jax import configs, data, train, train_utils, xla_options
from ssd_jax.runtime import MetricsLog


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_config(args, num_steps):
    config = configs.load("shapes")
    config.num_steps = num_steps
    if args.log_every:
        config.log_every = args.log_every
    if args.checkpoint_every:
        config.checkpoint_every = args.checkpoint_every
    config.eval.with_coco = False
    config.data.shapes.num_eval = args.num_eval
    config.eval.num_sample_images = 2
    return config


class TimedLog(MetricsLog):
    """The trainer's metrics log, noting (step, wall time, CPU seconds) after each train write."""
    marks: typing.ClassVar[list] = []

    def write(self, step, split, metrics):
        super().write(step, split, metrics)
        if split == "train":
            TimedLog.marks.append((step, time.perf_counter(), cpu_seconds()))


def run_trainer(config, host_batches=None) -> dict:
    """One ``train_and_evaluate`` in a fresh workdir; images/s and CPU between first and last log."""
    TimedLog.marks = []
    original_iterator, original_log = data.train_iterator, train.MetricsLog
    train.MetricsLog = TimedLog
    if host_batches is not None:
        data.train_iterator = lambda *a, **k: itertools.cycle(host_batches)
    load0 = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(io.StringIO()):
            train.train_and_evaluate(config, workdir)
    finally:
        data.train_iterator, train.MetricsLog = original_iterator, original_log
    (s0, t0, c0), (s1, t1, c1) = TimedLog.marks[0], TimedLog.marks[-1]
    images = (s1 - s0) * config.batch_size
    return dict(images_per_s=images / (t1 - t0), seconds=t1 - t0, cpu_s=c1 - c0, steps=s1 - s0,
                cpu_s_per_image=(c1 - c0) / images, load_before=load0, load_after=os.getloadavg()[0])


def make_bare(config, host_batches):
    """``run(steps)``: that many bare steps of ``config``'s compiled train step, timed."""
    mesh = train_utils.make_mesh()
    replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    task = train_utils.build_task(config)
    state = [jax.jit(lambda: train_utils.init_state(task, config.seed), out_shardings=replicated)()]
    step = jax.jit(train_utils.make_train_step(task, config), donate_argnums=(0,),
                   out_shardings=(replicated, replicated), compiler_options=xla_options.compiler_options())
    batches = [{k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in b.items()}
               for b in host_batches]

    def run(steps) -> dict:
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), cpu_seconds()
        metrics = None
        for i in range(steps):
            state[0], metrics = step(state[0], batches[i % len(batches)])
        jax.block_until_ready((state[0], metrics))
        t1, c1 = time.perf_counter(), cpu_seconds()
        images = steps * config.batch_size
        return dict(images_per_s=images / (t1 - t0), seconds=t1 - t0, cpu_s=c1 - c0, steps=steps,
                    cpu_s_per_image=(c1 - c0) / images, load_before=load0, load_after=os.getloadavg()[0])

    run(3)  # compile and warm up
    return run


def summarize(rows: list[dict]) -> dict:
    keys = ("images_per_s", "cpu_s_per_image", "load_before", "load_after")
    return {f"median_{k}": float(np.median([r[k] for r in rows])) for k in keys}


def write_markdown(path, result):
    s = result["summary"]
    lines = [
        "# Host overhead of the training loop (`bench_host_overhead.py`)", "",
        f"Config: {result['setup']}", "",
        "| measurement | median images/s | median CPU ms / image | images/s ratio to bare (median; rounds) "
        "| CPU-efficiency ratio: bare's CPU s per image / this one's (median; rounds) |",
        "|---|---|---|---|---|",
    ]
    for mode in ("bare", "trainer_premat", "trainer_tfdata"):
        ratio = cpu_ratio = "1"
        if mode != "bare":
            r = result["ratios"][mode]
            ratio = f"{r['median']:.3f}; {', '.join(f'{x:.3f}' for x in r['rounds'])}"
            cpu_ratio = f"{r['cpu_median']:.3f}; {', '.join(f'{x:.3f}' for x in r['cpu_rounds'])}"
        lines.append(f"| {mode} | {s[mode]['median_images_per_s']:.1f} | "
                     f"{s[mode]['median_cpu_s_per_image'] * 1e3:.2f} | {ratio} | {cpu_ratio} |")
    lines += ["", f"Load average (1 min) during the runs: {result['load_range'][0]:.1f}-{result['load_range'][1]:.1f} "
              f"on {result['cpus']} CPUs; {result['rounds']} interleaved rounds.", "",
              "Per round (images/s): " + "; ".join(
                  f"round {i + 1}: " + ", ".join(f"{m} {result['rounds_raw'][m][i]['images_per_s']:.1f}"
                                                 for m in ("bare", "trainer_premat", "trainer_tfdata"))
                  for i in range(result["rounds"])), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    p.add_argument("--batches", type=int, default=10, help="distinct pre-materialised batches (cycled)")
    p.add_argument("--log_every", type=int, default=0, help="0: the config's")
    p.add_argument("--checkpoint_every", type=int, default=0, help="0: the config's")
    p.add_argument("--num_eval", type=int, default=50, help="images of the final evaluation (outside the window)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "host_overhead"))
    args = p.parse_args()
    cache = os.path.join(tempfile.gettempdir(), "ssd_jax_bench_host_cache")
    jax.config.update("jax_compilation_cache_dir", cache)  # the trainer recompiles each round: from here
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    probe = make_config(args, 1)
    num_steps = probe.log_every + args.steps
    config = make_config(args, num_steps)
    task = train_utils.build_task(config)
    host_iter = data.train_iterator(config.data, image_size=task.spec.image_size,
                                    batch_size=train_utils.check_batch_size(config.batch_size),
                                    normalization=task.normalization, seed=config.seed)
    host_batches = [next(host_iter) for _ in range(args.batches)]
    del host_iter
    bare = make_bare(config, host_batches)
    setup = (f"`shapes` (ssd_tiny, {config.image_size}x{config.image_size}, global batch {config.batch_size}), "
             f"{jax.device_count()} {jax.devices()[0].platform} device(s); {args.steps} timed steps per measurement; "
             f"trainer: log_every {config.log_every}, checkpoint_every {config.checkpoint_every}, eval.every "
             f"{config.eval.every}, num_steps {num_steps} (window: steps {config.log_every}-{num_steps}); "
             f"bare and trainer_premat cycle over the same {args.batches} batches")
    print(setup, flush=True)
    raw = {m: [] for m in ("bare", "trainer_premat", "trainer_tfdata")}
    for r in range(args.rounds):
        order = ["bare", "trainer_premat", "trainer_tfdata"]
        order = order[r % 3:] + order[:r % 3]  # rotate, so no mode always follows another
        for mode in order:
            if mode == "bare":
                row = bare(args.steps)
            else:
                row = run_trainer(config, host_batches if mode == "trainer_premat" else None)
            raw[mode].append(row)
            print(f"round {r + 1} {mode}: {row['images_per_s']:.1f} images/s, {row['cpu_s_per_image'] * 1e3:.1f} "
                  f"CPU ms/image, load {row['load_before']:.1f} -> {row['load_after']:.1f}", flush=True)
    ratios = {}
    for mode in ("trainer_premat", "trainer_tfdata"):
        per_round = [t["images_per_s"] / b["images_per_s"] for t, b in zip(raw[mode], raw["bare"])]
        cpu = [b["cpu_s_per_image"] / t["cpu_s_per_image"] for t, b in zip(raw[mode], raw["bare"])]
        ratios[mode] = dict(rounds=per_round, median=float(np.median(per_round)), cpu_rounds=cpu,
                            cpu_median=float(np.median(cpu)))
    loads = [v for rows in raw.values() for row in rows for v in (row["load_before"], row["load_after"])]
    result = dict(setup=setup, cpus=os.cpu_count(), rounds=args.rounds, rounds_raw=raw, ratios=ratios,
                  summary={m: summarize(rows) for m, rows in raw.items()}, load_range=[min(loads), max(loads)],
                  jax=jax.__version__)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    write_markdown(args.out + ".md", result)
    for mode, ratio in ratios.items():
        print(f"{mode} / bare: images/s median {ratio['median']:.3f} (rounds "
              f"{', '.join(f'{x:.3f}' for x in ratio['rounds'])}); CPU efficiency median {ratio['cpu_median']:.3f}")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
