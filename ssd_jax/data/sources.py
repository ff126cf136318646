"""Indexed dataset sources (file lists, the shapes generator) behind one interface.

``registry.get_source(cfg)`` builds the source a data config describes (TFDS: ``tfds_sources``).

A source knows its ``class_names`` (index 0 is "background"), the size of each split, and
builds two tf.data streams of raw examples (dicts):
  image uint8 [h, w, 3] RGB, boxes float32 [n, 4] corners (xmin, ymin, xmax, ymax) in [0, 1],
  labels int32 [n] in 1..C-1, difficult bool [n], image_id int32 [], num_bad int32 [] (boxes
  dropped by ``sanitize``).
  * ``train_stream(split, seed, process_index, process_count, epoch, position, ...)``: endless.
    Indexed sources (shapes, VOC folder, COCO JSON) cut one *global* stream into global batches:
    epoch e visits every example once in the order ``stateless_shuffle(range(N), (seed, e))``,
    global position g = e * N + i, and process p of P takes rows [p * b, (p + 1) * b) of each
    global batch of b * P positions (b = ``batch_size``, the per-process batch). Each example
    carries its ``position`` g (int64), so what a global batch holds, and how it is augmented,
    does not depend on the process count. TFDS streams instead shard records per process (see
    ``tfds_sources``), so their multi-process batches differ from single-process ones.
  * ``eval_stream(split, process_index, process_count)``: this process's shard once, fixed order.
  * ``max_box_count(split)``: an upper bound on the boxes of one example, over the whole split.
Eval shards are disjoint: process p reads examples p, p + P, p + 2P, ... of a split.
"""

from __future__ import annotations

import numpy as np

from ssd_jax.data import records, shapes
from ssd_jax.data.examples import BACKGROUND, EPOCHS_FOREVER, decode_image, raw_example, skip_failures
from ssd_jax.data.tf_setup import tf


class IndexedSource:
    """A source with random access by example index (file lists, the shapes generator)."""

    class_names: tuple[str, ...]

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def load_fn(self, split: str):
        """A TF function: int64 index -> raw example dict."""
        raise NotImplementedError

    def max_box_count(self, split: str) -> int:
        """An upper bound on the boxes of any one example of ``split`` (whole split, so the same on
        every process)."""
        raise NotImplementedError

    def train_stream(self, split, seed, process_index, process_count, epoch, position, num_parallel_calls,
                     batch_size=1):
        """This process's rows of the global training stream, starting at global ``(epoch, position)``.

        ``position`` should start a global batch (a multiple of ``batch_size * process_count``
        within the stream) for the rows to line up with the batches. Examples carry their global
        ``position`` (int64) for seeding augmentation.
        """
        num = self.num_examples(split)
        if num == 0:
            raise ValueError(f"split {split!r} has no examples")
        every = tf.range(num, dtype=tf.int64)
        first_epoch, first_position = int(epoch), int(position)
        rows, first_row = int(batch_size) * int(process_count), int(batch_size) * int(process_index)

        def epoch_indices(e):
            order = tf.random.experimental.stateless_shuffle(every, seed=tf.stack([tf.cast(seed, tf.int64), e]))
            skip = tf.where(e == first_epoch, tf.constant(first_position, tf.int64), tf.constant(0, tf.int64))
            return tf.data.Dataset.from_tensor_slices((order, e * num + every)).skip(skip)

        indices = tf.data.Dataset.range(first_epoch, EPOCHS_FOREVER).flat_map(epoch_indices)
        if process_count > 1:  # index bookkeeping only: examples of other processes are never loaded
            indices = indices.filter(lambda i, g: (g % rows >= first_row) & (g % rows < first_row + batch_size))
        load = self.load_fn(split)
        return skip_failures(indices.map(lambda i, g: dict(load(i), position=g),
                                         num_parallel_calls=num_parallel_calls, deterministic=True))

    def eval_stream(self, split, process_index, process_count, num_parallel_calls):
        shard = np.arange(process_index, self.num_examples(split), process_count, dtype=np.int64)
        return skip_failures(tf.data.Dataset.from_tensor_slices(shard).map(
            self.load_fn(split), num_parallel_calls=num_parallel_calls, deterministic=True))


class FileSource(IndexedSource):
    """Images on disk with in-memory annotations (VOC folders, COCO JSON)."""

    def __init__(self, class_names, split_records: dict[str, records.Records]):
        self.class_names = tuple(class_names)
        self._records = split_records

    def num_examples(self, split):
        return len(self._records[split])

    def records(self, split) -> records.Records:
        return self._records[split]

    def box_counts(self, split) -> np.ndarray:
        """int64 [N]: boxes of each example of ``split`` (after the start-up cleaning)."""
        return np.array([len(labels) for labels in self._records[split].labels], np.int64)

    def max_box_count(self, split) -> int:
        """The largest box count of ``split`` (exact)."""
        return int(self.box_counts(split).max(initial=0))

    def load_fn(self, split):
        rec = self._records[split]
        lengths = np.array([len(b) for b in rec.labels], np.int64)
        splits = tf.constant(np.concatenate([[0], np.cumsum(lengths)]))
        boxes = tf.constant(np.concatenate(rec.boxes + [np.zeros((0, 4), np.float32)]).astype(np.float32))
        labels = tf.constant(np.concatenate(rec.labels + [np.zeros(0, np.int32)]).astype(np.int32))
        difficult = tf.constant(np.concatenate(rec.difficult + [np.zeros(0, bool)]).astype(bool))
        paths = tf.constant(rec.paths)
        image_ids = tf.constant(np.asarray(rec.image_ids, np.int64))
        num_classes = len(self.class_names)

        def load(index):
            lo, hi = splits[index], splits[index + 1]
            image = decode_image(tf.io.read_file(paths[index]))
            return raw_example(image, boxes[lo:hi], labels[lo:hi], difficult[lo:hi], image_ids[index], num_classes)

        return load


class ShapesSource(IndexedSource):
    """The synthetic shapes task (``ssd_jax.data.shapes``), generated on the fly."""

    CACHE_BYTES = 1 << 30  # generated examples are kept in memory when the splits fit

    def __init__(self, shapes_cfg):
        self.cfg = shapes_cfg
        self.class_names = (BACKGROUND,) + shapes.SHAPE_CLASSES
        total = (int(shapes_cfg.num_train) + int(shapes_cfg.num_eval)) * 3 * int(shapes_cfg.image_size) ** 2
        self._cache = {} if total <= self.CACHE_BYTES else None

    def num_examples(self, split):
        shapes._split_id(split)
        return int(self.cfg.num_train if split == "train" else self.cfg.num_eval)

    def max_box_count(self, split) -> int:
        """``max_objects``: the generator never draws more (it may draw fewer when objects overlap)."""
        return int(self.cfg.max_objects)

    def generate(self, split: str, index: int):
        """Example ``index`` of ``split`` (memoised: examples are pure functions of their index)."""
        key = (split, index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        example = shapes.generate_example(index, split, **shapes.generator_kwargs(self.cfg))
        if self._cache is not None:
            self._cache[key] = example
        return example

    def load_fn(self, split):
        size = int(self.cfg.image_size)
        num_classes = len(self.class_names)

        def generate(index):
            return self.generate(split, int(index))

        def load(index):
            image, boxes, labels = tf.numpy_function(generate, [index], [tf.uint8, tf.float32, tf.int32],
                                                     stateful=False)
            image = tf.ensure_shape(image, [size, size, 3])
            difficult = tf.zeros_like(labels, tf.bool)
            return raw_example(image, boxes, labels, difficult, index, num_classes)

        return load
