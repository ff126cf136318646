"""SSD MultiBox loss with hard negative mining.

Conventions (as everywhere in ssd_jax): regression offsets are ordered ``(cx, cy, w, h)``
(see :mod:`ssd_jax.boxes`), label 0 is background and object classes are 1..C-1 (C includes
background), shapes are static so the loss runs under ``jit``.

The loss follows the paper, Caffe, ssd.pytorch and torchvision's ``SSD.compute_loss``::

    L = (L_conf + alpha * L_loc) / N

* ``L_loc``: smooth L1 (beta = 1: ``0.5 x^2`` if ``|x| < 1`` else ``|x| - 0.5``) between
  predicted and target offsets of positive default boxes (label > 0), summed over the 4 coords.
* ``L_conf``: softmax cross-entropy of positives (true class) and of the hard negatives
  (background class).
* Hard negative mining, per image: negatives (label 0) are ranked by their confidence loss
  ``-log softmax(logits)[0]``, ties broken by lower anchor index, and the first
  ``floor(neg_pos_ratio * num_positives_of_that_image)`` are kept (fewer if the image has
  fewer negatives). An image without positives keeps no negatives, as in torchvision.
* ``N``: positives in the whole batch, at least 1 (``normalization="batch"``, the default, as
  Caffe / ssd.pytorch / torchvision). A batch without positives therefore gives loss 0 (no
  positive terms and no mined negatives), with finite gradients.

Differences from torchvision, and why:
* ``normalization="image"`` (divide each image's sum by its own positives, at least 1, then
  average over the batch) is an option some ports use; torchvision has only the batch form.
* The count of kept negatives is ``floor(ratio * P)``; torchvision keeps ranks ``< ratio * P``,
  i.e. ``ceil``. They agree for the integer ratios everyone uses (3).
* Everything is computed in float32 whatever the input dtype (bfloat16 logits lose too much
  in log-softmax).
* Mining does not sort: torchvision sorts each image's losses; here the cut-off loss is found
  by bisection (:func:`hard_negative_mask`), which selects exactly the same negatives with a
  deterministic tie order and is several times cheaper on CPU for A = 8732.
* The offsets of non-positive anchors never enter the computation (masked before the
  subtraction), so arbitrary values there (even inf/NaN) cannot poison the gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_NORMALIZATIONS = ("batch", "image")


def smooth_l1(x):
    """Elementwise smooth L1 with beta = 1: ``0.5 x^2`` if ``|x| < 1`` else ``|x| - 0.5``."""
    ax = jnp.abs(x)
    return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def hard_negative_mask(neg_loss, negatives, num_keep):
    """Selects the hard negatives of one image, exactly and without sorting.

    Args:
      neg_loss: ``[A]`` float, the ranking loss (background cross-entropy, >= 0; negative
        values are treated as 0).
      negatives: ``[A]`` bool, which anchors are negatives.
      num_keep: scalar int, how many negatives to keep at most.

    Returns:
      ``[A]`` bool: the ``num_keep`` negatives ranked first by ``(loss descending, index
      ascending)``; all negatives when there are fewer.

    A sort of 8732 losses per image is slow on CPU (about 4 ms each, so over 100 ms for a
    batch of 32), so the ``num_keep``-th largest loss ``v`` is found exactly by a 31-step
    bisection on the float bit pattern (monotone for non-negative floats), each step one
    vectorised count. Losses above ``v`` are kept, and among losses equal to ``v`` the lowest
    indices fill the remaining places (a second bisection, over the index), so ties are
    deterministic.
    """
    loss = jnp.where(neg_loss > 0, neg_loss, 0.0).astype(jnp.float32)  # also turns -0.0 into +0.0
    key = jnp.where(negatives, jax.lax.bitcast_convert_type(loss, jnp.int32), -1)
    k = jnp.minimum(num_keep, negatives.sum()).astype(jnp.int32)

    def step(bounds):  # invariant: count(key >= lo) >= k (when k > 0), count(key >= hi) < k
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = (key >= mid).sum() >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    top = jnp.int32(0x7F800001)  # one above +inf
    # while_loop, not fori_loop: a fori_loop becomes a scan under jax.grad, which runs ~3x slower.
    v, _ = jax.lax.while_loop(lambda b: b[1] - b[0] > 1, step, (jnp.int32(0), top))
    above = key > v
    ties = key == v
    # Among the ties keep the lowest indices: the smallest m with count(ties & index < m) >= need.
    need = k - above.sum()
    index = jnp.arange(key.shape[0], dtype=jnp.int32)

    def index_step(bounds):  # invariant: count(ties & index < lo) < need <= count(ties & index < hi)
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = (ties & (index < mid)).sum() >= need
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    _, m = jax.lax.while_loop(lambda b: b[1] - b[0] > 1, index_step, (jnp.int32(0), jnp.int32(key.shape[0])))
    keep = above | (ties & (index < m) & (need > 0))
    return keep & negatives & (k > 0)


def _check_inputs(loc_pred, cls_logits, loc_targets, labels, normalization):
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"multibox_loss: normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if cls_logits.ndim != 3:
        raise ValueError(f"multibox_loss: cls_logits must be [B, A, C], got shape {cls_logits.shape}")
    b, a, c = cls_logits.shape
    for name, x, shape in (("loc_pred", loc_pred, (b, a, 4)), ("loc_targets", loc_targets, (b, a, 4)),
                           ("labels", labels, (b, a))):
        if tuple(x.shape) != shape:
            raise ValueError(f"multibox_loss: {name} must have shape {shape} (from cls_logits {cls_logits.shape}),"
                             f" got {tuple(x.shape)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"multibox_loss: labels must be integers, got dtype {labels.dtype}")
    if not isinstance(labels, jax.core.Tracer):  # range is only checkable on concrete values
        lab = np.asarray(labels)
        if lab.size and (lab.min() < 0 or lab.max() >= c):
            raise ValueError(f"multibox_loss: labels must be in 0..{c - 1}, got range [{lab.min()}, {lab.max()}]")


def multibox_loss(loc_pred, cls_logits, loc_targets, labels, neg_pos_ratio=3.0, alpha=1.0,
                  normalization="batch"):
    """SSD MultiBox loss (see the module docstring for the exact definition).

    Args:
      loc_pred: ``[B, A, 4]`` predicted offsets ``(cx, cy, w, h)``.
      cls_logits: ``[B, A, C]`` class logits, index 0 = background.
      loc_targets: ``[B, A, 4]`` target offsets (only positives are used).
      labels: ``[B, A]`` int, 0 = background, 1..C-1 objects (no ignore label). Checked
        to be in range when concrete; under ``jit`` out-of-range labels are undefined.
      neg_pos_ratio: negatives kept per positive, per image.
      alpha: weight of the localisation loss.
      normalization: ``"batch"`` (divide by the batch's positives) or ``"image"`` (divide
        each image by its positives, then average). Static.

    Returns:
      ``(loss, metrics)``: ``loss`` a float32 scalar; ``metrics`` a dict of float32
      scalars ``loss``, ``loc_loss``, ``conf_loss`` (normalised like ``loss``, so
      ``loss = conf_loss + alpha * loc_loss``), ``num_positives``, ``num_negatives``
      (mined negatives, summed over the batch).
    """
    _check_inputs(loc_pred, cls_logits, loc_targets, labels, normalization)
    loc_pred = loc_pred.astype(jnp.float32)
    loc_targets = loc_targets.astype(jnp.float32)
    logits = cls_logits.astype(jnp.float32)

    positives = labels > 0
    negatives = labels == 0
    num_pos = positives.sum(axis=1)  # [B]

    diff = jnp.where(positives[..., None], loc_pred - jnp.where(positives[..., None], loc_targets, 0.0), 0.0)
    loc_per_image = smooth_l1(diff).sum(axis=(1, 2))  # masked entries give smooth_l1(0) = 0

    log_probs = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]  # [B, A]
    num_keep = jnp.floor(neg_pos_ratio * num_pos.astype(jnp.float32)).astype(jnp.int32)
    hard_neg = jax.vmap(hard_negative_mask)(jax.lax.stop_gradient(ce), negatives, num_keep)
    conf_per_image = jnp.where(positives | hard_neg, ce, 0.0).sum(axis=1)

    if normalization == "batch":
        denom = jnp.maximum(num_pos.sum(), 1).astype(jnp.float32)
        loc_loss = loc_per_image.sum() / denom
        conf_loss = conf_per_image.sum() / denom
    else:
        denom = jnp.maximum(num_pos, 1).astype(jnp.float32)
        loc_loss = jnp.mean(loc_per_image / denom)
        conf_loss = jnp.mean(conf_per_image / denom)
    loss = conf_loss + alpha * loc_loss
    metrics = {
        "loss": loss,
        "loc_loss": loc_loss,
        "conf_loss": conf_loss,
        "num_positives": num_pos.sum().astype(jnp.float32),
        "num_negatives": hard_neg.sum().astype(jnp.float32),
    }
    return loss, metrics
