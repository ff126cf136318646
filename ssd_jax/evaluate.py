"""Evaluates a trained workdir: ``python -m ssd_jax.evaluate --workdir runs/shapes``.

Restores a checkpoint (``--checkpoint best|latest|STEP``, default best), runs the eval split of
the config (the workdir's own ``config.json`` unless ``--config`` names another, e.g. to evaluate
on a different dataset), and prints the paper-style per-class table (class, AP, number of ground
truths), the mean, and the 12 COCO numbers. Writes ``eval_<checkpoint>.json``, the table and a
PNG of per-class precision-recall curves into the workdir.

The pass over the eval split is ``ssd_jax.evaluation.split_pass.evaluate_split`` (the trainer's
evaluation too); the metrics are the NumPy ``ssd_jax.evaluation`` package.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections

from ssd_jax import anchors as anchor_lib
from ssd_jax import checkpoints, cli, xla_options
from ssd_jax.trained_anchors import trained_spec


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a training run saved in its workdir."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no config.json; pass --config to say what to evaluate on")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def restore_for_eval(workdir: str, checkpoint: str = "best", config=None):
    """``(config, task, variables, step)``: ``checkpoint`` of ``workdir`` and the task of ``config`` (the
    workdir's own when None) with the default boxes the weights were trained with.

    Raises:
      ValueError: the weights were trained for another number of classes than the config's dataset has.
    """
    from ssd_jax import train_utils

    config = config if config is not None else load_workdir_config(workdir)
    variables, step = checkpoints.load_model_variables(workdir, checkpoint)
    task = train_utils.build_task(config)
    info = checkpoints.read_model_info(workdir)
    spec = trained_spec(info, task.spec)  # converted weights carry their own default boxes
    task = dataclasses.replace(task, spec=spec, anchors=anchor_lib.default_boxes(spec))
    trained_classes = info["num_classes"]
    if trained_classes != len(task.class_names):
        raise ValueError(f"{workdir} was trained for {trained_classes} classes but the eval dataset has "
                         f"{len(task.class_names)} ({', '.join(task.class_names)})")
    return config, task, variables, step


def evaluate_workdir(workdir: str, checkpoint: str = "best", config=None) -> dict:
    """Restores ``checkpoint`` of ``workdir`` and evaluates it; returns the metrics dict."""
    from ssd_jax import train_utils
    from ssd_jax.evaluation import format_table, write_report
    from ssd_jax.evaluation.split_pass import evaluate_split

    config, task, variables, step = restore_for_eval(workdir, checkpoint, config)
    mesh = train_utils.make_mesh()
    predict = jax.jit(train_utils.make_predict_step(task, config), compiler_options=xla_options.compiler_options())
    result = evaluate_split(task, config, variables, predict, mesh)
    result["step"] = step
    print(f"{workdir}: checkpoint {checkpoint} (step {step})")
    print(format_table(result, task.class_names))
    report = write_report(result, workdir, class_names=task.class_names, prefix=f"eval_{checkpoint}")
    print(f"wrote {report['json_path']}, {report['table_path']}, {report['pr_path']}")
    return result


def main(argv=None) -> int:
    p = cli.parser("ssd_jax.evaluate", __doc__, config="optional")
    p.add_argument("--workdir", required=True, help="training workdir to evaluate")
    p.add_argument("--checkpoint", default="best", help="best, latest, or a step number")
    args, overrides = cli.parse(p, argv)
    if args.config:
        config = cli.load_config(args.config, overrides)
    else:  # the workdir's own config, with any --config.FIELD=VALUE overrides
        config = cli.apply_overrides(load_workdir_config(args.workdir), overrides)
    cli.quiet_libraries()
    evaluate_workdir(args.workdir, args.checkpoint, config)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.exit_with(main)
