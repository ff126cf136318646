"""Each lowering platform gets its own kernels: StableHLO of the models exported with ``jax.export``.

The CPU formulations (:mod:`ssd_jax.ops`) must appear in CPU lowerings only, whatever machine
lowers: a TPU or CUDA lowering made here on the CPU has one ``stablehlo.convolution`` per conv
layer (and per gradient), no Winograd products and nothing from the ``CPU_SCOPE`` named scope.
Only lowering (no compiling), except the multi-platform artifact, which is run once on the CPU.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from ssd_jax import models
from ssd_jax.ops import pooling
from ssd_jax.ops.platform import CPU_SCOPE, for_converters

GENERIC_PLATFORMS = ("tpu", "cuda")


def _abstract(name, image_size=None):
    """``(module, abstract variables, abstract [2, H, W, 3] images)`` of model ``name`` (21 classes)."""
    module, spec = models.create(name, 21, image_size=image_size)
    images = jax.ShapeDtypeStruct((2, *spec.image_size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x[:1], train=False), images)
    return module, variables, images


def _num_conv_layers(params):
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    return sum(1 for path, p in flat.items() if path[-1] == "kernel" and p.ndim == 4)


def _forward(module):
    return jax.jit(lambda v, x: module.apply(v, x, train=False))


def _train_step(module):
    """Loss and parameter gradient of a train-mode forward (BatchNorm on batch statistics)."""
    def loss(params, v, x):
        (loc, logits), updates = module.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(loc ** 2) + jnp.mean(logits ** 2), updates
    return jax.jit(lambda v, x: jax.value_and_grad(loss, has_aux=True)(v["params"], v, x))


def _stablehlo(fn, platforms, *args):
    return export.export(fn, platforms=platforms)(*args).mlir_module()


def _convolutions(text):
    return text.count("stablehlo.convolution")


@pytest.fixture(scope="module")
def lowered():
    """(model, what) -> (conv layers, {platform: StableHLO text}) for the cases below."""
    cases = {("ssd_tiny", "forward"): ("ssd_tiny", 64, _forward),
             ("ssd_tiny", "train_step"): ("ssd_tiny", 64, _train_step),
             ("ssdlite320_mobilenet_v2", "forward"): ("ssdlite320_mobilenet_v2", None, _forward),
             ("ssd300_vgg16", "forward"): ("ssd300_vgg16", None, _forward)}
    out = {}
    for key, (name, size, make) in cases.items():
        module, variables, images = _abstract(name, size)
        fn = make(module)
        texts = {p: _stablehlo(fn, (p,), variables, images) for p in (*GENERIC_PLATFORMS, "cpu")}
        out[key] = (_num_conv_layers(variables["params"]), texts)
    return out


@pytest.mark.parametrize("platform", GENERIC_PLATFORMS)
@pytest.mark.parametrize("name", ["ssd_tiny", "ssdlite320_mobilenet_v2", "ssd300_vgg16"])
def test_generic_forward_has_one_convolution_per_layer_and_no_cpu_formulation(lowered, name, platform):
    layers, texts = lowered[(name, "forward")]
    text = texts[platform]
    assert _convolutions(text) == layers
    assert CPU_SCOPE not in text
    assert "stablehlo.dot_general" not in text  # Winograd's 36 products per layer


@pytest.mark.parametrize("platform", GENERIC_PLATFORMS)
def test_generic_train_step_has_xla_gradients(lowered, platform):
    layers, texts = lowered[("ssd_tiny", "train_step")]
    text = texts[platform]
    # Forward and kernel gradient of every layer, input gradient of all but the first (images get none):
    # the strided layers' input gradients are single convolutions, not one per stride phase.
    assert _convolutions(text) == 3 * layers - 1
    assert CPU_SCOPE not in text


def test_cpu_lowerings_keep_the_cpu_formulations(lowered):
    layers, texts = lowered[("ssd_tiny", "forward")]
    assert _convolutions(texts["cpu"]) == layers  # no CPU formulation in ssd_tiny's inference forward
    for key in [("ssd_tiny", "train_step"), ("ssdlite320_mobilenet_v2", "forward"), ("ssd300_vgg16", "forward")]:
        assert CPU_SCOPE in lowered[key][1]["cpu"], key
    layers, texts = lowered[("ssd_tiny", "train_step")]
    assert _convolutions(texts["cpu"]) > 3 * layers - 1  # strided input gradients: one convolution per phase
    layers, texts = lowered[("ssdlite320_mobilenet_v2", "forward")]
    assert _convolutions(texts["cpu"]) < layers  # depthwise layers as sums of strided views
    layers, texts = lowered[("ssd300_vgg16", "forward")]
    assert _convolutions(texts["cpu"]) < layers and "stablehlo.dot_general" in texts["cpu"]  # Winograd


@pytest.mark.parametrize("platform", GENERIC_PLATFORMS)
def test_max_pool_gradient_is_select_and_scatter_except_on_cpu(platform):
    grad = jax.jit(jax.grad(lambda x: jnp.sum(pooling.max_pool(x, 3, 2, padding=1) ** 2)))
    x = jax.ShapeDtypeStruct((2, 9, 8, 4), jnp.float32)
    generic, cpu = _stablehlo(grad, (platform,), x), _stablehlo(grad, ("cpu",), x)
    assert "stablehlo.select_and_scatter" in generic and CPU_SCOPE not in generic
    assert "stablehlo.select_and_scatter" not in cpu and CPU_SCOPE in cpu


def test_multi_platform_export_carries_both_and_runs_on_cpu():
    module, _ = models.create("ssd_tiny", 3, image_size=64)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
    variables = jax.jit(lambda k: module.init(k, images[:1], train=False))(jax.random.key(0, impl="rbg"))
    # Train mode: BatchNorm's batch statistics are channel sums, a CPU formulation.
    fn = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))
    exported = export.export(fn, platforms=("cpu", "cuda", "tpu"))(variables, images)
    assert exported.platforms == ("cpu", "cuda", "tpu")
    text = exported.mlir_module()
    assert CPU_SCOPE in text and _convolutions(text) >= _num_conv_layers(variables["params"])
    jax.tree.map(lambda ours, ref: np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5),
                 exported.call(variables, images), fn(variables, images))


def test_converter_trace_has_no_platform_switch_and_no_reduce_window():
    """Inside ``for_converters`` (ONNX export) the forward is the generic one with max pooling as
    slices; outside it the trace is unchanged (platform switch, reduce_window)."""
    module, variables, images = _abstract("ssd300_vgg16")
    normal = str(jax.make_jaxpr(lambda v, x: module.apply(v, x, train=False))(variables, images))
    with for_converters():  # a new function object: JAX reuses the cached trace of a function it has seen
        converted = str(jax.make_jaxpr(lambda v, x: module.apply(v, x, train=False))(variables, images))
    assert "platform_index" in normal and "reduce_window_max" in normal
    assert "platform_index" not in converted and "reduce_window" not in converted
    assert converted.count("conv_general_dilated") == _num_conv_layers(variables["params"])


@pytest.mark.parametrize("shape, window, stride, padding, ceil_mode", [
    ((2, 75, 75, 3), 2, 2, 0, True),   # VGG16 pool3 (ceil mode pads the bottom / right)
    ((2, 38, 38, 3), 2, 2, 0, False),  # VGG16 pool1, 2, 4
    ((2, 19, 19, 3), 3, 1, 1, False),  # VGG16 pool5
    ((1, 150, 150, 2), 3, 2, 1, False),  # ResNet50 stem
    ((1, 8, 7, 2), 3, 2, 1, True),
])
def test_max_pool_by_slices_equals_reduce_window(shape, window, stride, padding, ceil_mode):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    x = x.at[:, 0].set(-5.0).at[:, -1].set(7.0)  # extreme values on the edges the padding copies
    expected = pooling.max_pool(x, window, stride, padding, ceil_mode)
    with for_converters():
        got = pooling.max_pool(x, window, stride, padding, ceil_mode)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
