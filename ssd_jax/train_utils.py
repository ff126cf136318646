"""The pieces a training run is built from: the task its config describes, the train state, the
jit-able train and predict steps, and the device mesh.

:func:`build_task` turns a config into a :class:`Task` (model, default boxes, optimiser,
classes); :func:`make_train_step` and :func:`make_predict_step` close over a task and a config
and return the functions that ``ssd_jax.train`` and ``ssd_jax.evaluate`` compile with
``jax.jit``. Batches are sharded over the 1-D ``data`` mesh of :func:`make_mesh`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssd_jax import anchors as anchor_lib
from ssd_jax import checkpoints, data, losses, matching, models, optim, param_trees, postprocess
from ssd_jax.data import mosaic
from ssd_jax.errors import ConfigError

log = logging.getLogger("ssd_jax.train_utils")

@flax.struct.dataclass
class TrainState:
    """What a checkpoint holds: the step (int32 scalar), params, BatchNorm statistics, optimiser state,
    and with ``optimizer.ema_decay`` the params' moving average (None without it)."""
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any = None


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
    ema_decay: float = 0.0  # 0: no moving average of the params


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
    """The :class:`Task` of ``config``; ``num_steps`` overrides ``config.num_steps`` for the schedule.

    Raises :class:`ConfigError` for a class count, dtype or optimiser setting that cannot work.
    """
    try:
        mosaic.validate(config.data)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    info = data.dataset_info(config.data)
    num_classes = config.num_classes or info.num_classes
    if num_classes != info.num_classes:
        raise ConfigError(f"config.num_classes={num_classes} but the dataset has {info.num_classes} "
                         f"classes (background included): {info.class_names}")
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(config.dtype)
    if dtype is None:
        raise ConfigError(f"config.dtype must be float32 or bfloat16, got {config.dtype!r}")
    module, spec = models.create(config.model, num_classes, dtype=dtype, image_size=config.image_size,
                                 anchors=config.get("anchors"), options=config.get("model_options"))
    params_shape = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)), train=False))["params"]
    ema_decay = float(config.optimizer.get("ema_decay", 0.0))
    if not 0.0 <= ema_decay < 1.0:
        raise ConfigError(f"config.optimizer.ema_decay must be in [0, 1) (0 = off), got {ema_decay}")
    try:
        trainable = optim.trainable_mask(config.optimizer, params_shape)
        tx = optim.make_optimizer(config.optimizer, params_shape, num_steps or config.num_steps, trainable)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Task(module=module, spec=spec, anchors=anchor_lib.default_boxes(spec), tx=tx,
                class_names=tuple(info.class_names), normalization=models.input_normalization(config.model),
                trainable=trainable, ema_decay=ema_decay)


def init_state(task: Task, seed: int) -> TrainState:
    """Freshly initialised params (float32) and optimiser state at step 0 (the average starts at the params)."""
    h, w = task.spec.image_size
    # rbg keys: threefry initialisers compile for seconds per parameter shape on XLA:CPU.
    variables = task.module.init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, h, w, 3)), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=task.tx.init(params),
                      ema_params=jax.tree.map(jnp.copy, params) if task.ema_decay else None)


def checkpoint_items(state: TrainState) -> tuple[dict, dict]:
    """``(model, train)``: the two items a checkpoint stores.

    ``model`` = ``{"params", "batch_stats"}`` is what ``checkpoints.load_model_variables`` (the
    Detector, evaluate, export) reads, so its params are the moving average when there is one;
    ``train`` = ``{"opt_state", "step"}`` plus, with a moving average, ``"train_params"`` (the
    params the optimiser updates), so that a resumed run continues exactly.
    """
    model = {"params": state.params if state.ema_params is None else state.ema_params,
             "batch_stats": state.batch_stats}
    train = {"opt_state": state.opt_state, "step": state.step}
    if state.ema_params is not None:
        train["train_params"] = state.params
    return model, train


def state_from_checkpoint(model: dict, train: dict) -> TrainState:
    """The inverse of :func:`checkpoint_items`."""
    if "train_params" in train:
        params, ema_params = train["train_params"], model["params"]
    else:
        params, ema_params = model["params"], None
    return TrainState(step=train["step"], params=params, batch_stats=model["batch_stats"],
                      opt_state=train["opt_state"], ema_params=ema_params)


def load_pretrained(state: TrainState, workdir: str) -> TrainState:
    """Copies params from another workdir's checkpoint where names and shapes agree.

    Heads whose class count differs keep their fresh initialisation (the paper's advice for
    fine-tuning on new classes); what was and was not copied is logged.
    """
    variables, step = checkpoints.load_model_variables(workdir, "latest")
    new = {"params": state.params, "batch_stats": state.batch_stats}
    diff = param_trees.compare_trees(new, variables)
    fresh = set(diff.missing) | {m.path for m in diff.wrong_shape}
    old = param_trees.flatten(variables)
    tree = jax.tree_util.tree_map_with_path(
        lambda path, value: value if _path(path) in fresh else jnp.asarray(old[_path(path)], value.dtype), new)
    kept = [p for p in param_trees.flatten(new) if p in fresh]
    log.warning("init_from %s (step %d): copied %d arrays, re-initialised %d: %s", workdir, step,
                len(param_trees.flatten(new)) - len(kept), len(kept),
                ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else ""))
    return state.replace(params=tree["params"], batch_stats=tree["batch_stats"],
                         # a copy: the train step donates the state, and one buffer cannot be donated twice
                         ema_params=jax.tree.map(jnp.copy, tree["params"]) if state.ema_params is not None else None)


def _path(key_path) -> str:
    """A ``jax.tree_util`` key path of a dict tree as ``param_trees``' ``"a/b/c"``."""
    return "/".join(str(k.key) for k in key_path)


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
        params = optax.apply_updates(state.params, param_updates)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state,
            batch_stats=updates.get("batch_stats", state.batch_stats),
            ema_params=(optim.ema_update(state.ema_params, params, task.ema_decay, state.step)
                        if state.ema_params is not None else None))
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
    """``{"params", "batch_stats"}`` for ``module.apply`` (no ``batch_stats`` when the model has none).

    The params are the moving average when the run keeps one (``optimizer.ema_decay``): what
    evaluation scores and what checkpoints hold as the model.
    """
    variables = {"params": state.params if state.ema_params is None else state.ema_params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables
