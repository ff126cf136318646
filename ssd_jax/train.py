"""Trains an SSD: ``python -m ssd_jax.train --config shapes --workdir runs/shapes``.

``--config`` is a packaged config name (``ssd_jax/configs/``) or a path to any file with a
``get_config()``; fields are overridden as ``--config.optimizer.lr=0.002`` (a typo is an error
naming the closest field). Re-running the same command with the same workdir resumes from the
latest checkpoint.

Data parallelism: one global-view ``jax.jit`` step over a 1-D ``data`` mesh of every device.
The global batch is sharded over the mesh (``jax.make_array_from_process_local_data``, so each
process feeds only its own rows), parameters are replicated, and XLA inserts the gradient
all-reduce. This is what ``jax.pmap`` did, in the form current JAX recommends; BatchNorm
statistics are over the global batch with no extra code.

Multi-process (TPU pods, GPU clusters, or ``--num_processes`` on one machine): see
:func:`initialize_distributed`; only process 0 writes logs, every process takes part in
checkpoints. SIGTERM / SIGINT finish the current step, write a checkpoint and exit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ssd_jax import anchors as anchor_lib
from ssd_jax import checkpoints, configs, data, losses, matching, models, optim, postprocess, xla_options
from ssd_jax.evaluation import Evaluator, format_table, write_report

log = logging.getLogger("ssd_jax.train")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


class ConfigError(ValueError):
    """A config value that cannot work (reported without a traceback by the command line)."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything a run derives from its config: model, default boxes, optimiser, classes."""
    module: Any
    spec: anchor_lib.DefaultBoxSpec
    anchors: np.ndarray
    tx: optax.GradientTransformation
    class_names: tuple
    normalization: str
    trainable: Any = None  # bools like the params (False = frozen), or None when all are trained


# ----------------------------------------------------------------------------- set-up

