"""One pass of a model over a config's eval split, on the device mesh: the trainer's periodic and
final evaluation and ``python -m ssd_jax.evaluate`` both run :func:`evaluate_split`.

Three evaluation names, three roles:

* ``ssd_jax.evaluate``: the command line that restores a workdir's checkpoint and evaluates it.
* ``ssd_jax.evaluation`` (this package): pure NumPy metrics (VOC / COCO AP, :class:`Evaluator`,
  reports), with no JAX or TensorFlow at import time.
* ``ssd_jax.evaluation.split_pass`` (this module, which the package does not import): feeds the
  eval split through a jit-compiled predict function with JAX and the input pipeline, and hands
  the detections to the :class:`Evaluator`; also draws the sample grid of a finished run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssd_jax import data
from ssd_jax.evaluation.evaluator import Evaluator

if TYPE_CHECKING:
    from ssd_jax.train_utils import Task


def evaluate_split(task: Task, config, variables, predict_fn, mesh, with_coco=None) -> dict:
    """One pass over the eval split; VOC mAP (and COCO AP) over every image exactly once.

    Args:
      task: the run's ``train_utils.Task`` (classes, input size, normalisation).
      config: the run config (``config.data``, ``config.eval``).
      variables: ``{"params", ...}`` for ``predict_fn``.
      predict_fn: jit-compiled ``(variables, images [B, H, W, 3] float32) -> postprocess.Detections``.
      mesh: the 1-D ``data`` mesh the image batch is sharded over.
      with_coco: also compute the COCO metrics; None follows ``config.eval.with_coco``.

    Returns:
      The :meth:`Evaluator.result` dict (``mAP``, per-class ``ap``, ``num_gt``, ``num_images``, ...).
    """
    batch_sharding = NamedSharding(mesh, P("data"))
    eval_batch = config.eval.batch_size
    n = jax.device_count()
    if eval_batch % n:
        eval_batch = (eval_batch // n + 1) * n  # evaluation pads, so any multiple of the devices works
    it = data.eval_iterator(config.data, image_size=task.spec.image_size,
                            batch_size=eval_batch // jax.process_count(), normalization=task.normalization,
                            process_index=jax.process_index(), process_count=jax.process_count())
    with_coco = config.eval.with_coco if with_coco is None else with_coco
    evaluator = Evaluator(len(task.class_names), class_names=task.class_names,
                          use_07_metric=config.eval.use_07_metric, with_coco=with_coco)
    for batch in it:
        images = jax.make_array_from_process_local_data(batch_sharding, batch["image"])
        dets = predict_fn(variables, images)
        host_batch = {k: v for k, v in batch.items() if k != "image"}
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            dets = multihost_utils.process_allgather(dets, tiled=True)
            host_batch = multihost_utils.process_allgather(host_batch, tiled=True)
        evaluator.add_batch(jax.device_get(dets), host_batch)
    return evaluator.result()


def save_sample_grid(task: Task, config, variables, predict_fn, mesh, path: str, num_images: int):
    """Writes ``path``: a PNG grid of detections on the first ``num_images`` eval images (process 0).

    Every process must call it (the prediction is a collective); arguments as :func:`evaluate_split`.
    """
    from ssd_jax import visualize

    n = jax.device_count()
    batch_size = max(n, (num_images + n - 1) // n * n)
    it = data.eval_iterator(config.data, image_size=task.spec.image_size, batch_size=batch_size // jax.process_count(),
                            normalization=task.normalization)
    batch = next(iter(it))
    images = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), batch["image"])
    dets = predict_fn(variables, images)
    if jax.process_count() > 1:  # every process runs the prediction; process 0 draws its own rows
        from jax.experimental import multihost_utils
        dets = multihost_utils.process_allgather(dets, tiled=True)
    dets = jax.device_get(dets)
    if jax.process_index() != 0:
        return
    pictures = data.denormalize(batch["image"], task.normalization)
    drawn = []
    for i in range(min(num_images, len(pictures))):
        if not batch["valid"][i]:
            continue
        k = int(dets.num_valid[i])
        drawn.append(visualize.draw_boxes(pictures[i], dets.boxes[i, :k], dets.classes[i, :k], dets.scores[i, :k],
                                          class_names=task.class_names, min_score=0.3))
    if drawn:
        visualize.save_grid(drawn, path)
