"""Dtypes inside the real training and predict steps (``ssd_jax.train_utils``) under ``config.dtype``.

The documented mixed precision: params, gradients and optimiser state float32; the network's
convolutions and layer outputs in the compute dtype (bfloat16); the model's outputs, matching
targets, the loss and post-processing (NMS scores and boxes) float32. The steps are traced, not
run (``jax.make_jaxpr`` / ``jax.eval_shape`` on abstract shapes), with recorders around the
functions the step calls (flax's method interceptor for every module, wrappers around the loss,
matching and post-processing, and an optimiser that notes the gradients it gets), so a change
that moved any of these to another dtype fails here.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from train_helpers import tiny_config

from ssd_jax import train_utils

BATCH, MAX_BOXES = 2, 8


def _jaxpr_eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in its equations' params (any depth)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _jaxpr_eqns(inner)


def _dtypes(tree) -> set:
    return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree)}


def _trace_step(dtype: str, monkeypatch):
    """Traces the trainer's step for ssd_tiny at 64 px in ``dtype``; returns what it recorded."""
    config = tiny_config(dtype=dtype)
    task = train_utils.build_task(config)
    rec = {"modules": [], "grads": []}

    # The optimiser the step was built with, noting the dtypes of the gradients it is given.
    tx = task.tx

    def update(grads, opt_state, params=None):
        rec["grads"].append(_dtypes(grads))
        return tx.update(grads, opt_state, params)

    task = dataclasses.replace(task, tx=optax.GradientTransformation(tx.init, update))

    def record(name, module, attr):  # module.attr, as the step calls it, noting its arguments and result
        fn = getattr(module, attr)

        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            rec[name] = (args, out)
            return out
        monkeypatch.setattr(module, attr, wrapper)

    record("loss", train_utils.losses, "multibox_loss")
    record("match", train_utils.matching, "match_batch")
    record("detect", train_utils.postprocess, "detect")

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            rec["modules"].append((type(context.module).__name__, context.module.path, out))
        return out

    state = jax.eval_shape(lambda: train_utils.init_state(task, 0))
    h, w = task.spec.image_size
    batch = dict(image=jax.ShapeDtypeStruct((BATCH, h, w, 3), jnp.float32),
                 boxes=jax.ShapeDtypeStruct((BATCH, MAX_BOXES, 4), jnp.float32),
                 labels=jax.ShapeDtypeStruct((BATCH, MAX_BOXES), jnp.int32),
                 mask=jax.ShapeDtypeStruct((BATCH, MAX_BOXES), jnp.bool_))
    step = train_utils.make_train_step(task, config)
    with nn.intercept_methods(interceptor):
        closed, (rec["new_state"], rec["metrics"]) = jax.make_jaxpr(step, return_shape=True)(state, batch)
    rec["state"], rec["jaxpr"] = state, closed.jaxpr
    predict = train_utils.make_predict_step(task, config)
    rec["detections"] = jax.eval_shape(predict, train_utils.model_variables(state), batch["image"])
    return rec


F32, BF16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)


@pytest.mark.parametrize("dtype,compute", [("bfloat16", BF16), ("float32", F32)])
def test_train_and_predict_step_dtypes(dtype, compute, monkeypatch):
    rec = _trace_step(dtype, monkeypatch)

    # Params, BatchNorm statistics, optimiser state (in and out) and gradients: float32.
    for tree in (rec["state"].params, rec["state"].opt_state, rec["new_state"].params,
                 rec["new_state"].opt_state, rec["new_state"].batch_stats):
        assert _dtypes(tree) <= {F32, jnp.dtype(jnp.int32)}, _dtypes(tree)
    assert _dtypes(rec["state"].params) == {F32}
    assert rec["grads"] == [{F32}]

    # Every convolution of the step (forward and backward, every platform's formulation) and every
    # network layer's output in the compute dtype.
    convs = [e for e in _jaxpr_eqns(rec["jaxpr"]) if e.primitive.name == "conv_general_dilated"]
    assert len(convs) > 20
    assert {jnp.dtype(v.aval.dtype) for e in convs for v in e.outvars} == {compute}
    layers = [(name, path, out) for name, path, out in rec["modules"] if name in ("Conv", "BatchNorm")]
    assert len(layers) > 10
    assert {d for _, _, out in layers for d in _dtypes(out)} == {compute}, layers

    # The model's outputs, the matching targets, the loss and its metrics: float32.
    (loc, logits, *_), (loss, metrics) = rec["loss"]
    assert loc.dtype == logits.dtype == F32
    assert loss.dtype == F32 and _dtypes(metrics) == {F32}
    _, targets = rec["match"]
    assert targets.loc_targets.dtype == F32 and targets.labels.dtype == jnp.int32
    assert _dtypes(rec["metrics"]) == {F32}

    # Post-processing: float32 in, float32 scores and boxes out.
    (pp_loc, pp_logits, *_), _ = rec["detect"]
    assert pp_loc.dtype == pp_logits.dtype == F32
    assert rec["detections"].boxes.dtype == rec["detections"].scores.dtype == F32
