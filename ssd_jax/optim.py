"""Optimiser and learning-rate schedule from a config's ``optimizer`` section.

SGD with momentum and weight decay is the paper's (Caffe's) optimiser; AdamW is offered for small
models trained from scratch. Caffe decays neither biases nor normalisation scales
(``decay_biases=False``); ``freeze_base=True`` keeps the base network fixed for fine-tuning, as the
paper recommends when the classes change, and ``frozen`` lists further module paths to keep fixed
(the Caffe release freezes VGG16's conv1_1 .. conv2_2). Frozen params get no gradient at all
(``stop_gradient`` in the training step), so their backward pass is not computed. ``ema_decay``
keeps an exponential moving average of the params (:func:`ema_update`) for evaluation and inference.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg, num_steps: int) -> optax.Schedule:
    """Linear warm-up from 0, then ``multistep`` (x decay_factor at each boundary), ``cosine`` or ``constant``."""
    warmup = int(cfg.warmup_steps)
    if cfg.schedule == "multistep":
        main = optax.piecewise_constant_schedule(
            cfg.lr, {int(b) - warmup: cfg.decay_factor for b in cfg.boundaries if int(b) > warmup})
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.lr, max(num_steps - warmup, 1))
    elif cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.lr)
    else:
        raise ValueError(f"optimizer.schedule must be multistep, cosine or constant, got {cfg.schedule!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), main], [warmup])


def _decay_mask(params, decay_biases: bool):
    """True for the params weight decay applies to: kernels always, 1-D params only if asked."""
    return jax.tree_util.tree_map(lambda p: decay_biases or p.ndim > 1, params)


def trainable_params_mask(params, frozen=("base",)):
    """Pytree of bools like ``params``: ``True`` for trainable params, ``False`` under ``frozen``.

    ``frozen`` holds module paths: ``"base"`` (the default: the whole base network, the
    paper's advice for fine-tuning on new classes: keep the base, re-learn extras and heads)
    or deeper ones such as ``"base/conv1_1"``; a path matches whole path components only.
    A path that names no parameter is an error (``ValueError``). Use as
    ``optax.masked(opt, mask)`` or with ``optax.multi_transform`` (False -> set_to_zero).
    Accepts ``params`` or the full variables dict (with a "params" key).
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params) if hasattr(params, "unfreeze") else params)
    top = 1 if all(k[0] == "params" for k in flat) else 0
    prefixes = {f: tuple(f.strip("/").split("/")) for f in frozen}
    unknown = [f for f, p in prefixes.items() if not any(k[top:top + len(p)] == p for k in flat)]
    if unknown:
        modules = sorted({"/".join(k[top:-1]) for k in flat})
        raise ValueError(f"frozen paths {unknown} name no parameters; modules are {modules}")
    return flax.traverse_util.unflatten_dict(
        {k: not any(k[top:top + len(p)] == p for p in prefixes.values()) for k in flat})


def trainable_mask(cfg, params):
    """Bools like ``params``, False for the frozen ones (``freeze_base``, ``frozen``); None if none is."""
    frozen = (("base",) if cfg.freeze_base else ()) + tuple(cfg.frozen)
    if not frozen:
        return None
    try:
        return trainable_params_mask(params, frozen)
    except ValueError as e:
        raise ValueError(f"config.optimizer.frozen: {e}") from None


def make_optimizer(cfg, params, num_steps: int, trainable=None) -> optax.GradientTransformation:
    """The optax transformation for ``params`` (used for its tree structure only).

    ``trainable``: :func:`trainable_mask` of ``cfg`` (None: every param is trained).
    """
    schedule = learning_rate_schedule(cfg, num_steps)
    parts = []
    if cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.name == "sgd":
        if cfg.weight_decay > 0:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, _decay_mask(params, cfg.decay_biases)))
        parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    elif cfg.name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay,
                                 mask=_decay_mask(params, cfg.decay_biases)))
    else:
        raise ValueError(f"optimizer.name must be sgd or adamw, got {cfg.name!r}")
    tx = optax.chain(*parts)
    if trainable is not None:
        tx = optax.multi_transform(
            {"train": tx, "freeze": optax.set_to_zero()},
            jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable))
    return tx


def ema_update(ema, params, decay: float, step):
    """One step of the params' exponential moving average; returns the new average.

    ``ema`` and ``params`` are float pytrees of the same structure; ``step`` is the int32 count of
    updates already applied (0 at the first call, the value before the optimiser step). The rate
    warms up as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``:
    ``d = min(decay, (1 + step) / (10 + step))``, ``ema <- d * ema + (1 - d) * params``, so the
    first updates weight the fresh params heavily instead of the initialisation (d = 0.1 at step 0).
    Computed in float32 whatever the params' dtype, then cast back.
    """
    step = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: (d * e.astype(jnp.float32) + (1 - d) * p.astype(jnp.float32)).astype(e.dtype),
                        ema, params)
