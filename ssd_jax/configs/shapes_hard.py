"""A harder synthetic benchmark for ablations: ``ssd_tiny`` on ``shapes`` with small, large,
elongated, occluded objects and strong clutter (issue 19).

    python -m ssd_jax.train --config shapes_hard --workdir runs/shapes_hard
    python -m experiments.ablate --sweep design_choices --workdir runs/ablate_design --seeds 3

The task (``data.shapes.*``, see ``ssd_jax.data.shapes``): object sides 0.07-0.9 of the image
(log-uniform: as many small as large objects), width/height 1/3-3 (ellipses, bars, stretched
triangles and crosses), 2-8 objects per image overlapping up to IoU 0.5 (each keeps at least half
its pixels visible), clutter 1.5 and up to 4 saturated distractor marks (rings, zigzags, arcs).
Same four classes as ``shapes``; deterministic and download-free. 128 px, 900 steps: the baseline
is far from saturated (``shapes`` reaches 0.91 with this model), so design choices can show.

Measured (seeds 0, 1, 2; 300 validation images, 1477 objects): VOC07 mAP@0.5 0.541 / 0.504 / 0.561,
mean 0.535 ± 0.029 (sample std); COCO AP 0.299 ± 0.025, APs 0.181, APm 0.482, APl 0.688. The
three runs took 16 minutes each, run side by side on a 2-core CPU shared with other jobs (load
average 13-16); on an idle 2-core CPU the step costs what a ``shapes`` step costs (same model,
size and batch), so a run should take about 2.5 minutes (not measured idle). Exploration on the
same machine: with sides from 0.05, mAP 0.427 after 750 steps and 0.467 after 900; with sides
from 0.07, 0.486 after 750 steps (seed 0 each).
The ablation sweeps' baseline rows (this config, seeds 0-2, a later machine, 2026-12-03): 0.546 /
0.513 / 0.561, mean 0.540 ± 0.025, about 4.5 minutes per run on 2 idle cores
(``experiments/ablations/README.md``).
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.model_options.source_convs = True  # the stride-1 3x3 conv on each source stage
    c.image_size = 128
    c.batch_size = 32
    c.num_steps = 900
    c.data.source = "shapes"
    c.data.max_boxes = 12
    c.data.augment.expand = False
    c.data.augment.crop = False
    s = c.data.shapes
    s.num_train = 4000
    s.num_eval = 300
    s.image_size = 128
    s.min_objects = 2
    s.max_objects = 8
    s.min_side = 0.07
    s.max_side = 0.9
    s.side_distribution = "log"
    s.min_aspect = 1 / 3
    s.max_aspect = 3.0
    s.max_extent = 0.95
    s.max_overlap_iou = 0.5
    s.min_visible = 0.5
    s.clutter = 1.5
    s.distractors = 4
    c.optimizer.name = "adamw"
    c.optimizer.lr = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.eval.every = 0
    c.eval.batch_size = 50
    c.eval.with_coco = True
    c.eval.num_sample_images = 8
    c.postprocess.max_detections = 100
    c.log_every = 50
    c.checkpoint_every = 300
    return c
