"""TensorFlow Datasets sources: ``voc/2007``, ``voc/2012``, ``coco/2017`` (and "+"-joined lists).

``tfds_name="voc/2007+voc/2012"`` reads the split from each and concatenates them (the classic
07+12 trainval). TFDS boxes are ``(ymin, xmin, ymax, xmax)`` normalised; they are reordered to
corners ``(xmin, ymin, xmax, ymax)``. Labels are TFDS class indices + 1. VOC keeps
``is_difficult`` (trained on, ignored in evaluation); COCO crowd boxes are dropped for training
and marked ``difficult`` for evaluation. ``image_id`` is the COCO image id, or for VOC the digits
of the file name ("2008_000005.jpg" -> 2008000005).

Records are read in the TFDS order without decoding images; training shuffles them with a
buffer (``shuffle_buffer``) seeded from (seed, epoch), so resuming inside an epoch skips
encoded records (no image decoding) up to the resume point. Images that fail to decode are
skipped with a logged warning; when the split size is unknown (``tfds.testing.mock_data``) it
is counted at start-up, and a record TFDS itself cannot produce is a clear error there.
Evaluation pads every image's boxes to the eval split's largest box count, which
``max_box_count`` reads once from the encoded records of the whole split (no image decoding), so
the eval batch shapes are the same on every process.
"""

from __future__ import annotations

import functools

import tensorflow_datasets as tfds

from ssd_jax.data.examples import EPOCHS_FOREVER, decode_image, raw_example, shard_size, skip_failures, with_background
from ssd_jax.data.tf_setup import tf


def _names(tfds_name) -> list[str]:
    if isinstance(tfds_name, (list, tuple)):
        return [str(n).strip() for n in tfds_name]
    return [n.strip() for n in str(tfds_name).split("+") if n.strip()]


class TfdsSource:
    def __init__(self, cfg):
        self.cfg = cfg
        self._num_examples: dict[str, int] = {}  # per split, computed once (see num_examples, max_box_count)
        self._max_box_count: dict[str, int] = {}
        names = _names(cfg.tfds_name)
        if not names:
            raise ValueError("tfds: set data.tfds_name, e.g. 'voc/2007' or 'voc/2007+voc/2012'")
        self.builders = [tfds.builder(n, data_dir=cfg.tfds_data_dir or None) for n in names]
        label_names = None
        for name, builder in zip(names, self.builders):
            objects = builder.info.features["objects"]
            names_here = tuple(objects["label"].names)
            if label_names is not None and names_here != label_names:
                raise ValueError(f"tfds: {name} has different classes than {names[0]}")
            label_names = names_here
        self.is_coco = "is_crowd" in self.builders[0].info.features["objects"]
        self.class_names = with_background(label_names)
        if cfg.get("class_names") and with_background(cfg.class_names) != self.class_names:
            raise ValueError(f"tfds: class_names {tuple(cfg.class_names)} differ from the dataset's "
                             f"{label_names}")

    def _convert(self, example, training: bool):
        objects = example["objects"]
        boxes = tf.gather(tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]), [1, 0, 3, 2], axis=1)
        labels = tf.cast(objects["label"], tf.int32) + 1
        if self.is_coco:
            num_labels = tf.shape(labels)[0]
            crowd = tf.reshape(tf.cast(objects["is_crowd"], tf.bool), [-1])
            crowd = tf.concat([crowd, tf.zeros([num_labels], tf.bool)], 0)[:num_labels]
            if training:
                labels = tf.where(crowd, 0, labels)  # label 0 is dropped by sanitize
                difficult = tf.zeros_like(labels, tf.bool)
            else:
                difficult = crowd
            image_id = tf.cast(example["image/id"], tf.int64)
        else:
            difficult = tf.cast(objects["is_difficult"], tf.bool)
            digits = tf.strings.regex_replace(example["image/filename"], "[^0-9]", "")
            digits = tf.where(tf.strings.length(digits) > 0, tf.strings.substr(digits, 0, 10), "0")
            image_id = tf.strings.to_number(digits, tf.int64)
        return dict(image=example["image"], boxes=boxes, labels=labels, difficult=difficult,
                    image_id=tf.cast(image_id % (2**31), tf.int32))

    def _records(self, split: str, training: bool):
        """Encoded records of a split, TFDS order, all builders concatenated."""
        datasets = []
        for builder in self.builders:
            ds = builder.as_dataset(split=split, shuffle_files=False,
                                    decoders={"image": tfds.decode.SkipDecoding()})
            datasets.append(ds.map(functools.partial(self._convert, training=training)))
        return functools.reduce(lambda a, b: a.concatenate(b), datasets)

    def num_examples(self, split: str) -> int:
        if split not in self._num_examples:  # cached: counting a split reads all its records
            try:
                self._num_examples[split] = sum(int(b.info.splits[split].num_examples) for b in self.builders)
            except (KeyError, ValueError):  # splits unknown (e.g. under tfds.testing.mock_data): count
                self._num_examples[split] = self._count(split)
        return self._num_examples[split]

    def max_box_count(self, split: str) -> int:
        """An upper bound on the boxes of one example of ``split``: the longest label list of the
        whole split, read once from the encoded records (images are not decoded; this reads the
        split's files once, a few seconds for VOC test or COCO val)."""
        if split not in self._max_box_count:
            counts = self._records(split, training=False).map(lambda e: tf.shape(e["labels"])[0])
            self._max_box_count[split] = int(counts.reduce(tf.constant(0, tf.int32), tf.maximum))
        return self._max_box_count[split]

    def _count(self, split: str) -> int:
        count, iterator = 0, iter(self._records(split, training=False))
        while True:
            try:
                next(iterator)
            except StopIteration:
                return count
            except tf.errors.OpError as error:
                raise ValueError(f"tfds {self.cfg.tfds_name}: reading record {count} of split {split!r} "
                                 f"failed: {error.message.strip().splitlines()[0][:300]}") from None
            count += 1

    def _decode(self, example):
        image = decode_image(example["image"])
        return raw_example(image, example["boxes"], example["labels"], example["difficult"],
                           example["image_id"], len(self.class_names))

    def train_stream(self, split, seed, process_index, process_count, epoch, position, num_parallel_calls):
        if shard_size(self.num_examples(split), process_index, process_count) == 0:
            raise ValueError(f"tfds: split {split!r} has no examples for process {process_index}")
        shard = self._records(split, training=True).shard(process_count, process_index)
        first_epoch, first_position = int(epoch), int(position)
        buffer = int(self.cfg.shuffle_buffer)

        def epoch_records(e):
            skip = tf.where(e == first_epoch, tf.constant(first_position, tf.int64), tf.constant(0, tf.int64))
            shuffle_seed = tf.cast(seed, tf.int64) * 1_000_003 + e
            return shard.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False).skip(skip)

        stream = tf.data.Dataset.range(first_epoch, EPOCHS_FOREVER).flat_map(epoch_records)
        return skip_failures(stream.map(self._decode, num_parallel_calls=num_parallel_calls,
                                                deterministic=True))

    def eval_stream(self, split, process_index, process_count, num_parallel_calls):
        shard = self._records(split, training=False).shard(process_count, process_index)
        return skip_failures(shard.map(self._decode, num_parallel_calls=num_parallel_calls,
                                               deterministic=True))
