"""multibox_loss: hand-worked numbers, mining rules, edge cases, and a slow NumPy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.losses import hard_negative_mask, multibox_loss

# Compiled once per shape: much faster than eager op-by-op dispatch. Eager is checked against it.
multibox_loss_jit = jax.jit(multibox_loss, static_argnames=("normalization",))


def ce(logits, label):
    """Softmax cross-entropy of one default box, by hand."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


# One image, 4 default boxes, 3 classes. Box 0 is a positive of class 2, boxes 1-3 are negatives.
LOGITS = [[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
LABELS = [2, 0, 0, 0]
LOC_PRED = [[0.5, -2.0, 0.0, 0.125], [9.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
LOC_TARGETS = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]


def tiny(**kwargs):
    arrays = [jnp.asarray([x], jnp.float32) for x in (LOC_PRED, LOGITS, LOC_TARGETS)]
    return multibox_loss_jit(arrays[0], arrays[1], arrays[2], jnp.asarray([LABELS], jnp.int32), **kwargs)


def test_hand_worked_example():
    # smooth L1 of the positive's errors (0.5, -2, 0, 0.125): 0.125 + 1.5 + 0 + 0.0078125
    loc = 0.5 * 0.5 ** 2 + (2.0 - 0.5) + 0.0 + 0.5 * 0.125 ** 2
    positive_ce = ce(LOGITS[0], 2)
    # background CE of the negatives: box 1 (~0.24), box 2 (~1.55), box 3 (~1.86)
    neg_ce = [ce(LOGITS[i], 0) for i in (1, 2, 3)]
    assert neg_ce[0] < neg_ce[1] < neg_ce[2]

    loss, m = tiny(neg_pos_ratio=3.0)  # 3 negatives allowed, all 3 kept
    assert float(loss) == pytest.approx(positive_ce + sum(neg_ce) + loc, rel=1e-6)
    assert float(m["loc_loss"]) == pytest.approx(loc, rel=1e-6)
    assert float(m["conf_loss"]) == pytest.approx(positive_ce + sum(neg_ce), rel=1e-6)
    assert float(m["num_positives"]) == 1 and float(m["num_negatives"]) == 3

    loss, m = tiny(neg_pos_ratio=2.0, alpha=0.5)  # keeps the 2 hardest: boxes 3 and 2
    assert float(loss) == pytest.approx(positive_ce + neg_ce[1] + neg_ce[2] + 0.5 * loc, rel=1e-6)
    assert float(m["num_negatives"]) == 2

    loss, m = tiny(neg_pos_ratio=1.5)  # floor(1.5 * 1) = 1 negative: box 3
    assert float(loss) == pytest.approx(positive_ce + neg_ce[2] + loc, rel=1e-6)
    assert float(m["num_negatives"]) == 1


def test_negatives_kept_is_min_of_ratio_times_positives_and_available():
    labels = jnp.asarray([[1, 2, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], jnp.int32)
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 3)), jnp.float32)
    loc = jnp.zeros((3, 5, 4))
    _, m = multibox_loss_jit(loc, logits, loc, labels)
    # image 0: 2 positives, 3 negatives available -> 3; image 1: 1 positive -> 3 of 4; image 2: none.
    assert float(m["num_negatives"]) == 6 and float(m["num_positives"]) == 3


def test_ties_between_negatives_go_to_lower_index():
    mask = hard_negative_mask(jnp.asarray([1.0, 2.0, 2.0, 2.0, 5.0]),
                              jnp.asarray([True, True, True, True, False]), 2)
    assert np.asarray(mask).tolist() == [False, True, True, False, False]


def test_zero_positives_gives_zero_loss_and_finite_gradients():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 6, 4)) * 10, jnp.float32)
    loc_pred = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    targets = jnp.full((2, 6, 4), jnp.nan)  # background targets are never looked at
    labels = jnp.zeros((2, 6), jnp.int32)
    for normalization in ("batch", "image"):
        def fn(lp, lg, normalization=normalization):
            return multibox_loss(lp, lg, targets, labels, normalization=normalization)[0]

        loss, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(loc_pred, logits)
        assert float(loss) == 0.0
        assert all(bool(jnp.isfinite(g).all()) for g in grads)


def test_gradients_finite_with_extreme_logits_and_masked_nan_targets():
    logits = jnp.asarray([[[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]]], jnp.float32)
    labels = jnp.asarray([[1, 0, 0]], jnp.int32)
    targets = jnp.asarray([[[0.1, 0.2, 0.3, 0.4], [jnp.inf, jnp.nan, 0, 0], [0, 0, 0, 0]]], jnp.float32)
    fn = lambda lp, lg: multibox_loss(lp, lg, targets, labels)[0]
    loss, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(jnp.zeros((1, 3, 4)), logits)
    assert bool(jnp.isfinite(loss)) and all(bool(jnp.isfinite(g).all()) for g in grads)


