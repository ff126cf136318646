"""Where a trained run's VOC AP is lost, and what inference-side fixes can still buy.

    python -m experiments.ap_breakdown runs/raccoon_s0 runs/raccoon_s1 runs/raccoon_s2 --ensemble --out bd.json

For every workdir (its own ``config.json``, final checkpoint) on its config's eval split:

* ``mAP`` / ``coco_AP``: as the trainer reports them (greedy NMS, ``config.postprocess``);
* ``found``: ground-truth boxes that some detection reaches at IoU >= 0.5 (the highest recall
  any score threshold gives), and ``p_at_r``: the interpolated precision at recall 0, 0.1, ..., 1
  of each class, the 11 numbers whose mean is the VOC07 AP;
* ``flip_tta``: the mAP when the offsets and logits of the image and of its mirror image are averaged
  per default box (the mirror of box ``(cx, cy, w, h)`` is ``(1 - cx, cy, w, h)``, its x offset negated);
* ``soft_nms``: the mAP with linear Soft-NMS (Bodla et al. 2017: a box overlapping a kept one by IoU
  ``o`` above ``postprocess.iou_threshold`` has its score multiplied by ``1 - o`` instead of being
  removed), in NumPy, per class;
* ``train_mAP`` / ``train_coco_AP``: the same model on the training split without augmentation
  (the generalisation gap);

and, with ``--ensemble`` (workdirs of one model and default-box grid), ``ensemble``: the mAP of their
averaged offsets and logits. ``greedy_nms_numpy`` repeats the trainer's mAP with this file's NumPy NMS,
as a check that the Soft-NMS number differs only by the suppression rule.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax import data, postprocess
from ssd_jax.boxes import decode
from ssd_jax.evaluate import restore_for_eval
from ssd_jax.evaluation import Evaluator
from ssd_jax.evaluation.voc import VOC07_RECALL_THRESHOLDS, pairwise_iou


def mirror_permutation(anchors: np.ndarray) -> np.ndarray:
    """``[A]`` int: index of each default box's horizontal mirror ``(1 - cx, cy, w, h)`` in ``anchors [A, 4]``.

    Raises:
      ValueError: the default boxes are not symmetric under a horizontal flip.
    """
    a = np.round(np.asarray(anchors, np.float64), 5)
    index = {tuple(row): i for i, row in enumerate(a)}
    mirrored = np.round(np.stack([1.0 - a[:, 0], a[:, 1], a[:, 2], a[:, 3]], axis=1), 5)
    try:
        return np.array([index[tuple(row)] for row in mirrored])
    except KeyError as e:
        raise ValueError(f"default boxes are not mirror-symmetric (no mirror for {e})") from None


def nms_numpy(boxes, scores, iou_threshold, soft, max_detections, min_score=1e-3):
    """Greedy NMS (``soft=False``: IoU > threshold removes) or linear Soft-NMS (score x ``1 - IoU``).

    Returns ``(boxes [K, 4], scores [K])`` in the order kept, ``K <= max_detections``; ties: lower index.
    """
    boxes, scores = boxes.copy(), scores.astype(np.float64).copy()
    kept_boxes, kept_scores = [], []
    alive = scores >= min_score
    while alive.any() and len(kept_scores) < max_detections:
        i = int(np.argmax(np.where(alive, scores, -np.inf)))
        kept_boxes.append(boxes[i])
        kept_scores.append(scores[i])
        alive[i] = False
        overlap = pairwise_iou(np.broadcast_to(boxes[i], boxes.shape), boxes)
        over = overlap > iou_threshold
        if soft:
            scores = np.where(over, scores * (1.0 - overlap), scores)
            alive &= scores >= min_score
        else:
            alive &= ~over
    return np.array(kept_boxes).reshape(-1, 4), np.array(kept_scores)


def numpy_detections(loc, logits, anchors, pp, soft):
    """Padded detections dict for the Evaluator from raw outputs ``loc [B, A, 4]``, ``logits [B, A, C]``."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    batch, k = loc.shape[0], pp.max_detections
    out = dict(boxes=np.zeros((batch, k, 4)), scores=np.zeros((batch, k)), classes=np.zeros((batch, k), int),
               num_valid=np.zeros(batch, int))
    for i in range(batch):
        boxes = np.clip(np.asarray(decode(jnp.asarray(loc[i]), jnp.asarray(anchors))), 0.0, 1.0)
        found = []
        for c in range(1, probs.shape[-1]):
            order = np.argsort(-probs[i, :, c], kind="stable")[:pp.pre_nms_top_k]
            order = order[probs[i, order, c] > pp.score_threshold]
            b, s = nms_numpy(boxes[order], probs[i, order, c], pp.iou_threshold, soft, k)
            found += [(score, c, box) for score, box in zip(s, b)]
        found = sorted(found, key=lambda t: (-t[0], t[1]))[:k]
        n = len(found)
        out["num_valid"][i] = n
        if n:
            out["scores"][i, :n] = [t[0] for t in found]
            out["classes"][i, :n] = [t[1] for t in found]
            out["boxes"][i, :n] = [t[2] for t in found]
    return out


def load_run(workdir):
    """``(config, task, variables)`` of a workdir's final checkpoint."""
    config, task, variables, _ = restore_for_eval(workdir, "latest")
    return config, task, variables


