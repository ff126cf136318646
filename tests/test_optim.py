"""Optimiser and learning-rate schedule: hand-computed values on tiny parameter trees."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssd_jax import optim
from ssd_jax.configs import _base


def opt_cfg(**changes):
    cfg = ml_collections.ConfigDict(_base.base_config().optimizer.to_dict())
    cfg.update(changes)
    return cfg


def lr_at(cfg, steps, num_steps=1000):
    schedule = optim.learning_rate_schedule(cfg, num_steps)
    return np.array([float(schedule(s)) for s in steps])


def test_multistep_without_warmup_is_the_paper_schedule():
    # Paper: 1e-3, x0.1 at 80k and again at 100k.
    got = lr_at(opt_cfg(), [0, 79_999, 80_000, 80_001, 99_999, 100_000, 119_999], num_steps=120_000)
    np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)


def test_multistep_with_warmup_ramps_linearly_then_decays_at_the_absolute_boundaries():
    cfg = opt_cfg(lr=0.1, warmup_steps=10, boundaries=(30, 50), decay_factor=0.5)
    got = lr_at(cfg, [0, 1, 5, 9, 10, 29, 30, 49, 50, 80])
    np.testing.assert_allclose(got, [0.0, 0.01, 0.05, 0.09, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)


def test_boundary_inside_the_warmup_is_dropped():
    cfg = opt_cfg(lr=0.1, warmup_steps=10, boundaries=(5, 20), decay_factor=0.1)
    np.testing.assert_allclose(lr_at(cfg, [5, 10, 19, 20]), [0.05, 0.1, 0.1, 0.01], rtol=1e-6)


def test_cosine_after_warmup_reaches_zero_at_num_steps():
    cfg = opt_cfg(lr=0.2, schedule="cosine", warmup_steps=20)
    # After warm-up: 0.2 * (1 + cos(pi * (s - 20) / 80)) / 2 over num_steps - warmup = 80 steps.
    steps = [10, 20, 40, 60, 100, 150]
    want = [0.1, 0.2, 0.1 * (1 + np.cos(np.pi / 4)), 0.1, 0.0, 0.0]
    np.testing.assert_allclose(lr_at(cfg, steps, num_steps=100), want, rtol=1e-5, atol=1e-7)


def test_constant_and_unknown_schedules():
    np.testing.assert_allclose(lr_at(opt_cfg(lr=0.3, schedule="constant"), [0, 7, 10_000]), 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        optim.learning_rate_schedule(opt_cfg(schedule="poly"), 100)


def tiny_params():
    return {"conv": {"kernel": jnp.ones((1, 1, 2, 2)), "bias": jnp.ones((2,))},
            "bn": {"scale": jnp.ones((2,)), "bias": jnp.zeros((2,))},
            "head": {"kernel": jnp.ones((3, 2))}}


def test_decay_mask_skips_one_dimensional_params_unless_asked():
    mask = optim._decay_mask(tiny_params(), decay_biases=False)
    assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False},
                    "head": {"kernel": True}}
    assert all(optim._decay_mask(tiny_params(), decay_biases=True)[m][n] for m, n in
               [("conv", "kernel"), ("conv", "bias"), ("bn", "scale"), ("bn", "bias"), ("head", "kernel")])


def test_trainable_mask_from_freeze_base_and_frozen_paths():
    params = {"base": {"conv1_1": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)},
                       "conv2_1": {"kernel": jnp.ones((3, 3))}},
              "head": {"kernel": jnp.ones((3, 3))}}
    assert optim.trainable_mask(opt_cfg(), params) is None
    assert optim.trainable_mask(opt_cfg(freeze_base=True), params) == {
        "base": {"conv1_1": {"kernel": False, "bias": False}, "conv2_1": {"kernel": False}}, "head": {"kernel": True}}
    assert optim.trainable_mask(opt_cfg(frozen=("base/conv1_1",)), params) == {
        "base": {"conv1_1": {"kernel": False, "bias": False}, "conv2_1": {"kernel": True}}, "head": {"kernel": True}}
    with pytest.raises(ValueError, match=r"config\.optimizer\.frozen"):
        optim.trainable_mask(opt_cfg(frozen=("base/conv9",)), params)


def test_sgd_momentum_weight_decay_two_steps_by_hand():
    cfg = opt_cfg(lr=0.1, momentum=0.9, weight_decay=0.5, schedule="constant")
    params = {"w": jnp.array([[2.0, -1.0]]), "b": jnp.array([3.0])}
    grads = {"w": jnp.array([[1.0, 1.0]]), "b": jnp.array([1.0])}
    tx = optim.make_optimizer(cfg, params, num_steps=10)
    state = tx.init(params)
    p = params
    for _ in range(2):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    # w: g1 = 1 + 0.5 * [2, -1] = [2, 0.5]; m1 = g1; w1 = [2, -1] - 0.1 * m1 = [1.8, -1.05]
    #    g2 = 1 + 0.5 * w1 = [1.9, 0.475]; m2 = 0.9 * m1 + g2 = [3.7, 0.925]; w2 = w1 - 0.1 * m2
    # b (1-D, not decayed): m1 = 1, b1 = 2.9; m2 = 1.9, b2 = 2.71
    np.testing.assert_allclose(p["w"], [[1.8 - 0.37, -1.05 - 0.0925]], rtol=1e-6)
    np.testing.assert_allclose(p["b"], [2.71], rtol=1e-6)


def test_frozen_params_do_not_move_and_clipping_scales_the_gradient():
    cfg = opt_cfg(lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", grad_clip_norm=1.0)
    params = {"base": {"k": jnp.array([[1.0, 1.0]])}, "head": {"k": jnp.array([[1.0, 1.0]])}}
    grads = {"base": {"k": jnp.array([[3.0, 0.0]])}, "head": {"k": jnp.array([[0.0, 4.0]])}}
    trainable = {"base": {"k": False}, "head": {"k": True}}
    tx = optim.make_optimizer(cfg, params, num_steps=10, trainable=trainable)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["base"]["k"], [[1.0, 1.0]])
    # Only the trained subtree is clipped: its norm is 4 -> scaled to 1.
    np.testing.assert_allclose(new["head"]["k"], [[1.0, 0.0]], atol=1e-6)


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match="sgd or adamw"):
        optim.make_optimizer(opt_cfg(name="lamb"), tiny_params(), 10)


def test_moving_average_of_params_by_hand():
    ema, params = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, 2.0])}
    # step 0: d = min(0.999, 1/10) = 0.1 -> 0.1 * ema + 0.9 * params
    np.testing.assert_allclose(optim.ema_update(ema, params, 0.999, 0)["w"], [2.8, 1.6], rtol=1e-6)
    # step 990: d = min(0.999, 991/1000) = 0.991
    np.testing.assert_allclose(optim.ema_update(ema, params, 0.999, 990)["w"], [1.018, -1.964], rtol=1e-6)
    # late steps: d = decay
    np.testing.assert_allclose(optim.ema_update(ema, params, 0.999, 10**6)["w"], [1.002, -1.996], rtol=1e-6)
    half = optim.ema_update({"w": jnp.ones(2, jnp.bfloat16)}, {"w": jnp.zeros(2, jnp.bfloat16)}, 0.5, 10**6)
    assert half["w"].dtype == jnp.bfloat16 and float(half["w"][0]) == 0.5
