"""Tests of ssd_jax.ops: the CPU kernels and their hand-written gradients against XLA's ops and autodiff."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.models import layers
from ssd_jax.ops import batch_norm, conv, platform, pooling, reduce, winograd


def _key(seed=0):
    # Threefry takes seconds per shape to compile on XLA:CPU; rbg keys keep init compiles short.
    return jax.random.key(seed, impl="rbg")


def _torch_max_pool_reference(x, window, stride, padding, ceil_mode):
    """Slow NumPy MaxPool2d with PyTorch's output-size rule, NHWC."""
    b, h, w, c = x.shape
    def out_len(n):
        span = n + 2 * padding - window
        o = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (o - 1) * stride >= n + padding:
            o -= 1
        return o
    oh, ow = out_len(h), out_len(w)
    out = np.full((b, oh, ow, c), -np.inf, np.float32)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - padding, j * stride - padding
            rows = slice(max(r0, 0), min(r0 + window, h))
            cols = slice(max(c0, 0), min(c0 + window, w))
            out[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("size,window,stride,padding,ceil_mode", [
    (75, 2, 2, 0, True), (7, 2, 2, 0, False), (19, 3, 1, 1, False), (9, 3, 2, 1, True), (10, 3, 2, 0, True)])
def test_max_pool_matches_pytorch_rule(size, window, stride, padding, ceil_mode):
    x = np.random.default_rng(0).normal(size=(1, size, size - 1, 2)).astype(np.float32)
    got = np.asarray(pooling.max_pool(jnp.asarray(x), window, stride, padding, ceil_mode))
    np.testing.assert_array_equal(got, _torch_max_pool_reference(x, window, stride, padding, ceil_mode))
    if size == 75:
        assert got.shape[1] == 38


@pytest.mark.parametrize("hw,window,stride,padding,ceil_mode", [
    ((8, 6), 2, 2, 0, False),   # VGG pool1, pool2, pool4
    ((7, 9), 2, 2, 0, True),    # pool3: ceil mode (odd sizes -> padded bottom/right)
    ((6, 5), 3, 1, 1, False),   # pool5: overlapping windows
    ((9, 8), 3, 2, 1, False),   # ResNet stem pool
])
def test_max_pool_gradient_equals_autodiff_of_reduce_window(hw, window, stride, padding, ceil_mode):
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(2, *hw, 3))
    ties = np.round(np.maximum(smooth, 0) * 2)  # ReLU-like inputs: many equal maxima in a window
    for x in map(jnp.float32, (smooth, ties)):
        y = pooling.max_pool(x, window, stride, padding, ceil_mode)
        pads = pooling.max_pool_padding(x.shape[1:3], window, stride, padding, ceil_mode)
        ref_fn = lambda x, pads=pads: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                                            (1, stride, stride, 1), ((0, 0), *pads, (0, 0)))
        np.testing.assert_array_equal(np.asarray(y), np.asarray(ref_fn(x)))
        g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        ours = jax.vjp(lambda x: pooling.max_pool(x, window, stride, padding, ceil_mode), x)[1](g)[0]
        ref = jax.vjp(ref_fn, x)[1](g)[0]  # XLA's select_and_scatter: first maximum of each window
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=0, atol=1e-6)


def test_max_pool_gradient_goes_to_first_maximum_by_hand():
    x = jnp.array([[1.0, 3.0, 3.0], [3.0, 0.0, 2.0]]).reshape(1, 2, 3, 1)
    # 2x2 windows, stride 1: the first 3 (row-major) of each window takes the gradient.
    dx = jax.grad(lambda x: jnp.sum(pooling.max_pool(x, 2, 1) * jnp.array([10.0, 100.0]).reshape(1, 1, 2, 1)))(x)
    np.testing.assert_array_equal(np.asarray(dx).reshape(2, 3), [[0, 110, 0], [0, 0, 0]])