def make_detect(config, task):
    """Jitted ``(loc, logits) -> Detections`` with the run's ``config.postprocess`` and default boxes."""
    pp, anchors = config.postprocess, jnp.asarray(task.anchors)
    return jax.jit(lambda loc, logits: postprocess.detect(
        loc, logits, anchors, score_threshold=pp.score_threshold, iou_threshold=pp.iou_threshold,
        pre_nms_top_k=pp.pre_nms_top_k, max_detections=pp.max_detections))


def split_batches(config, task, split):
    """``[(images, host_batch)]`` of a split through the eval pipeline (no augmentation, every box)."""
    data_config = config.data.copy_and_resolve_references()
    data_config.eval_split = split
    it = data.eval_iterator(data_config, image_size=task.spec.image_size, batch_size=config.eval.batch_size,
                            normalization=task.normalization)
    return [(b["image"], {k: v for k, v in b.items() if k != "image"}) for b in it]


def score(config, task, detections, batches):
    """Evaluator result of ``detections`` (one per batch) against ``batches [(images, host_batch)]``."""
    evaluator = Evaluator(len(task.class_names), class_names=task.class_names,
                          use_07_metric=config.eval.use_07_metric, with_coco=True)
    for dets, (_, host) in zip(detections, batches, strict=True):
        evaluator.add_batch(jax.device_get(dets), host)
    return evaluator.result()


def curve_summary(result):
    """``found`` per class (boxes reached at IoU >= 0.5) and the 11 interpolated precisions."""
    out = {}
    for c, name in enumerate(result["class_names"]):
        if c == 0 or not result["num_gt"][c]:
            continue
        precision, recall = np.asarray(result["precision"][c]), np.asarray(result["recall"][c])
        points = [float(precision[recall >= t].max()) if (recall >= t).any() else 0.0 for t in VOC07_RECALL_THRESHOLDS]
        found = int(np.rint(recall.max() * result["num_gt"][c])) if recall.size else 0
        out[name] = dict(found=found, num_gt=int(result["num_gt"][c]), p_at_r=[round(p, 3) for p in points])
    return out


def breakdown(workdir, flip=True, train_split=True):
    config, task, variables = load_run(workdir)
    forward = jax.jit(lambda x: task.module.apply(variables, x, train=False))
    detect = make_detect(config, task)
    val = split_batches(config, task, config.data.eval_split)
    outputs = [forward(images) for images, _ in val]  # (loc, logits) per batch, shared by every variant
    base = score(config, task, [detect(*o) for o in outputs], val)
    row = dict(workdir=workdir, mAP=round(base["mAP"], 4), coco_AP=round(base["AP"], 4),
               classes=curve_summary(base))
    for name, soft in (("greedy_nms_numpy", False), ("soft_nms", True)):
        dets = [numpy_detections(*map(np.asarray, o), task.anchors, config.postprocess, soft) for o in outputs]
        row[name] = round(score(config, task, dets, val)["mAP"], 4)
    if flip:
        mirror = jnp.asarray(mirror_permutation(task.anchors))
        sign = jnp.array([-1.0, 1.0, 1.0, 1.0])
        dets = []
        for (loc, logits), (images, _) in zip(outputs, val):
            loc_f, logits_f = forward(images[:, :, ::-1, :])
            dets.append(detect((loc + (loc_f * sign)[:, mirror]) / 2, (logits + logits_f[:, mirror]) / 2))
        row["flip_tta"] = round(score(config, task, dets, val)["mAP"], 4)
    if train_split:
        train = split_batches(config, task, config.data.train_split)
        r = score(config, task, [detect(*forward(images)) for images, _ in train], train)
        row.update(train_mAP=round(r["mAP"], 4), train_coco_AP=round(r["AP"], 4))
    return row


def ensemble(workdirs):
    runs = [load_run(w) for w in workdirs]
    config, task, _ = runs[0]
    for w, (_, t, _) in zip(workdirs, runs):
        if t.spec != task.spec or t.class_names != task.class_names:
            raise SystemExit(f"--ensemble: {w} has other default boxes or classes than {workdirs[0]}")
    detect = make_detect(config, task)

    @jax.jit
    def averaged(x):
        outs = [t.module.apply(v, x, train=False) for _, t, v in runs]
        return sum(o[0] for o in outs) / len(outs), sum(o[1] for o in outs) / len(outs)

    val = split_batches(config, task, config.data.eval_split)
    r = score(config, task, [detect(*averaged(images)) for images, _ in val], val)
    return dict(workdirs=list(workdirs), mAP=round(r["mAP"], 4), coco_AP=round(r["AP"], 4),
                classes=curve_summary(r))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--no-train-split", action="store_true", help="skip the training-split evaluation")
    p.add_argument("--ensemble", action="store_true", help="also score the average of all the workdirs' outputs")
    args = p.parse_args(argv)
    rows = []
    for w in args.workdirs:
        rows.append(breakdown(w, train_split=not args.no_train_split))
        print(json.dumps(rows[-1]), flush=True)
    result = dict(runs=rows)
    if args.ensemble:
        result["ensemble"] = ensemble(args.workdirs)
        print(json.dumps(result["ensemble"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
