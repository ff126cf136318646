"""Per-platform choice of an op's formulation, made when the computation is lowered.

The CPU formulations (Winograd and strided convolutions, depthwise convolution, the
hand-written gradients of bias, max pool and batch norm) are fast on XLA:CPU only. Choosing
them with ``jax.default_backend()`` at trace time would put them into a TPU or CUDA lowering
made on a CPU machine (``jax.export``, AOT); these functions stage out both formulations and
let each lowering platform take its own (``jax.lax.platform_dependent``), so one
multi-platform artifact carries the right formulation for each platform.

Graph converters that read the jaxpr instead of lowering it (jax2onnx) cannot take the
platform switch (``platform_index``). Within :func:`for_converters`, ops trace to their
generic formulation directly, and to converter-friendly forms where they have one
(:func:`ssd_jax.ops.pooling.max_pool`); outside it (training, evaluation, ``jax.export``,
jax2tf) nothing changes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import jax
from jax import lax

CPU_SCOPE = "cpu_formulation"  # named scope of every CPU formulation (seen in lowered locations)
_FOR_CONVERTERS = contextvars.ContextVar("ssd_jax_ops_for_converters", default=False)


@contextlib.contextmanager
def for_converters():
    """Within: computations traced here are meant for a jaxpr-level graph converter (jax2onnx).

    :func:`cpu_or_generic` takes the generic formulation with no platform switch, and max
    pooling is written as maxima of strided slices (see :func:`ssd_jax.ops.pooling.max_pool`).
    The values are the same (up to the float rounding that separates the formulations). The
    choice is made when a function is traced: a function whose trace JAX has cached outside the
    context (``jax.jit`` or ``make_jaxpr`` of the same function object and shapes) keeps that
    trace, so trace a new function inside (as the ONNX export does).
    """
    token = _FOR_CONVERTERS.set(True)
    try:
        yield
    finally:
        _FOR_CONVERTERS.reset(token)


def converting() -> bool:
    """Whether the current trace is inside :func:`for_converters`."""
    return _FOR_CONVERTERS.get()


def cpu_or_generic(*args, cpu: Callable, generic: Callable):
    """``cpu(*args)`` where the computation is lowered for the CPU, ``generic(*args)`` on every other platform.

    Both must return the same shapes and dtypes (and the same values up to float rounding);
    ``cpu`` runs inside the named scope :data:`CPU_SCOPE`. Differentiating through this is
    correct but slow to trace (a conditional per call); differentiable ops use
    :func:`cpu_or_generic_vjp`. Inside :func:`for_converters`: ``generic(*args)``, no switch.
    """
    if converting():
        return generic(*args)

    def cpu_in_scope(*a):
        with jax.named_scope(CPU_SCOPE):
            return cpu(*a)

    return lax.platform_dependent(*args, cpu=cpu_in_scope, default=generic)


def cpu_or_generic_vjp(*args, cpu: Callable, generic: Callable):
    """:func:`cpu_or_generic` whose gradient is, per platform, that of the formulation taken.

    ``args`` are arrays; ``cpu`` and ``generic`` differentiable functions of them (``cpu``
    typically a ``jax.custom_vjp``, whose rule the CPU lowering then uses). The backward pass
    recomputes the taken formulation's forward from ``args`` (its residuals); XLA drops it where
    the backward rule does not use it (as for Winograd and the depthwise convolution). Ops whose
    forward is the same on every platform choose only their backward, with :func:`cpu_or_generic`
    inside their ``custom_vjp`` rule.
    """
    @jax.custom_vjp
    def op(*args):
        return cpu_or_generic(*args, cpu=cpu, generic=generic)

    def op_fwd(*args):
        return op(*args), args

    def op_bwd(args, g):
        def vjp_of(fn):
            return lambda g, *args: jax.vjp(fn, *args)[1](g)
        return cpu_or_generic(g, *args, cpu=vjp_of(cpu), generic=vjp_of(generic))

    op.defvjp(op_fwd, op_bwd)
    return op(*args)