def test_sum_over_positions_and_bias_gradient():
    rng = np.random.default_rng(1)
    loss = lambda fn: lambda x, b: jnp.sum(jnp.sin(fn(x, b)))
    for shape in ((3, 5, 7, 4), (6, 4), (2, 1, 1, 3)):
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        np.testing.assert_allclose(np.asarray(reduce.sum_over_positions(x)),
                                   np.asarray(x, np.float64).reshape(-1, shape[-1]).sum(0), rtol=1e-5)
        b = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
        ours = jax.grad(loss(conv.add_bias), (0, 1))(x, b)
        ref = jax.grad(loss(lambda x, b: x + b), (0, 1))(x, b)
        for o, r in zip(ours, ref):
            np.testing.assert_allclose(np.asarray(o), np.asarray(r), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,strides,padding,hw", [
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (13, 10)),   # the usual 3x3 stride-2, odd and even sizes
    ((1, 1), (2, 2), ((0, 0), (0, 0)), (8, 7)),     # ResNet downsample: phases without taps get zeros
    ((7, 7), (2, 2), ((3, 3), (3, 3)), (15, 16)),   # ResNet stem
    ((3, 3), (2, 1), ((1, 1), (0, 0)), (9, 3)),     # ssd_tiny's last block on a 3-wide axis
    ((3, 3), (2, 2), ((0, 0), (0, 0)), (6, 5)),     # trailing input rows no window reads
    ((2, 2), (3, 3), ((1, 0), (0, 1)), (10, 8)),    # kernel smaller than the stride, uneven padding
])
def test_strided_conv_gradients_equal_autodiff(kernel, strides, padding, hw):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, *hw, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 3, 5)), jnp.float32)
    ref_fn = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding,
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours_fn = lambda x, w: conv.strided_conv(x, w, strides, padding)
    y = ours_fn(x, w)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref_fn(x, w)))
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    ours = jax.vjp(ours_fn, x, w)[1](g)
    ref = jax.vjp(ref_fn, x, w)[1](g)
    for o, r in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(o), np.asarray(r), rtol=1e-5, atol=1e-5)