def test_image_normalization_by_hand():
    # image 0: the tiny example (1 positive); image 1: 2 positives of class 1 with logits (0, 0, 0),
    # perfect boxes, negatives with logits (0, 0, 0).
    logits = jnp.asarray([LOGITS, [[0.0, 0.0, 0.0]] * 4], jnp.float32)
    labels = jnp.asarray([LABELS, [1, 1, 0, 0]], jnp.int32)
    loc_pred = jnp.asarray([LOC_PRED, [[0.0] * 4] * 4], jnp.float32)
    targets = jnp.asarray([LOC_TARGETS, [[0.0] * 4] * 4], jnp.float32)
    loc0 = 0.5 * 0.25 + 1.5 + 0.5 * 0.125 ** 2
    sum0 = ce(LOGITS[0], 2) + sum(ce(LOGITS[i], 0) for i in (1, 2, 3)) + loc0
    sum1 = 4 * math.log(3.0)  # 2 positives + both negatives, each CE log 3
    loss_image, _ = multibox_loss_jit(loc_pred, logits, targets, labels, normalization="image")
    assert float(loss_image) == pytest.approx((sum0 / 1 + sum1 / 2) / 2, rel=1e-6)
    loss_batch, _ = multibox_loss_jit(loc_pred, logits, targets, labels, normalization="batch")
    assert float(loss_batch) == pytest.approx((sum0 + sum1) / 3, rel=1e-6)


def reference_loss(loc_pred, logits, loc_targets, labels, ratio):
    """Slow NumPy version of torchvision's SSD compute_loss (float64, explicit sorting)."""
    total, num_pos = 0.0, 0
    for b in range(labels.shape[0]):
        z = logits[b].astype(np.float64)
        log_probs = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
        pos = [a for a in range(labels.shape[1]) if labels[b, a] > 0]
        negs = [a for a in range(labels.shape[1]) if labels[b, a] == 0]
        negs.sort(key=lambda a: (log_probs[a, 0], a))  # loss desc = log-prob asc, then index asc
        kept = negs[:math.floor(ratio * len(pos))]
        for a in pos:
            d = np.abs(loc_pred[b, a].astype(np.float64) - loc_targets[b, a])
            total += np.where(d < 1, 0.5 * d * d, d - 0.5).sum() - log_probs[a, labels[b, a]]
        total += sum(-log_probs[a, 0] for a in kept)
        num_pos += len(pos)
    return total / max(num_pos, 1)


def test_matches_numpy_reference_and_jit_matches_eager():
    rng = np.random.default_rng(2)
    b, a, c = 3, 40, 5
    loc_pred = rng.normal(size=(b, a, 4)).astype(np.float32) * 2
    logits = rng.normal(size=(b, a, c)).astype(np.float32) * 3
    targets = rng.normal(size=(b, a, 4)).astype(np.float32)
    labels = np.where(rng.uniform(size=(b, a)) < 0.15, rng.integers(1, c, (b, a)), 0).astype(np.int32)
    labels[2] = 0  # one image without positives
    args = [jnp.asarray(x) for x in (loc_pred, logits, targets, labels)]
    eager, m_eager = multibox_loss(*args)
    jitted, m_jit = jax.jit(multibox_loss)(*args)
    assert float(eager) == pytest.approx(reference_loss(loc_pred, logits, targets, labels, 3.0), rel=1e-5)
    assert float(jitted) == pytest.approx(float(eager), rel=1e-6)
    for key in m_eager:
        assert float(m_jit[key]) == pytest.approx(float(m_eager[key]), rel=1e-6)


def test_bfloat16_inputs_computed_in_float32():
    args = [jnp.asarray([x], jnp.bfloat16) for x in (LOC_PRED, LOGITS, LOC_TARGETS)]
    loss, _ = multibox_loss_jit(*args, jnp.asarray([LABELS], jnp.int32))
    assert loss.dtype == jnp.float32
    assert float(loss) == pytest.approx(float(tiny()[0]), rel=1e-6)  # all values exact in bfloat16


def test_bad_input_raises():
    loc = jnp.zeros((1, 4, 4))
    logits = jnp.zeros((1, 4, 3))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        multibox_loss(loc, logits, loc, jnp.asarray([[0, 3, 0, 0]]))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        multibox_loss(loc, logits, loc, jnp.asarray([[0, -1, 0, 0]]))
    with pytest.raises(ValueError, match="normalization"):
        multibox_loss(loc, logits, loc, jnp.zeros((1, 4), jnp.int32), normalization="positives")
    with pytest.raises(ValueError, match="loc_pred"):
        multibox_loss(jnp.zeros((1, 5, 4)), logits, loc, jnp.zeros((1, 4), jnp.int32))


def test_hard_negative_mask_matches_sorting_with_many_ties():
    rng = np.random.default_rng(5)
    fn = jax.jit(hard_negative_mask)
    for _ in range(20):
        n = 64
        loss = rng.integers(0, 6, n).astype(np.float32) * rng.choice([0.0, 0.5, 1e-30, 1e30])
        negatives = rng.uniform(size=n) < 0.7
        num_keep = int(rng.integers(0, n + 5))
        ranked = sorted((i for i in range(n) if negatives[i]), key=lambda i: (-loss[i], i))[:num_keep]
        expected = np.zeros(n, bool)
        expected[ranked] = True
        got = fn(jnp.asarray(loss), jnp.asarray(negatives), jnp.int32(num_keep))
        np.testing.assert_array_equal(np.asarray(got), expected)
