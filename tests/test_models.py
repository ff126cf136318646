"""Tests of ssd_jax.models: shapes, parameter counts, box order, dtypes, freezing.

Big models are only traced (``jax.eval_shape``), never compiled; real forward passes use
``ssd_tiny`` at small input sizes.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ssd_jax import models, optim
from ssd_jax.anchors import DefaultBoxSpec, default_boxes
from ssd_jax.errors import ConfigError
from ssd_jax.models import layers
from ssd_jax.models.ssd import SSD
from ssd_jax.models.tiny import tiny_feature_map_sizes, tiny_spec


def _key(seed=0):
    # Threefry takes seconds per shape to compile on XLA:CPU; rbg keys keep init compiles short.
    return jax.random.key(seed, impl="rbg")


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(module, spec, batch=1):
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((batch, *spec.image_size, 3)),
                                              train=False))


def _abstract_apply(module, spec, variables, batch=1):
    return jax.eval_shape(lambda v: module.apply(v, jnp.zeros((batch, *spec.image_size, 3)), train=False), variables)


@pytest.fixture(scope="module")
def abstract_models():
    """name -> (module, spec, abstract variables, abstract (loc, logits) at batch 2)."""
    out = {}
    for name in models.names():
        module, spec = models.create(name, 21)
        variables = _abstract_init(module, spec)
        preds = _abstract_apply(module, spec, variables, batch=2)
        out[name] = (module, spec, variables, preds)
    return out


@pytest.fixture(scope="module")
def tiny128():
    module, spec = models.create("ssd_tiny", 3, image_size=128)
    variables = jax.jit(lambda k: module.init(k, jnp.zeros((1, 128, 128, 3)), train=False))(_key())
    images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 128, 128, 3)), jnp.float32)
    return module, spec, variables, images


@pytest.fixture(scope="module")
def tiny128_outputs(tiny128):
    module, _, variables, images = tiny128
    return jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, images)


def test_registered_names():
    assert set(models.names()) >= {"ssd300_vgg16", "ssd512_vgg16", "ssdlite320_mobilenet_v2", "ssd300_resnet50",
                                   "ssd_tiny"}
    with pytest.raises(ValueError, match="unknown SSD model"):
        models.create("ssd301", 21)
    assert models.input_normalization("ssd300_vgg16") == "caffe"
    assert models.input_normalization("ssd_tiny") == "imagenet"


@pytest.mark.parametrize("name,num_boxes", [
    ("ssd300_vgg16", 38 * 38 * 4 + 19 * 19 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 9 * 4 + 4),
    ("ssd512_vgg16", 64 * 64 * 4 + (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4) * 6 + 2 * 2 * 4 + 4),
    ("ssdlite320_mobilenet_v2", 6 * (20 * 20 + 10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1)),
    ("ssd300_resnet50", 8732),
    ("ssd_tiny", 20 * 20 * 4 + (10 * 10 + 5 * 5 + 3 * 3) * 6 + 1 * 4),
])
def test_output_shapes(abstract_models, name, num_boxes):
    _, spec, _, (loc, logits) = abstract_models[name]
    assert spec.num_boxes == num_boxes == default_boxes(spec).shape[0]
    assert loc.shape == (2, num_boxes, 4) and logits.shape == (2, num_boxes, 21)
    assert loc.dtype == jnp.float32 and logits.dtype == jnp.float32


def test_vgg16_ssd300_parameter_count(abstract_models):
    _, _, variables, _ = abstract_models["ssd300_vgg16"]
    assert _count(variables["params"]) == 26_285_486
    assert set(variables) == {"params"}
    assert variables["params"]["base"]["conv4_3_norm"]["scale"].shape == (512,)


def test_resnet50_first_source_is_38x38x1024():
    feats = jax.eval_shape(lambda: models.resnet.ResNet50Base().init_with_output(
        jax.random.PRNGKey(0), jnp.zeros((1, 300, 300, 3)))[0])
    assert [f.shape for f in feats] == [(1, 38, 38, 1024)]


def test_mobilenet_sources_match_torchvision_ssdlite():
    feats = jax.eval_shape(lambda: models.mobilenet_v2.MobileNetV2Base().init_with_output(
        jax.random.PRNGKey(0), jnp.zeros((1, 320, 320, 3)))[0])
    assert [f.shape for f in feats] == [(1, 20, 20, 576), (1, 10, 10, 1280)]


def test_fixed_size_models_reject_other_sizes():
    with pytest.raises(ValueError, match="only image_size"):
        models.create("ssd300_vgg16", 21, image_size=512)
    module, _ = models.create("ssd300_vgg16", 21)
    with pytest.raises(ValueError, match="DefaultBoxSpec is for 300x300"):
        jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 320, 320, 3))))


def test_spec_and_model_mismatch_raises_at_init():
    module, _ = models.create("ssd_tiny", 3, image_size=128)
    wrong = tiny_spec(128).replace(feature_map_sizes=((16, 16), (8, 8), (4, 4), (2, 2), (2, 2)))
    bad = module.clone(spec=wrong)
    with pytest.raises(ValueError, match="source maps are"):
        jax.eval_shape(lambda: bad.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3))))


def test_tiny_spec_adapts_to_image_size():
    assert tiny_spec(160).feature_map_sizes == ((20, 20), (10, 10), (5, 5), (3, 3), (1, 1))
    assert tiny_spec(128).feature_map_sizes == ((16, 16), (8, 8), (4, 4), (2, 2), (1, 1))
    assert tiny_feature_map_sizes((96, 160)) == ((12, 20), (6, 10), (3, 5), (2, 3), (1, 1))
    assert tiny_spec((96, 160)).image_size == (96, 160)


def test_tiny_is_small():
    module, spec = models.create("ssd_tiny", 21)
    assert _count(_abstract_init(module, spec)["params"]) < 2_000_000


def test_tiny_width_scales_every_channel_count():
    module, spec = models.create("ssd_tiny", 3, options={"width": 1.5})
    params = _abstract_init(module, spec)["params"]
    # 3x3 kernels (h, w, in, out): 16/32/64/128 -> 24/48/96/192; extras 64 -> 128 become 96 -> 192
    assert params["base"]["conv1"]["kernel"].shape == (3, 3, 3, 24)
    assert params["base"]["conv4b"]["kernel"].shape == (3, 3, 192, 192)
    assert params["extras"]["conv7_2"]["kernel"].shape == (3, 3, 96, 192)
    default = _abstract_init(*models.create("ssd_tiny", 3))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(default)
    assert _count(params) > 1.9 * _count(default)
    for bad in (0, -1.0, "2", True):
        with pytest.raises(ConfigError, match=r"model_options\.width"):
            models.create("ssd_tiny", 3, options={"width": bad})


def test_non_square_forward(tiny128):
    _, _, variables, _ = tiny128
    mod, spec = models.create("ssd_tiny", 3, image_size=(96, 160))
    assert spec.feature_map_sizes[0] == (12, 20)
    # Same params work at another size (all convs): outputs follow the new spec.
    loc, logits = jax.jit(lambda v, x: mod.apply(v, x, train=False))(variables, jnp.ones((1, 96, 160, 3)))
    assert loc.shape == (1, spec.num_boxes, 4) and logits.shape == (1, spec.num_boxes, 3)
    assert spec.num_boxes == default_boxes(spec).shape[0]
    assert np.isfinite(np.asarray(loc)).all()


def test_jit_equals_eager(tiny128, tiny128_outputs):
    module, _, variables, images = tiny128
    eager = module.apply(variables, images, train=False)
    jitted = tiny128_outputs
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_train_mode_batch_stats_over_global_sharded_batch(tiny128):
    """Under jit with the batch sharded over 8 devices, BatchNorm uses the global batch."""
    module, _, variables, _ = tiny128
    images = np.random.default_rng(2).normal(0.5, 2.0, size=(8, 128, 128, 3)).astype(np.float32)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    x_sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
    step = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))
    (loc, _), updates = step(variables, x_sharded)
    assert loc.shape[0] == 8
    mean = updates["batch_stats"]["base"]["conv1_bn"]["mean"]
    # Flax momentum 0.9: new running mean = 0.1 * global batch mean of conv1's output (old mean 0).
    kernel = np.asarray(variables["params"]["base"]["conv1"]["kernel"], np.float64)
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.stack([padded[:, dy:dy + 128:2, dx:dx + 128:2] for dy in range(3) for dx in range(3)], axis=3)
    conv1 = np.einsum("bhwtc,tco->bhwo", patches, kernel.reshape(9, 3, -1))
    np.testing.assert_allclose(np.asarray(mean), 0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    # The variance tells global from per-shard statistics (means of equal shards agree).
    var = updates["batch_stats"]["base"]["conv1_bn"]["var"]
    np.testing.assert_allclose(np.asarray(var), 0.9 + 0.1 * conv1.var(axis=(0, 1, 2)), rtol=1e-4)


def test_models_without_batchnorm_return_empty_updates(abstract_models):
    module, _, variables, _ = abstract_models["ssd300_vgg16"]
    _, updates = jax.eval_shape(
        lambda v: module.apply(v, jnp.zeros((1, 300, 300, 3)), train=True, mutable=["batch_stats"]), variables)
    assert updates == {}


def test_l2norm_output_norm_equals_scale():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 7, 16)) * 3.0, jnp.float32)
    layer = layers.L2Norm(20.0)
    variables = layer.init(_key(), x)
    assert np.allclose(variables["params"]["scale"], 20.0)
    y = layer.apply(variables, x)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(y), axis=-1), 20.0, rtol=1e-5)
    scale = np.arange(1, 17, dtype=np.float32)
    y = layer.apply({"params": {"scale": scale}}, x)
    xn = np.asarray(x)
    np.testing.assert_allclose(np.asarray(y), xn / np.linalg.norm(xn, axis=-1, keepdims=True) * scale, rtol=1e-5)
    assert np.isfinite(np.asarray(layer.apply(variables, jnp.zeros((1, 2, 2, 16))))).all()


def test_bfloat16_forward_close_to_float32(tiny128, tiny128_outputs):
    _, _, variables, images = tiny128
    mod16, _ = models.create("ssd_tiny", 3, image_size=128, dtype=jnp.bfloat16)
    v16 = jax.eval_shape(lambda: mod16.init(_key(), images[:1], train=False))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v16["params"]))
    ref = tiny128_outputs
    out = jax.jit(lambda v, x: mod16.apply(v, x, train=False))(variables, images)
    for a, b in zip(ref, out):
        assert b.dtype == jnp.float32 and np.isfinite(np.asarray(b)).all()
        err = np.abs(np.asarray(a) - np.asarray(b)).max()
        assert err < 0.05 * np.abs(np.asarray(a)).max(), err


class _GridBase(nn.Module):
    """Fake base: for each map size, channels (row, col, 1) at each location."""

    sizes: tuple

    def __call__(self, x, train=False):
        out = []
        for h, w in self.sizes:
            rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
            grid = np.stack([rows, cols, np.ones_like(rows)], -1).astype(np.float32)
            out.append(jnp.broadcast_to(grid, (x.shape[0], h, w, 3)))
        return out


def test_head_output_order_matches_default_boxes():
    spec = DefaultBoxSpec(image_size=(60, 90), feature_map_sizes=((3, 4), (2, 3), (1, 2)),
                          min_sizes=(10, 20, 40), max_sizes=(20, 40, 60), aspect_ratios=((2,), (2, 3), (3,)))
    num_classes = 3
    module = SSD(_GridBase(spec.feature_map_sizes), None, spec, num_classes)
    variables = jax.eval_shape(lambda: module.init(_key(), jnp.zeros((1, 60, 90, 3))))
    params = jax.tree.map(lambda p: np.zeros(p.shape, p.dtype), variables["params"])
    for i, k in enumerate(spec.boxes_per_location):
        loc_k = np.zeros((3, 3, 3, k * 4), np.float32)
        conf_k = np.zeros((3, 3, 3, k * num_classes), np.float32)
        for b in range(k):
            loc_k[1, 1, 1, b * 4 + 0] = 1.0          # col
            loc_k[1, 1, 0, b * 4 + 1] = 1.0          # row
            loc_k[1, 1, 2, b * 4 + 2] = b            # box within location
            loc_k[1, 1, 2, b * 4 + 3] = i            # map
            for c in range(num_classes):
                conf_k[1, 1, 0, b * num_classes + c] = 10.0 * (c + 1)
                conf_k[1, 1, 1, b * num_classes + c] = c + 1
                conf_k[1, 1, 2, b * num_classes + c] = 1000.0 * b
        params["heads"][f"loc_{i}"]["kernel"] = loc_k
        params["heads"][f"conf_{i}"]["kernel"] = conf_k
    loc, logits = jax.jit(module.apply)({"params": params}, jnp.zeros((2, 60, 90, 3)))
    loc, logits = np.asarray(loc[1]), np.asarray(logits[1])
    boxes = default_boxes(spec)
    assert loc.shape[0] == boxes.shape[0] == spec.num_boxes
    m = loc[:, 3].astype(int)
    b = loc[:, 2].astype(int)
    fh = np.array([s[0] for s in spec.feature_map_sizes])[m]
    fw = np.array([s[1] for s in spec.feature_map_sizes])[m]
    # default box centre (j + 0.5) / fw, (i + 0.5) / fh  <->  head output location (i, j)
    np.testing.assert_allclose(boxes[:, 0] * fw - 0.5, loc[:, 0], atol=1e-4)
    np.testing.assert_allclose(boxes[:, 1] * fh - 0.5, loc[:, 1], atol=1e-4)
    np.testing.assert_array_equal(m, np.repeat(np.arange(3), spec.num_boxes_per_map))
    for i, k in enumerate(spec.boxes_per_location):  # box b of a location is the b-th Caffe box
        min_s, max_s = spec.min_sizes[i], spec.max_sizes[i]
        sizes = [(min_s, min_s), (math.sqrt(min_s * max_s),) * 2]
        for r in spec.aspect_ratios[i]:
            sizes += [(min_s * math.sqrt(r), min_s / math.sqrt(r)), (min_s / math.sqrt(r), min_s * math.sqrt(r))]
        assert len(sizes) == k
        sel = m == i
        expected = np.array(sizes)[b[sel]] / np.array([90.0, 60.0])
        np.testing.assert_allclose(boxes[sel, 2:], expected, rtol=1e-5)
    c = np.arange(num_classes)
    expected_logits = (c + 1) * (loc[:, :1] + 10 * loc[:, 1:2]) + 1000.0 * b[:, None]
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5)


def test_freeze_mask_marks_exactly_the_base(abstract_models):
    _, _, variables, _ = abstract_models["ssd300_vgg16"]
    mask = optim.trainable_params_mask(variables["params"])
    assert jax.tree.structure(mask) == jax.tree.structure(variables["params"])
    frozen = sum(int(np.prod(p.shape)) for p, t in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(mask))
                 if not t)
    vgg16_convs = 14_714_688  # conv1_1 .. conv5_3 of VGG16
    fc6, fc7, norm = 3 * 3 * 512 * 1024 + 1024, 1024 * 1024 + 1024, 512
    assert frozen == vgg16_convs + fc6 + fc7 + norm
    assert all(jax.tree.leaves(mask["heads"])) and all(jax.tree.leaves(mask["extras"]))
    assert not any(jax.tree.leaves(mask["base"]))
    # Also on the full variables dict.
    full = optim.trainable_params_mask(variables)
    assert jax.tree.leaves(full["params"]) == jax.tree.leaves(mask)


def test_freeze_mask_takes_module_paths(abstract_models):
    variables = abstract_models["ssd300_vgg16"][2]
    caffe = ("base/conv1_1", "base/conv1_2", "base/conv2_1", "base/conv2_2")  # ssd_pascal.py freeze_layers
    mask = optim.trainable_params_mask(variables["params"], caffe)
    frozen = sum(int(np.prod(p.shape)) for p, t in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(mask))
                 if not t)
    assert frozen == (27 * 64 + 64) + (576 * 64 + 64) + (576 * 128 + 128) + (1152 * 128 + 128)
    assert mask["base"]["conv3_1"]["kernel"] and not mask["base"]["conv2_2"]["bias"]
    with pytest.raises(ValueError, match=r"\['base/conv1'\] name no parameters"):
        optim.trainable_params_mask(variables["params"], ("base/conv1",))  # a module is matched whole


def test_freeze_mask_with_optax_keeps_base_fixed(tiny128):
    import optax
    params = tiny128[2]["params"]
    opt = optax.multi_transform({True: optax.sgd(0.1), False: optax.set_to_zero()},
                                optim.trainable_params_mask(params))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates["base"]))
    assert all(np.all(np.asarray(u) == -0.1) for u in jax.tree.leaves(updates["heads"]))
    assert all(np.all(np.asarray(u) == -0.1) for u in jax.tree.leaves(updates["extras"]))


@pytest.mark.parametrize("kernel,stride,pad,dilation,groups", [
    (3, 1, 1, 1, 1), (3, 2, 1, 1, 1), (3, 1, 6, 6, 1), (4, 1, 1, 1, 1), (1, 1, 0, 1, 1), (3, 2, 1, 1, 4),
])
def test_conv_equals_flax_conv_init_output_and_gradients(kernel, stride, pad, dilation, groups):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 13, 11, 4)), jnp.float32)
    ours = layers.Conv(8, kernel, strides=stride, padding=pad, dilation=dilation, groups=groups)
    ref = nn.Conv(8, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                  kernel_dilation=dilation, feature_group_count=groups,
                  kernel_init=layers.xavier_uniform, bias_init=nn.initializers.zeros)
    v_ours, v_ref = ours.init(_key(5), x), ref.init(_key(5), x)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), v_ours, v_ref)
    v = jax.tree.map(lambda p: p + 0.1, v_ref)  # a non-zero bias too
    np.testing.assert_allclose(np.asarray(ours.apply(v, x)), np.asarray(ref.apply(v, x)), rtol=1e-5, atol=1e-6)
    loss = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
    g_ours, g_ref = jax.grad(loss(ours), (0, 1))(v, x), jax.grad(loss(ref), (0, 1))(v, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5),
                 g_ours, g_ref)


def test_conv_wrapper_uses_pytorch_padding_and_depthwise_fallback():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 6, 5, 4)), jnp.float32)
    conv = layers.Conv(4, 3, strides=2, padding=1, groups=4, use_bias=False)
    variables = conv.init(_key(), x)
    assert variables["params"]["kernel"].shape == (3, 3, 1, 4)
    y = conv.apply(variables, x)
    ref = jax.lax.conv_general_dilated(x, variables["params"]["kernel"], (2, 2), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4)
    assert y.shape == (1, 3, 3, 4)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-6)


def _batchnorm_pair(dtype=None):
    kw = dict(momentum=0.9, epsilon=1e-5, dtype=dtype)
    return layers.BatchNorm(**kw), nn.BatchNorm(**kw)


def test_batchnorm_equals_flax_batchnorm_train_step():
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(4, 5, 6, 8)) * 3 + 1.5, jnp.float32)
    weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    ours, ref = _batchnorm_pair()
    v_ours, v_ref = ours.init(_key(), x, use_running_average=False), ref.init(_key(), x, use_running_average=False)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), v_ours, v_ref)
    assert float(v_ours["batch_stats"]["var"][0]) == 1.0  # init does not update the running averages
    v = {"params": {"scale": jnp.linspace(0.5, 2.0, 8), "bias": jnp.linspace(-1.0, 1.0, 8)},
         "batch_stats": {"mean": jnp.full((8,), 0.3), "var": jnp.full((8,), 2.0)}}

    def loss(m):
        def f(v, x):
            y, updates = m.apply(v, x, use_running_average=False, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y) * weights), (y, updates)
        return jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))

    (_, (y_o, u_o)), g_o = loss(ours)(v, x)
    (_, (y_r, u_r)), g_r = loss(ref)(v, x)
    np.testing.assert_allclose(np.asarray(y_o), np.asarray(y_r), rtol=1e-5, atol=1e-5)
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    jax.tree.map(close, u_o, u_r)   # running mean/var after one step
    jax.tree.map(close, g_o, g_r)   # d/dparams and d/dx
    x64 = np.asarray(x, np.float64).reshape(-1, 8)
    np.testing.assert_allclose(np.asarray(u_o["batch_stats"]["var"]), 0.9 * 2.0 + 0.1 * x64.var(0), rtol=1e-5)
    e_o = ours.apply({**v, **u_o}, x, use_running_average=True)
    e_r = ref.apply({**v, **u_r}, x, use_running_average=True)
    np.testing.assert_allclose(np.asarray(e_o), np.asarray(e_r), rtol=1e-5, atol=1e-5)


def test_batchnorm_bfloat16_output_equals_flax_batchnorm():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32).at[..., 1].set(2.5)  # channel 1 constant
    ours, ref = _batchnorm_pair(jnp.bfloat16)
    xb = x.astype(jnp.bfloat16)
    v = ref.init(_key(), xb, use_running_average=False)
    y_o = ours.apply(v, xb, use_running_average=False, mutable=["batch_stats"])[0]
    y_r = ref.apply(v, xb, use_running_average=False, mutable=["batch_stats"])[0]
    assert y_o.dtype == y_r.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y_o, np.float32), np.asarray(y_r, np.float32), atol=2e-2)
