"""Training and evaluation input pipelines: tf.data on the CPU -> fixed-shape NumPy batches.

Train batches (endless): image float32 [B,H,W,3] normalised RGB, boxes float32 [B,M,4] corners
in [0,1], labels int32 [B,M] (1..C-1, 0 in padding), mask bool [B,M]; M = ``train_box_slots``:
``max_boxes.train_max_boxes`` (``data.max_boxes``, or derived from the training split when 0), times
the tile count with mosaics (``data.augment.mosaic_prob``; +1 before that with copy-paste,
``paste_prob``); boxes beyond M are dropped and counted in the logs.
Eval batches (one pass) have the same keys plus image_id int32 [B] (-1 for padding), orig_size
int32 [B,2] (height, width), difficult bool [B,E], valid bool [B]; there the box dimension is
E = ``eval_box_count(cfg)``, the eval split's largest box count, whatever ``max_boxes`` is:
evaluation sees every ground-truth box. E is computed once over the whole split, so every
process yields the same shapes (the host batches can be all-gathered as they are).

Determinism and sharding over processes. Indexed sources (shapes, VOC folder, COCO JSON): with
B = batch_size * process_count the global batch, row i of the global batch at step s is global
stream position g = s * B + i, which is example ``order(seed, epoch)[pos]`` with
``epoch, pos = divmod(g, N)`` (one permutation of all N examples per epoch), augmented with the
stateless seed ``(seed, g)``; process p yields rows [p * b, (p + 1) * b) (b = ``batch_size``).
So the global batch is a pure function of (cfg, seed, step, B): 2 processes x 4 rows see what
1 process x 8 rows sees. TFDS sources shard records per process instead: this process's k-th
example (k = step * b + j) is ``order(seed, epoch)[pos]`` of its shard, ``epoch, pos =
divmod(k, shard size)``, seeded ``(seed, k * process_count + process_index)`` -- a pure function
of (cfg, seed, step, process_index, process_count), not invariant to the process count.
Either way ``start_step`` starts the stream at that position directly (index sources skip
indices only; TFDS skips encoded records of the current epoch without decoding them).

Parallelism: each pipeline runs on a private pool of ``pipeline_threads(cfg)`` threads, by
default one per core this process may use (``host_cores``: CPU affinity, capped by a cgroup v2
quota), with the maps' parallelism tuned by tf.data AUTOTUNE; ``data.num_parallel_calls = N``
fixes both at N (e.g. several training processes sharing one host).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ssd_jax.data import augment, copy_paste, mosaic, records
from ssd_jax.data.examples import shard_size
from ssd_jax.data.max_boxes import train_max_boxes
from ssd_jax.data.normalize import fill_value_rgb, scale_and_offset
from ssd_jax.data.registry import get_source
from ssd_jax.data.sources import IndexedSource
from ssd_jax.data.tf_setup import tf

log = logging.getLogger("ssd_jax.data")
TRAIN_KEYS = ("image", "boxes", "labels", "mask")
EVAL_KEYS = TRAIN_KEYS + ("image_id", "orig_size", "difficult", "valid")


def dataset_info(cfg) -> records.DatasetInfo:
    """Class names (index 0 "background"), class count and split sizes of the configured data."""
    source = get_source(cfg)
    return records.DatasetInfo(class_names=tuple(source.class_names), num_classes=len(source.class_names),
                               num_train=source.num_examples(cfg.train_split),
                               num_eval=source.num_examples(cfg.eval_split))


def host_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPU cores this process may use (at least 1): its CPU affinity set, capped by a cgroup v2
    CPU quota (``cgroup_cpu_max``, "quota period" in microseconds, as containers set it) rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS / Windows
        cores = os.cpu_count() or 1
    try:
        with open(cgroup_cpu_max) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 quota readable: the affinity set is the limit
        pass
    return max(cores, 1)


def pipeline_threads(cfg) -> int:
    """Threads of the tf.data pipeline: ``data.num_parallel_calls`` when > 0, else ``host_cores()``."""
    n = int(cfg.num_parallel_calls)
    return n if n > 0 else host_cores()


def _parallel_calls(cfg) -> int:
    """The maps' ``num_parallel_calls``: the configured count, or AUTOTUNE (<= 0), which tf.data
    tunes up to the pipeline's thread pool (``pipeline_threads``)."""
    n = int(cfg.num_parallel_calls)
    return tf.data.AUTOTUNE if n <= 0 else n


