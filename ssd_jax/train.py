"""Trains an SSD: ``python -m ssd_jax.train --config shapes --workdir runs/shapes``.

This module is the loop and its command line; the task, state and steps it runs are in
``ssd_jax.train_utils``, the evaluation pass in ``ssd_jax.evaluation.split_pass``, and the
metrics log, stop signal and multi-process start in ``ssd_jax.runtime``.

``--config`` is a packaged config name (``ssd_jax/configs/``) or a path to any file with a
``get_config()``; fields are overridden as ``--config.optimizer.lr=0.002`` (a typo is an error
naming the closest field). Re-running the same command with the same workdir resumes from the
latest checkpoint.

Data parallelism: one global-view ``jax.jit`` step over a 1-D ``data`` mesh of every device.
The global batch is sharded over the mesh (``jax.make_array_from_process_local_data``, so each
process feeds only its own rows), parameters are replicated, and XLA inserts the gradient
all-reduce. This is what ``jax.pmap`` did, in the form current JAX recommends; BatchNorm
statistics are over the global batch with no extra code.

Host overhead: the loop keeps the devices busy. Steps are dispatched asynchronously and their
metrics stay on the devices; the loop fetches them (and checks every step's loss for NaN / inf,
in step order) only when it logs, saves or evaluates, and otherwise waits only when it is
``STEPS_IN_FLIGHT`` steps ahead of the devices. The next ``PREFETCH_DEPTH`` input batches are
read and copied to the devices while the current steps run (:class:`ssd_jax.runtime.DevicePrefetch`).
With several processes, the stop-signal poll is a collective every step (see ``StopSignal``).

Multi-process (TPU pods, GPU clusters, or ``--num_processes`` on one machine): see
:func:`ssd_jax.runtime.initialize_distributed`; only process 0 writes logs, every process takes
part in checkpoints. SIGTERM / SIGINT finish the current step, write a checkpoint and exit.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssd_jax import anchors as anchor_lib
from ssd_jax import checkpoints, cli, data, xla_options
from ssd_jax.errors import NonFiniteLossError
from ssd_jax.evaluation import format_table, write_report
from ssd_jax.evaluation.split_pass import evaluate_split, save_sample_grid
from ssd_jax.runtime import DevicePrefetch, MetricsLog, StopSignal, format_duration, initialize_distributed
from ssd_jax.train_utils import (
    build_task,
    check_batch_size,
    checkpoint_items,
    init_state,
    load_pretrained,
    make_mesh,
    make_predict_step,
    make_train_step,
    model_variables,
    state_from_checkpoint,
)

log = logging.getLogger("ssd_jax.train")
# Input batches copied to the devices ahead of the step that uses them, and steps the loop may
# dispatch before it waits for the oldest of them (the device always has the newest queued).
PREFETCH_DEPTH = 2
STEPS_IN_FLIGHT = 2


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) ``config`` in ``workdir``; returns the final evaluation metrics.

    The returned dict also has ``"losses"``: the training loss of each step run in this call,
    and ``"stopped_by"``: the signal name when a SIGTERM / SIGINT ended the run early, else None.
    """
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    local_batch = check_batch_size(config.batch_size)
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))

    task = build_task(config)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        checkpoints.write_model_info(workdir, dict(
            model=config.model, num_classes=len(task.class_names), class_names=list(task.class_names),
            image_size=list(task.spec.image_size), normalization=task.normalization, dtype=config.dtype,
            postprocess=config.postprocess.to_dict(),
            anchor_config=config.anchors.to_dict() if config.get("anchors") else None,
            model_options=config.model_options.to_dict() if config.get("model_options") else None,
            default_boxes=anchor_lib.spec_to_dict(task.spec)))

    state = jax.jit(lambda: init_state(task, config.seed), out_shardings=replicated)()
    ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(*checkpoint_items(state))
    if restored is not None:
        step, model, train = restored
        state = state_from_checkpoint(model, train)
        if is_main:
            print(f"resumed from {os.path.join(workdir, 'checkpoints')} at step {step}", flush=True)
    elif config.init_from:
        state = jax.device_put(load_pretrained(state, config.init_from), replicated)
    elif task.trainable is not None:
        log.warning("config.optimizer freezes %d parameter arrays but config.init_from is empty: they stay at "
                    "their random initialisation", sum(not t for t in jax.tree.leaves(task.trainable)))
    start_step = int(state.step)

    options = xla_options.compiler_options()
    train_step = jax.jit(make_train_step(task, config), donate_argnums=(0,),
                         out_shardings=(replicated, replicated), compiler_options=options)
    predict = jax.jit(make_predict_step(task, config), compiler_options=options)
    metrics_log = MetricsLog(workdir, is_main)
    train_iter = data.train_iterator(
        config.data, image_size=task.spec.image_size, batch_size=local_batch, normalization=task.normalization,
        seed=config.seed, start_step=start_step, process_index=jax.process_index(),
        process_count=jax.process_count())

    def save(step, state):
        ckpt.save(step, *checkpoint_items(state))

    def run_eval(step, state):
        t0 = time.time()
        result = evaluate_split(task, config, model_variables(state), predict, mesh)
        ckpt.save_best(step, checkpoint_items(state)[0], result)
        metrics_log.write(step, "eval", result)
        if is_main:
            coco = f", COCO AP {result['AP']:.4f}" if "AP" in result else ""
            print(f"[eval] step {step}: VOC mAP@0.5 {result['mAP']:.4f}{coco} "
                  f"({result['num_images']} images, {time.time() - t0:.1f}s)", flush=True)
        return result

    if is_main:
        print(f"training {config.model} on {config.data.source} ({len(task.class_names) - 1} classes), "
              f"{jax.device_count()} {jax.devices()[0].platform} device(s), {jax.process_count()} process(es), "
              f"global batch {config.batch_size}, steps {start_step} -> {config.num_steps}, workdir {workdir}",
              flush=True)

    losses_seen, unchecked, result, stopped_by, last_eval_step = [], [], None, None, None
    t_start, last_log = time.time(), None

    def check():
        """Fetches the metrics of the steps run since the last check (one device-to-host transfer,
        which waits for the newest of them), checks their losses in step order, and returns the
        newest step's metrics on the host."""
        host = jax.device_get([metrics for _, metrics in unchecked])
        steps = [s for s, _ in unchecked]
        unchecked.clear()
        for checked_step, values in zip(steps, host):
            loss = float(values["loss"])
            if not np.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({loss}) at step {checked_step}; the last good checkpoint is kept in "
                    f"{os.path.join(workdir, 'checkpoints')} (latest step {ckpt.latest_step()}). Lower the "
                    f"learning rate, add warm-up (config.optimizer.warmup_steps) or gradient clipping "
                    f"(config.optimizer.grad_clip_norm).")
            losses_seen.append(loss)
        return host[-1]

    batches = DevicePrefetch(train_iter, batch_sharding, depth=PREFETCH_DEPTH)
    with StopSignal() as stop:
        step = start_step
        try:
            while step < config.num_steps:
                # Dispatch is asynchronous: the loop runs ahead of the devices, reading and copying
                # the next batches while this step runs, and waits only when it logs, saves or
                # evaluates (check), or when it is STEPS_IN_FLIGHT steps ahead.
                state, metrics = train_step(state, next(batches))
                step += 1
                unchecked.append((step, metrics))
                if len(unchecked) > STEPS_IN_FLIGHT:  # bounds the run-ahead; the newest steps stay queued
                    jax.block_until_ready(unchecked[-1 - STEPS_IN_FLIGHT][1]["loss"])
                log_now = step % config.log_every == 0 or step == config.num_steps
                stopping = stop.poll()
                save_now = step % config.checkpoint_every == 0 or stopping
                eval_now = config.eval.every and step % config.eval.every == 0 and step < config.num_steps
                if log_now or save_now or eval_now:  # nothing is saved or logged before its loss is checked
                    host = check()
                if log_now:
                    metrics_log.write(step, "train", host)
                    if is_main:
                        now = time.time()
                        dt = now - (last_log[1] if last_log else t_start)
                        done = step - (last_log[0] if last_log else start_step)
                        ips = done * config.batch_size / max(dt, 1e-9)
                        eta = (config.num_steps - step) * dt / max(done, 1)
                        print(f"step {step}/{config.num_steps} | loss {host['loss']:.4f} (loc {host['loc_loss']:.4f}"
                              f" conf {host['conf_loss']:.4f}) | lr {host['lr']:.2e} | {ips:.1f} img/s | "
                              f"ETA {format_duration(eta)}", flush=True)
                        last_log = (step, now)
                if stopping:
                    stopped_by = stopping
                    break
                if save_now:
                    save(step, state)
                if eval_now:
                    result, last_eval_step = run_eval(step, state), step
            if unchecked:
                check()
            save(step, state)
            if stopped_by:
                ckpt.wait()
                if is_main:
                    print(f"received {stopped_by}: saved a checkpoint at step {step} in "
                          f"{os.path.join(workdir, 'checkpoints')}; re-run the same command to resume.", flush=True)
                return {"losses": losses_seen, "stopped_by": stopped_by, "step": step}
            if last_eval_step != step:
                result, last_eval_step = run_eval(step, state), step
        finally:
            ckpt.wait()

    samples = os.path.join(workdir, "samples.png")
    save_sample_grid(task, config, model_variables(state), predict, mesh, samples, config.eval.num_sample_images)
    if is_main:
        print(format_table(result, task.class_names), flush=True)
        report = write_report(result, workdir, class_names=task.class_names)
        print(f"trained {step - start_step} steps in {format_duration(time.time() - t_start)}; "
              f"final VOC mAP@0.5 {result['mAP']:.4f}", flush=True)
        print(f"checkpoint: {os.path.join(workdir, 'checkpoints', str(step))}\n"
              f"report: {report['table_path']}, {report['json_path']}, {report['pr_path']}\n"
              f"samples: {samples}", flush=True)
    ckpt.close()
    result["losses"] = losses_seen
    result["stopped_by"] = None
    return result


def main(argv=None) -> int:
    p = cli.parser("ssd_jax.train", __doc__, config="required")
    p.add_argument("--workdir", required=True, help="directory for checkpoints, logs and reports (resumed if present)")
    p.add_argument("--coordinator_address", default="", help="multi-process: host:port of process 0")
    p.add_argument("--num_processes", type=int, default=0, help="multi-process: number of processes")
    p.add_argument("--process_id", type=int, default=-1, help="multi-process: index of this process")
    p.add_argument("--distributed_timeout", type=int, default=300,
                   help="multi-process: seconds to wait for every process to join")
    args, overrides = cli.parse(p, argv)
    config = cli.load_config(args.config, overrides)
    cli.quiet_libraries()
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id, args.distributed_timeout)
    train_and_evaluate(config, args.workdir)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.exit_with(main)
