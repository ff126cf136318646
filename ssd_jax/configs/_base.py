"""The fields every training config has, with the paper's defaults (SSD300, VOC07+12).

Configs start from :func:`base_config` and change what differs. Field reference:
  model, num_classes (None: from the dataset), image_size (None: the model's), dtype ("float32" |
  "bfloat16": compute dtype, params stay float32), seed, batch_size (global, over all devices and
  processes), num_steps;
  data: see ``ssd_jax.data.default_config`` (max_boxes 0: derived from the training split; the shipped
    configs set it explicitly);
  matching: iou_threshold, mode ("argmax" torchvision | "bipartite" Caffe);
  loss: neg_pos_ratio, alpha, normalization ("batch" | "image");
  optimizer: name ("sgd" | "adamw"), lr, momentum, nesterov, weight_decay, decay_biases (Caffe: no
    decay on biases and norm scales), schedule ("multistep" | "cosine" | "constant"), warmup_steps,
    boundaries (multistep steps), decay_factor, grad_clip_norm (0 = off), freeze_base, frozen (module
    paths kept fixed, e.g. "base/conv1_1"; see CAFFE_VGG16_FROZEN), ema_decay (0 = off; e.g. 0.998:
    evaluation, checkpoints' model weights and so the Detector use an exponential moving average of
    the params, see ``ssd_jax.optim.ema_update``);
  init_from: "" (random) or a workdir whose params initialise this run (heads re-initialised when the
    class count differs);
  anchors: sources, s_min, s_max, min_sizes, max_sizes, aspect_ratios, clip, offset: the default
    boxes on the model's source maps (see ``ssd_jax.anchors.spec_from_config``; empty = the model's);
  model_options: the model factory's own switches (ssd_tiny: source_convs);
  postprocess: score_threshold, iou_threshold, pre_nms_top_k, max_detections;
  eval: every (steps; 0 = only at the end), batch_size, use_07_metric, with_coco, num_sample_images;
  log_every, checkpoint_every, keep_checkpoints.
"""

import ml_collections

from ssd_jax import data

# The Caffe release's ssd_pascal.py / ssd_coco.py: "Which layers to freeze (no backward) during
# training". Used by the VGG16 configs, which start from an ImageNet base (config.init_from).
CAFFE_VGG16_FROZEN = ("base/conv1_1", "base/conv1_2", "base/conv2_1", "base/conv2_2")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "ssd300_vgg16"
    c.num_classes = ml_collections.FieldReference(None, field_type=int)
    c.image_size = ml_collections.FieldReference(None, field_type=int)
    c.dtype = "float32"
    c.seed = 0
    c.batch_size = 32
    c.num_steps = 120_000
    c.data = data.default_config()
    c.matching = ml_collections.ConfigDict(dict(iou_threshold=0.5, mode="argmax"))
    c.loss = ml_collections.ConfigDict(dict(neg_pos_ratio=3.0, alpha=1.0, normalization="batch"))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=5e-4, decay_biases=False,
        schedule="multistep", warmup_steps=0, boundaries=(80_000, 100_000), decay_factor=0.1,
        grad_clip_norm=0.0, freeze_base=False, frozen=(), ema_decay=0.0))
    c.init_from = ""
    # Default boxes on the model's source maps (ssd_jax.anchors.spec_from_config): the empty values
    # keep the model's own boxes; e.g. s_min=0.1, s_max=0.9 (paper formula), aspect_ratios=((2, 3),)
    # (every map), sources=(0, 1, 2) (which maps predict).
    c.anchors = ml_collections.ConfigDict(dict(
        sources=(), s_min=0.0, s_max=0.0, min_sizes=(), max_sizes=(), aspect_ratios=(), clip="", offset=0.5))
    c.model_options = ml_collections.ConfigDict()  # the model's own switches (models.create(options=...))
    c.postprocess = ml_collections.ConfigDict(dict(
        score_threshold=0.01, iou_threshold=0.45, pre_nms_top_k=400, max_detections=200))
    c.eval = ml_collections.ConfigDict(dict(
        every=10_000, batch_size=32, use_07_metric=True, with_coco=True, num_sample_images=8))
    c.log_every = 50
    c.checkpoint_every = 5_000
    c.keep_checkpoints = 3
    return c