def make_mesh() -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over every device of every process.

    Auto axis type: XLA propagates the batch sharding through the step (GSPMD), so the model,
    matching and loss code carry no sharding annotations.
    """
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, what: str = "batch_size") -> int:
    """Per-process batch size, after checking the global one divides over devices and processes."""
    n = jax.device_count()
    if batch_size % n:
        raise ConfigError(
            f"config.{what}={batch_size} does not divide by the {n} devices of the data mesh; "
            f"use a multiple of {n} (e.g. {max(n, batch_size // n * n)} or {(batch_size // n + 1) * n})")
    return batch_size // jax.process_count()


def build_task(config, num_steps: int | None = None) -> Task:
    info = data.dataset_info(config.data)
    num_classes = config.num_classes or info.num_classes
    if num_classes != info.num_classes:
        raise ConfigError(f"config.num_classes={num_classes} but the dataset has {info.num_classes} "
                         f"classes (background included): {info.class_names}")
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(config.dtype)
    if dtype is None:
        raise ConfigError(f"config.dtype must be float32 or bfloat16, got {config.dtype!r}")
    module, spec = models.create(config.model, num_classes, dtype=dtype, image_size=config.image_size)
    params_shape = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)), train=False))["params"]
    try:
        trainable = optim.trainable_mask(config.optimizer, params_shape)
        tx = optim.make_optimizer(config.optimizer, params_shape, num_steps or config.num_steps, trainable)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Task(module=module, spec=spec, anchors=anchor_lib.default_boxes(spec), tx=tx,
                class_names=tuple(info.class_names), normalization=models.input_normalization(config.model),
                trainable=trainable)


def init_state(task: Task, seed: int) -> TrainState:
    h, w = task.spec.image_size
    # rbg keys: threefry initialisers compile for seconds per parameter shape on XLA:CPU.
    variables = task.module.init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, h, w, 3)), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=task.tx.init(params))


def load_pretrained(state: TrainState, workdir: str) -> TrainState:
    """Copies params from another workdir's checkpoint where names and shapes agree.

    Heads whose class count differs keep their fresh initialisation (the paper's advice for
    fine-tuning on new classes); what was and was not copied is logged.
    """
    variables, step = checkpoints.load_model_variables(workdir, "latest")
    flat_new = flax.traverse_util.flatten_dict({"params": state.params, "batch_stats": state.batch_stats})
    flat_old = flax.traverse_util.flatten_dict(variables)
    copied, kept = 0, []
    for key, value in flat_new.items():
        old = flat_old.get(key)
        if old is not None and tuple(old.shape) == tuple(value.shape):
            flat_new[key] = jnp.asarray(old, value.dtype)
            copied += 1
        else:
            kept.append("/".join(key))
    log.warning("init_from %s (step %d): copied %d arrays, re-initialised %d: %s", workdir, step, copied,
                len(kept), ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else ""))
    tree = flax.traverse_util.unflatten_dict(flat_new)
    return state.replace(params=tree["params"], batch_stats=tree.get("batch_stats", {}))


# ----------------------------------------------------------------------------- steps

def make_train_step(task: Task, config):
    """The jit-able ``(state, batch) -> (state, metrics)``: forward, matching, loss, update."""
    schedule = optim.learning_rate_schedule(config.optimizer, config.num_steps)
    anchors = jnp.asarray(task.anchors)

    def train_step(state: TrainState, batch):
        targets = matching.match_batch(anchors, batch["boxes"], batch["labels"], batch["mask"],
                                       iou_threshold=config.matching.iou_threshold, mode=config.matching.mode)

        def loss_fn(params):
            if task.trainable is not None:  # frozen params: no backward pass through them at all
                params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, task.trainable)
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            (loc, logits), updates = task.module.apply(variables, batch["image"], train=True,
                                                       mutable=["batch_stats"])
            loss, metrics = losses.multibox_loss(
                loc, logits, targets.loc_targets, targets.labels, neg_pos_ratio=config.loss.neg_pos_ratio,
                alpha=config.loss.alpha, normalization=config.loss.normalization)
            return loss, (metrics, updates)

        (loss, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = task.tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, param_updates), opt_state=opt_state,
            batch_stats=updates.get("batch_stats", state.batch_stats))
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
        return new_state, metrics

    return train_step


def make_predict_step(task: Task, config):
    """The jit-able ``(variables, images) -> Detections`` used for evaluation."""
    anchors = jnp.asarray(task.anchors)
    pp = config.postprocess

    def predict(variables, images):
        loc, logits = task.module.apply(variables, images, train=False)
        return postprocess.detect(loc, logits, anchors, score_threshold=pp.score_threshold,
                                  iou_threshold=pp.iou_threshold, pre_nms_top_k=pp.pre_nms_top_k,
                                  max_detections=pp.max_detections)

    return predict


def model_variables(state: TrainState) -> dict:
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


# ----------------------------------------------------------------------------- evaluation

def evaluate(task: Task, config, variables, predict_fn, mesh, with_coco=None) -> dict:
    """One pass over the eval split; VOC mAP (and COCO AP) over every image exactly once."""
    batch_sharding = NamedSharding(mesh, P("data"))
    eval_batch = config.eval.batch_size
    n = jax.device_count()
    if eval_batch % n:
        eval_batch = (eval_batch // n + 1) * n  # evaluation pads, so any multiple of the devices works
    it = data.eval_iterator(config.data, image_size=task.spec.image_size,
                            batch_size=eval_batch // jax.process_count(), normalization=task.normalization,
                            process_index=jax.process_index(), process_count=jax.process_count())
    with_coco = config.eval.with_coco if with_coco is None else with_coco
    evaluator = Evaluator(len(task.class_names), class_names=task.class_names,
                          use_07_metric=config.eval.use_07_metric, with_coco=with_coco)
    for batch in it:
        images = jax.make_array_from_process_local_data(batch_sharding, batch["image"])
        dets = predict_fn(variables, images)
        host_batch = {k: v for k, v in batch.items() if k != "image"}
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            dets = multihost_utils.process_allgather(dets, tiled=True)
            host_batch = multihost_utils.process_allgather(host_batch, tiled=True)
        evaluator.add_batch(jax.device_get(dets), host_batch)
    return evaluator.result()


def save_samples(task: Task, config, variables, predict_fn, mesh, path: str, num_images: int):
    """A PNG grid of detections on the first validation images."""
    from ssd_jax import visualize

    n = jax.device_count()
    batch_size = max(n, (num_images + n - 1) // n * n)
    it = data.eval_iterator(config.data, image_size=task.spec.image_size, batch_size=batch_size // jax.process_count(),
                            normalization=task.normalization)
    batch = next(iter(it))
    images = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), batch["image"])
    dets = predict_fn(variables, images)
    if jax.process_count() > 1:  # every process runs the prediction; process 0 draws its own rows
        from jax.experimental import multihost_utils
        dets = multihost_utils.process_allgather(dets, tiled=True)
    dets = jax.device_get(dets)
    if jax.process_index() != 0:
        return
    pictures = data.denormalize(batch["image"], task.normalization)
    drawn = []
    for i in range(min(num_images, len(pictures))):
        if not batch["valid"][i]:
            continue
        k = int(dets.num_valid[i])
        drawn.append(visualize.draw_boxes(pictures[i], dets.boxes[i, :k], dets.classes[i, :k], dets.scores[i, :k],
                                          class_names=task.class_names, min_score=0.3))
    if drawn:
        visualize.save_grid(drawn, path)


# ----------------------------------------------------------------------------- logging

class MetricsLog:
    """JSON lines plus TensorBoard events in the workdir (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it at write time)
                import tensorflow as tf
                self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
            except Exception as e:  # TensorBoard is optional; the JSON lines are the record
                log.warning("TensorBoard events disabled: %s", e)

    def write(self, step: int, split: str, metrics: dict):
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in metrics.items() if _finite_number(v)}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        if self._tb is not None:
            import tensorflow as tf
            with self._tb.as_default(step=step):
                for k, v in scalars.items():
                    tf.summary.scalar(f"{split}/{k}", v)
            self._tb.flush()