def _options(cfg) -> tf.data.Options:
    """Deterministic order; a private pool of ``pipeline_threads(cfg)`` threads for the whole pipeline."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    options.threading.private_threadpool_size = pipeline_threads(cfg)
    options.threading.max_intra_op_parallelism = 1  # parallelism comes from the parallel maps
    return options


class _DroppedBoxes:
    """Counts boxes dropped while streaming (beyond ``max_boxes``; degenerate/invalid) from the
    batches' "_overflow"/"_bad" entries. Logs one warning the first time each kind occurs and one
    summary line per kind in :meth:`summarize` (at the end of the stream)."""

    def __init__(self, cfg, split, max_boxes):
        self.source, self.split = cfg.source, split
        self.messages = {"overflow": f"boxes beyond max_boxes={max_boxes} dropped",
                         "bad": "degenerate/invalid boxes dropped"}
        self.totals = {"overflow": 0, "bad": 0}

    def add(self, batch: dict) -> dict:
        """The batch without its "_overflow" and "_bad" entries, which are counted."""
        for key, field in (("overflow", "_overflow"), ("bad", "_bad")):
            count = int(np.sum(batch.pop(field)))
            if count and not self.totals[key]:
                log.warning("%s split %r: %s (%d in the first batch that had any; the total is logged when the "
                            "stream ends)", self.source, self.split, self.messages[key], count)
            self.totals[key] += count
        return batch

    def summarize(self) -> None:
        for key, total in self.totals.items():
            if total:
                log.warning("%s split %r: %d %s in total", self.source, self.split, total, self.messages[key])


def train_box_slots(cfg) -> int:
    """M, the box slots of a training example: ``train_max_boxes(cfg)`` (+1 for a pasted object with
    ``ssd_jax.data.copy_paste``), times the tile count when mosaics are on (``ssd_jax.data.mosaic``)."""
    return mosaic.box_slots(cfg.augment, train_max_boxes(cfg) + (copy_paste.check(cfg.augment) > 0))


def train_dataset(cfg, image_size, batch_size, normalization="caffe", seed=0, start_step=0,
                  process_index=0, process_count=1) -> tf.data.Dataset:
    """The tf.data pipeline behind ``train_iterator`` (batches with extra "_overflow", "_bad")."""
    source = get_source(cfg)
    calls = _parallel_calls(cfg)
    if isinstance(source, IndexedSource):  # one global stream, process-count invariant
        num = source.num_examples(cfg.train_split)
        if num == 0:
            raise ValueError(f"train split {cfg.train_split!r} is empty")
        epoch, position = divmod(int(start_step) * int(batch_size) * int(process_count), num)
        raw = source.train_stream(cfg.train_split, int(seed), process_index, process_count, epoch, position, calls,
                                  batch_size=int(batch_size))
    else:  # per-process shards (TFDS)
        shard = shard_size(source.num_examples(cfg.train_split), process_index, process_count)
        if shard == 0:
            raise ValueError(f"train split {cfg.train_split!r} is empty for process {process_index}")
        first = int(start_step) * int(batch_size)
        epoch, position = divmod(first, shard)
        raw = source.train_stream(cfg.train_split, int(seed), process_index, process_count, epoch, position, calls)
        positions = tf.data.Dataset.range(first, 2**62).map(lambda k: k * process_count + process_index)
        raw = tf.data.Dataset.zip(raw, positions).map(lambda example, g: dict(example, position=g))
    out_size = (int(image_size[0]), int(image_size[1]))
    fill = fill_value_rgb(normalization)
    scale, offset = scale_and_offset(normalization)
    max_boxes = train_box_slots(cfg)
    aug = cfg.augment
    if mosaic.check(aug)[0] > 0 or copy_paste.check(aug) > 0:
        if not isinstance(source, IndexedSource):
            raise ValueError(f"data.augment.mosaic_prob and paste_prob need an indexed source (shapes, voc_folder, "
                             f"coco_json), not {cfg.source!r}")
        load, num = source.load_fn(cfg.train_split), source.num_examples(cfg.train_split)
    else:
        load, num = None, 0

    def transform(example):
        seed_pair = tf.stack([tf.constant(int(seed), tf.int64), example["position"]])
        example = copy_paste.maybe_paste(example, seed_pair, load, num, aug)
        image, boxes, labels, difficult = mosaic.maybe_mosaic(example, seed_pair, load, num, out_size, aug, fill,
                                                              scale, offset)
        boxes, labels, _, mask, overflow = augment.pad_boxes(boxes, labels, difficult, max_boxes)
        return dict(image=image, boxes=boxes, labels=labels, mask=mask, _overflow=overflow, _bad=example["num_bad"])

    ds = raw.map(transform, num_parallel_calls=calls, deterministic=True)
    return ds.batch(int(batch_size), drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(_options(cfg))


def train_iterator(cfg, image_size, batch_size, normalization="caffe", seed=0, start_step=0,
                   process_index=0, process_count=1):
    """Endless iterator of training batches (dicts of NumPy arrays, see the module docstring)."""
    ds = train_dataset(cfg, image_size, batch_size, normalization, seed, start_step, process_index, process_count)
    dropped = _DroppedBoxes(cfg, cfg.train_split, train_box_slots(cfg))
    try:
        for batch in ds.as_numpy_iterator():
            yield dropped.add(batch)
    finally:  # the iterator is closed (or garbage collected) when training stops
        dropped.summarize()


def num_eval_batches(cfg, batch_size, process_count=1) -> int:
    """Batches every process yields in one eval pass (equal across processes)."""
    n = get_source(cfg).num_examples(cfg.eval_split)
    return math.ceil(math.ceil(n / process_count) / batch_size)


def eval_box_count(cfg) -> int:
    """E, the box dimension of every eval batch: the eval split's largest box count (at least 1).

    Computed over the whole split (not this process's shard), so it is the same on every
    process; ``data.max_boxes`` plays no part (evaluation never truncates ground truth).
    """
    return max(int(get_source(cfg).max_box_count(cfg.eval_split)), 1)


def eval_iterator(cfg, image_size, batch_size, normalization="caffe", process_index=0, process_count=1):
    """One pass over this process's shard of the eval split, fixed order, last batch padded.

    Every process yields ``num_eval_batches`` batches of identical shapes (box dimension
    ``eval_box_count(cfg)``, so every ground-truth box of every image is there); padding images
    have valid=False, image_id -1, and no boxes.
    """
    source = get_source(cfg)
    num_batches = num_eval_batches(cfg, batch_size, process_count)
    out_size = (int(image_size[0]), int(image_size[1]))
    scale, offset = scale_and_offset(normalization)
    box_count = eval_box_count(cfg)

    def transform(example):
        image = augment.eval_transform(example["image"], out_size)
        boxes, labels, difficult, mask, overflow = augment.pad_boxes(
            example["boxes"], example["labels"], example["difficult"], box_count)
        image = augment.normalize_tf(image, scale, offset)
        return dict(image=image, boxes=boxes, labels=labels, mask=mask,
                    image_id=example["image_id"], orig_size=tf.shape(example["image"])[:2],
                    difficult=difficult, valid=tf.constant(True), _overflow=overflow, _bad=example["num_bad"])

    calls = _parallel_calls(cfg)
    ds = source.eval_stream(cfg.eval_split, process_index, process_count, calls)
    ds = ds.map(transform, num_parallel_calls=calls, deterministic=True).batch(int(batch_size))
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options(cfg))
    dropped = _DroppedBoxes(cfg, cfg.eval_split, box_count)
    template = None
    yielded = 0
    for batch in ds.as_numpy_iterator():
        if np.any(batch["_overflow"]):  # max_box_count is an upper bound: this is a bug, never a metric
            raise RuntimeError(f"eval split {cfg.eval_split!r}: an image has more than the split's maximum of "
                               f"{box_count} boxes; refusing to evaluate on truncated ground truth")
        batch = dropped.add(batch)
        template = template or {k: (v.shape[1:], v.dtype) for k, v in batch.items()}
        yield _pad_batch(batch, batch_size)
        yielded += 1
    dropped.summarize()
    while yielded < num_batches:
        if template is None:
            raise ValueError(f"eval split {cfg.eval_split!r} produced no examples for process {process_index}")
        yield _pad_batch({k: np.zeros((0,) + s, d) for k, (s, d) in template.items()}, batch_size)
        yielded += 1


def _pad_batch(batch: dict, batch_size: int) -> dict:
    n = batch["valid"].shape[0]
    if n == batch_size:
        return batch
    out = {}
    for key, value in batch.items():
        pad = np.zeros((batch_size - n,) + value.shape[1:], value.dtype)
        if key == "image_id":
            pad -= 1
        out[key] = np.concatenate([value, pad])
    return out
