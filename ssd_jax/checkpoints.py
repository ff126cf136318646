"""Checkpoints of a training workdir, with orbax-checkpoint.

Layout of a workdir::

    workdir/config.json           the resolved training config
    workdir/model.json            what inference needs: model name, classes, input size, ...
    workdir/checkpoints/<step>/   the latest few: items "model" (params, batch_stats) and
                                  "train" (optimiser state, step)
    workdir/best/<step>/          the best by validation mAP: item "model" only

Orbax writes a step into a temporary folder and renames it when complete, so a run killed
while saving never leaves a half-valid checkpoint under its final name (the temporary folder
is not listed as a step). A step folder damaged afterwards (a file truncated or deleted, a
disk error) fails to read: ``Checkpointer.restore_latest`` and ``load_model_variables(...,
"latest"/"best")`` skip it with a warning naming the step and use the previous one.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import orbax.checkpoint as ocp

from ssd_jax.errors import CheckpointError

MODEL_JSON = "model.json"
CHOICES = ("latest", "best")
log = logging.getLogger("ssd_jax.checkpoints")


def _manager(directory, **options):
    return ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
        create=True, **options))


class Checkpointer:
    """Latest-``keep`` checkpoints of the full training state, plus the best model by a metric."""

    def __init__(self, workdir: str, keep: int = 3, best_metric: str = "mAP"):
        self.workdir = workdir
        self.latest = _manager(os.path.join(workdir, "checkpoints"), max_to_keep=keep,
                               enable_async_checkpointing=True)
        self.best = _manager(os.path.join(workdir, "best"), max_to_keep=1,
                             best_fn=lambda m: m[best_metric], best_mode="max",
                             enable_async_checkpointing=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, model: dict, train: dict):
        """Saves (asynchronously) ``model`` (params, batch_stats) and ``train`` (opt_state, ...)."""
        if step in self.latest.all_steps():
            return
        self.latest.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model),
                                                       train=ocp.args.StandardSave(train)))

    def save_best(self, step: int, model: dict, metrics: dict):
        """Offers ``model`` as the best; orbax keeps it only if its metric beats the kept one."""
        if step in self.best.all_steps():
            return
        self.best.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model)),
                       metrics={k: float(v) for k, v in metrics.items() if _is_number(v)})

    def restore_latest(self, model_template: dict, train_template: dict) -> tuple[int, dict, dict] | None:
        """``(step, model, train)`` of the newest readable checkpoint, or None when there is none.

        Templates give structure, shapes, dtypes and shardings (arrays or ShapeDtypeStructs).
        An unreadable step is skipped (with a warning) for an older one.

        Raises:
          CheckpointError: there are checkpoints but none restores (a template that does not fit,
            or every step corrupt): training must not silently start afresh over them.
        """
        abstract = lambda t: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, t)
        steps = sorted(self.latest.all_steps(), reverse=True)
        last_error = None
        for step in steps:
            try:
                restored = self.latest.restore(step, args=ocp.args.Composite(
                    model=ocp.args.StandardRestore(abstract(model_template)),
                    train=ocp.args.StandardRestore(abstract(train_template))))
            except Exception as e:  # a corrupt or partial step folder: fall back to the previous one
                _warn_unreadable(step, self.latest.directory, e)
                last_error = e
                continue
            return step, restored["model"], restored["train"]
        if steps:
            raise CheckpointError(
                f"none of the {len(steps)} checkpoints in {self.latest.directory} restores (steps {steps}; last "
                f"error {type(last_error).__name__}: {str(last_error).strip()[:200]}); move that folder away to "
                "start afresh, or use the config it was written with")
        return None

    def wait(self):
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self):
        self.latest.close()
        self.best.close()


def _warn_unreadable(step, directory, error):
    message = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    log.warning("checkpoint step %d in %s is unreadable (%s: %s); skipping it for an older one",
                step, directory, type(error).__name__, message)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def write_model_info(workdir: str, info: dict):
    """Writes ``model.json``: model name, num_classes, image_size, class_names, normalization, ..."""
    with open(os.path.join(workdir, MODEL_JSON), "w") as f:
        json.dump(info, f, indent=2)


def read_model_info(workdir: str) -> dict:
    path = os.path.join(workdir, MODEL_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} is not a training workdir: {MODEL_JSON} is missing")
    with open(path) as f:
        return json.load(f)


def load_model_variables(workdir: str, checkpoint: str | int = "best") -> tuple[dict, int]:
    """Restores ``(variables, step)`` for inference from a workdir.

    Args:
      workdir: a training workdir.
      checkpoint: ``"best"`` (falls back to ``"latest"`` when no evaluation has run yet),
        ``"latest"``, or a step number.

    Raises:
      FileNotFoundError: the workdir has no (such) checkpoint, with what is available.
    """
    latest_dir = os.path.join(workdir, "checkpoints")
    best_dir = os.path.join(workdir, "best")
    candidates = []
    if checkpoint == "best":
        candidates = [best_dir, latest_dir]
    elif checkpoint == "latest":
        candidates = [latest_dir]
    else:
        step = int(checkpoint)
        candidates = [latest_dir, best_dir]
    for directory in candidates:
        if not os.path.isdir(directory):
            continue
        mgr = ocp.CheckpointManager(os.path.abspath(directory))
        steps = mgr.all_steps()
        if not steps:
            continue
        if checkpoint in CHOICES:
            wanted = sorted(steps, reverse=True)  # newest first; an unreadable one falls back
        elif step in steps:
            wanted = [step]
        else:
            continue
        for want in wanted:
            try:
                restored = mgr.restore(want, args=ocp.args.Composite(model=ocp.args.StandardRestore()))
            except Exception as e:
                if checkpoint not in CHOICES:
                    raise
                _warn_unreadable(want, directory, e)
                continue
            return dict(restored["model"]), int(want)
    available = []
    for directory in (latest_dir, best_dir):
        if os.path.isdir(directory):
            available += [f"{os.path.basename(directory)}/{s}"
                          for s in ocp.CheckpointManager(os.path.abspath(directory)).all_steps()]
    raise FileNotFoundError(
        f"no checkpoint {checkpoint!r} in {workdir}; available: {', '.join(available) or 'none'}")