def _finite_number(v) -> bool:
    """True for a finite scalar (Python, NumPy or 0-d array); False for curves, strings, NaN."""
    scalar = isinstance(v, (int, float, np.number)) or (isinstance(v, (np.ndarray, jax.Array)) and v.ndim == 0)
    return scalar and bool(np.isfinite(float(v)))


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step, with :meth:`poll`.

    Preemptible VMs send SIGTERM some seconds before they stop: the loop finishes its step,
    saves and exits. With several processes, :meth:`poll` is a collective (an all-gather of
    each process's signal number, every step) so that all processes stop after the same step
    even when the signal reaches them at different times; it must be called by every process
    at every step. (This is what orbax's ``reached_preemption`` offers through JAX's preemption
    service, but that sees SIGTERM only and needs ``jax.distributed``; polling covers SIGINT and
    single-process runs the same way.)
    """

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signal.Signals(signum).name

    def poll(self) -> str | None:
        """The name of the signal that stops the run (received by any process), or None."""
        if jax.process_count() == 1:
            return self.received
        from jax.experimental import multihost_utils
        local = int(signal.Signals[self.received]) if self.received else 0
        agreed = int(np.max(multihost_utils.process_allgather(np.int32(local))))
        return signal.Signals(agreed).name if agreed else None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


# ----------------------------------------------------------------------------- the loop

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
            postprocess=config.postprocess.to_dict()))

    state = jax.jit(lambda: init_state(task, config.seed), out_shardings=replicated)()
    ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
    restored = ckpt.restore_latest({"params": state.params, "batch_stats": state.batch_stats},
                                   {"opt_state": state.opt_state, "step": state.step})
    if restored is not None:
        step, model, train = restored
        state = TrainState(step=train["step"], params=model["params"], batch_stats=model["batch_stats"],
                           opt_state=train["opt_state"])
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

    def save(step):
        ckpt.save(step, {"params": state.params, "batch_stats": state.batch_stats},
                  {"opt_state": state.opt_state, "step": state.step})

    def run_eval(step):
        t0 = time.time()
        result = evaluate(task, config, model_variables(state), predict, mesh)
        ckpt.save_best(step, {"params": state.params, "batch_stats": state.batch_stats}, result)
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

    losses_seen, pending, result, stopped_by, last_eval_step = [], None, None, None, None
    t_start, last_log = time.time(), None

    def check(pending_step, pending_metrics):
        host = jax.device_get(pending_metrics)
        loss = float(host["loss"])
        if not np.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) at step {pending_step}; the last good checkpoint is kept in "
                f"{os.path.join(workdir, 'checkpoints')} (latest step {ckpt.latest_step()}). Lower the "
                f"learning rate, add warm-up (config.optimizer.warmup_steps) or gradient clipping "
                f"(config.optimizer.grad_clip_norm).")
        losses_seen.append(loss)
        return host

    with StopSignal() as stop:
        step = start_step
        try:
            while step < config.num_steps:
                batch = next(train_iter)
                arrays = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}
                state, metrics = train_step(state, arrays)
                if pending is not None:  # check the previous step while this one runs
                    check(*pending)
                pending = (step + 1, metrics)
                step += 1
                log_now = step % config.log_every == 0 or step == config.num_steps
                stopping = stop.poll()
                save_now = step % config.checkpoint_every == 0 or stopping
                eval_now = config.eval.every and step % config.eval.every == 0 and step < config.num_steps
                if log_now or save_now or eval_now:  # nothing is saved or logged before its loss is checked
                    host = check(*pending)
                    pending = None
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
                              f"ETA {_format_duration(eta)}", flush=True)
                        last_log = (step, now)
                if stopping:
                    stopped_by = stopping
                    break
                if save_now:
                    save(step)
                if eval_now:
                    result, last_eval_step = run_eval(step), step
            if pending is not None:
                check(*pending)
            save(step)
            if stopped_by:
                ckpt.wait()
                if is_main:
                    print(f"received {stopped_by}: saved a checkpoint at step {step} in "
                          f"{os.path.join(workdir, 'checkpoints')}; re-run the same command to resume.", flush=True)
                return {"losses": losses_seen, "stopped_by": stopped_by, "step": step}
            if last_eval_step != step:
                result, last_eval_step = run_eval(step), step
        finally:
            ckpt.wait()

    samples = os.path.join(workdir, "samples.png")
    save_samples(task, config, model_variables(state), predict, mesh, samples, config.eval.num_sample_images)
    if is_main:
        print(format_table(result, task.class_names), flush=True)
        report = write_report(result, workdir, class_names=task.class_names)
        print(f"trained {step - start_step} steps in {_format_duration(time.time() - t_start)}; "
              f"final VOC mAP@0.5 {result['mAP']:.4f}", flush=True)
        print(f"checkpoint: {os.path.join(workdir, 'checkpoints', str(step))}\n"
              f"report: {report['table_path']}, {report['json_path']}, {report['pr_path']}\n"
              f"samples: {samples}", flush=True)
    ckpt.close()
    result["losses"] = losses_seen
    result["stopped_by"] = None
    return result


# ----------------------------------------------------------------------------- command line

def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
                           initialization_timeout: int = 300) -> bool:
    """Starts JAX's multi-process runtime when this process is one of several; True if it did.

    Explicit arguments win (``coordinator_address`` is ``host:port`` of process 0); otherwise
    JAX's own cluster detection runs when a launcher's environment is present (TPU VM pods,
    SLURM with several tasks, Open MPI). A single plain process (a laptop, one Colab runtime)
    does nothing. Must run before anything touches a JAX backend (``jax.devices()``, an array).

    On CPU the processes' devices talk through gloo over TCP (JAX's default CPU collectives,
    set explicitly here); give each process several CPU devices with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. A loopback coordinator address
    (127.0.0.1, localhost) also binds the coordinator to loopback only.
    """
    if jax.distributed.is_initialized():
        return True
    explicit = bool(coordinator_address) or num_processes > 1
    launcher = (int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
                or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0)
    if not (explicit or launcher):
        return False
    if jax.config.jax_cpu_collectives_implementation is None:  # read when the CPU backend starts
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not explicit:
        jax.distributed.initialize(initialization_timeout=initialization_timeout)
        return True
    host = coordinator_address.rsplit(":", 1)[0] if coordinator_address else ""
    loopback = host in ("127.0.0.1", "localhost", "[::1]")
    jax.distributed.initialize(coordinator_address=coordinator_address or None,
                               num_processes=num_processes or None,
                               process_id=process_id if process_id >= 0 else None,
                               initialization_timeout=initialization_timeout,
                               coordinator_bind_address=coordinator_address if loopback else None)
    return True


def _resolve_config_argument(argv: list) -> list:
    """Lets ``--config shapes`` name a packaged config (config_flags wants a path)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = configs.resolve(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + configs.resolve(arg.split("=", 1)[1])
    return out


def main(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    flags_ = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "Config name (ssd_jax/configs/) or path.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
    flags.DEFINE_string("coordinator_address", "", "Multi-process: address:port of process 0.")
    flags.DEFINE_integer("num_processes", 0, "Multi-process: number of processes.")
    flags.DEFINE_integer("process_id", -1, "Multi-process: index of this process.")
    flags.DEFINE_integer("distributed_timeout", 300, "Multi-process: seconds to wait for every process to join.")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(_):
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and TF are chatty at INFO
        initialize_distributed(flags_.coordinator_address, flags_.num_processes, flags_.process_id,
                               flags_.distributed_timeout)
        try:
            result = train_and_evaluate(flags_.config, flags_.workdir)
        except (NonFiniteLossError, ConfigError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        if result.get("stopped_by"):
            sys.exit(0)

    app.run(run, argv=_resolve_config_argument(sys.argv if argv is None else argv))


if __name__ == "__main__":
    main()