def _conv3x3_ref(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _assert_close_to_scale(ours, ref, rel):
    """Winograd rounds differently from a direct sum: errors bounded relative to the result's scale."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=rel * np.abs(ref).max())


@pytest.mark.parametrize("hw", [(9, 7), (8, 12), (1, 1), (2, 3), (5, 4)])
def test_winograd_conv3x3_and_gradients_equal_direct_convolution(hw):
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(2, *hw, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 6, 5)), jnp.float32)
    y = winograd.conv3x3(x, w)
    _assert_close_to_scale(y, _conv3x3_ref(x, w), 1e-5)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    ours, ref = jax.vjp(winograd.conv3x3, x, w)[1](g), jax.vjp(_conv3x3_ref, x, w)[1](g)
    for o, r in zip(ours, ref):
        _assert_close_to_scale(o, r, 1e-5)


def test_winograd_transforms_by_hand():
    """One 6x6 tile -> one 4x4 output: the F(4x4, 3x3) matrices reproduce a direct 1-D correlation."""
    d, g = np.arange(6.0) ** 1.5, np.array([0.5, -2.0, 3.0])
    direct = np.array([d[i:i + 3] @ g for i in range(4)])
    np.testing.assert_allclose(winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d)), direct, rtol=1e-12)
    # the kernel gradient's transpose form: dW[u] = sum_i d[i + u] dy[i] = G^T [(A dy) * (B^T d)]
    dy = np.array([1.0, -0.5, 2.0, 0.25])
    np.testing.assert_allclose(winograd.G.T @ ((winograd.A_T.T @ dy) * (winograd.B_T @ d)),
                               [d[u:u + 4] @ dy for u in range(3)], rtol=1e-12)


def test_conv_takes_winograd_path_for_wide_cpu_3x3_layers():
    c = conv.WINOGRAD_MIN_CHANNELS
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.normal(size=(1, 6, 5, c)), jnp.float32)
    ours = layers.Conv(c, 3, padding=1)
    ref = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), kernel_init=layers.xavier_uniform)
    v = jax.tree.map(lambda p: p + 0.01, ref.init(_key(6), x))
    # The jaxpr stages out every platform's formulation; the lowering for this backend keeps its own.
    winograd_products = "dot_general" in jax.jit(ours.apply).lower(v, x).as_text()
    assert winograd_products == (jax.default_backend() == "cpu")
    _assert_close_to_scale(ours.apply(v, x), ref.apply(v, x), 1e-5)
    loss = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
    g_ours, g_ref = jax.grad(loss(ours), (0, 1))(v, x), jax.grad(loss(ref), (0, 1))(v, x)
    jax.tree.map(lambda a, b: _assert_close_to_scale(a, b, 1e-5), g_ours, g_ref)
    narrow = layers.Conv(8, 3, padding=1)  # fewer channels: XLA's convolution
    xn = x[..., :8]
    vn = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1))).init(_key(7), xn)
    assert "name=conv3x3" not in str(jax.make_jaxpr(narrow.apply)(vn, xn))


@pytest.mark.parametrize("kernel,strides,padding,hw", [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (9, 7)),     # MobileNetV2 / SSDLite head depthwise
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (11, 8)),    # stride-2 depthwise, odd and even sizes
    ((3, 3), (2, 1), ((0, 1), (2, 0)), (6, 5)),     # uneven strides and padding
])
def test_depthwise_conv_equals_grouped_lax_conv(kernel, strides, padding, hw):
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(2, *hw, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 1, 6)), jnp.float32)
    ref_fn = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, feature_group_count=6,
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours_fn = lambda x, w: conv.depthwise_conv(x, w, strides, padding)
    y = ours_fn(x, w)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref_fn(x, w)), rtol=1e-5, atol=1e-5)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for o, r in zip(jax.vjp(ours_fn, x, w)[1](g), jax.vjp(ref_fn, x, w)[1](g)):
        np.testing.assert_allclose(np.asarray(o), np.asarray(r), rtol=1e-5, atol=1e-5)

def test_batch_norm_train_statistics_gradient_and_constant_channel():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32).at[..., 1].set(2.5)  # channel 1 constant
    scale, bias = jnp.array([1.5, 0.5]), jnp.array([0.1, -0.2])
    y, _, var = batch_norm.batch_norm_train(x, scale, bias, 1e-5)
    assert np.all(np.isfinite(np.asarray(y))) and float(var[1]) == 0.0
    np.testing.assert_allclose(np.asarray(y[..., 1]), -0.2, atol=1e-3)
    # Gradients through the returned statistics (no running-average use relies on them, but
    # they must not be silently wrong): against autodiff of the plain formulas.
    f_ours = lambda x: jnp.sum(batch_norm.batch_norm_train(x, scale, bias, 1e-5)[1] * jnp.array([2.0, 3.0])) \
        + jnp.sum(batch_norm.batch_norm_train(x, scale, bias, 1e-5)[2])
    f_ref = lambda x: jnp.sum(x.mean((0, 1)) * jnp.array([2.0, 3.0])) + jnp.sum(x.var((0, 1)))
    np.testing.assert_allclose(np.asarray(jax.grad(f_ours)(x)), np.asarray(jax.grad(f_ref)(x)), rtol=1e-4, atol=1e-6)


def test_cpu_or_generic_vjp_takes_the_cpu_formulation_and_its_own_gradient_rule_on_cpu():
    @jax.custom_vjp
    def cpu_double(x):
        return 2.0 * x

    cpu_double.defvjp(lambda x: (2.0 * x, None), lambda _, g: (10.0 * g,))  # a marked (wrong) rule
    f = lambda x: platform.cpu_or_generic_vjp(x, cpu=cpu_double, generic=lambda x: 3.0 * x)
    x = jnp.arange(3.0)
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU lowering")
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(x)), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(x)), [10.0] * 3)
