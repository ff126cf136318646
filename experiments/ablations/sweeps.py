"""Ablation sweeps as code (big_vision / scenic style), run by ``python -m experiments.ablate``.

A sweep is a base config (a packaged name or a path) and named rows; each row is a dict of config
overrides with dotted keys (``"loss.alpha": 2.0``). The first row is the baseline, and every other
row is reported as a difference from it. Each (row, seed) trains into ``WORKDIR/<row>/seed<k>``
through the ordinary trainer with ``config.seed = k``.

Default boxes are ablated through ``config.anchors`` (``anchors.aspect_ratios``, ``anchors.sources``,
``anchors.s_min`` / ``s_max``) and the receptive-field widening through ``config.model_options``
(ssd_tiny's ``source_convs``).

``SMOKE_OVERRIDES`` shrink any sweep to a few steps on tiny images (``--smoke``), so the whole path
(training, evaluation, result files) runs in seconds.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    overrides: dict = dataclasses.field(default_factory=dict)
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    base: str
    rows: tuple
    description: str = ""

    def __post_init__(self):
        names = [r.name for r in self.rows]
        if not names:
            raise ValueError(f"sweep {self.name!r} has no rows")
        if len(set(names)) != len(names):
            raise ValueError(f"sweep {self.name!r} has duplicate row names: {names}")

    @property
    def baseline(self) -> Row:
        return self.rows[0]

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"sweep {self.name!r} has no row {name!r}; rows: {', '.join(r.name for r in self.rows)}")


# --smoke: a few steps on 64 px images (ssd_tiny maps 8, 4, 2, 1, 1), tiny splits, no sample images.
SMOKE_OVERRIDES = {
    "num_steps": 3,
    "batch_size": 8,  # divisible by the 8 fake CPU devices of the tests
    "image_size": 64,
    "data.shapes.image_size": 64,
    "data.shapes.num_train": 16,
    "data.shapes.num_eval": 8,
    "eval.every": 0,
    "eval.batch_size": 8,
    "eval.num_sample_images": 0,
    "log_every": 1,
    "checkpoint_every": 3,
    "optimizer.warmup_steps": 1,
}

# ssd_tiny at 128 px has 5 source maps (16, 8, 4, 2, 1). Aspect ratios follow tiny_spec / paper_spec:
# per map, the extra ratios r (each adds a box of ratio r and one of 1/r) besides the two ratio-1 boxes.
NUM_MAPS = 5
AR_1 = ((),) * NUM_MAPS
AR_2 = ((2.0,),) * NUM_MAPS
AR_23 = ((2.0, 3.0),) * NUM_MAPS
TINY_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,))  # today's tiny_spec


def _sources(indices):
    """Rows of table 3: the source maps (indices, finest first), their aspect ratios, and the scales
    re-spread over the maps kept (s_min 0.2 .. s_max 0.9, as tiny_spec spreads them over all five;
    the paper's Table 3 re-spreads them the same way)."""
    return {"anchors.sources": tuple(indices), "anchors.s_min": 0.2, "anchors.s_max": 0.9,
            "anchors.aspect_ratios": tuple(TINY_RATIOS[i] for i in indices)}


PAPER_TABLE2 = Sweep(
    name="paper_table2",
    base="shapes_hard",
    description=("SSD paper Table 2 on shapes_hard: data augmentation, default-box aspect ratios and "
                 "the atrous-like receptive-field widening (ssd_tiny's stride-1 source convs)."),
    rows=(
        Row("baseline", {}, note="shapes_hard as is: photometric + flip, tiny_spec ratios, stride-1 source convs"),
        Row("flip_only", {"data.augment.photometric": False, "data.augment.expand": False,
                          "data.augment.crop": False, "data.augment.flip": True},
            note="no photometric distortion, no expand, no IoU crops"),
        Row("expand_crop", {"data.augment.expand": True, "data.augment.crop": True},
            note="the paper's full augmentation: + zoom-out expand and IoU crops"),
        Row("ar_1", {"anchors.aspect_ratios": AR_1}, note="boxes of ratio 1 only (2 per location)"),
        Row("ar_1_2", {"anchors.aspect_ratios": AR_2}, note="ratios {1, 2, 1/2} on every map"),
        Row("ar_1_2_3", {"anchors.aspect_ratios": AR_23},
            note="ratios {1, 2, 1/2, 3, 1/3} on every map"),
        Row("no_source_convs", {"model_options.source_convs": False},
            note="ssd_tiny without its stride-1 source convs (sources see 15 / 31 px instead of 31 / 79)"),
    ),
)

PAPER_TABLE3 = Sweep(
    name="paper_table3",
    base="shapes_hard",
    description=("SSD paper Table 3 on shapes_hard: which source maps predict. Scales follow the paper's "
                 "formula over the maps kept (s_min..s_max spread over fewer maps)."),
    rows=(
        Row("all_maps", {}, note="all 5 maps (16, 8, 4, 2, 1 at 128 px)"),
        Row("drop_finest", _sources((1, 2, 3, 4)), note="without the 16x16 map"),
        Row("drop_coarsest", _sources((0, 1, 2, 3)), note="without the 1x1 map"),
        Row("one_map", _sources((1,)), note="only the 8x8 (stride 16) map"),
    ),
)

DESIGN_CHOICES = Sweep(
    name="design_choices",
    base="shapes_hard",
    description="Matching, hard negative mining, loss normalisation and the localisation weight.",
    rows=(
        Row("baseline", {}, note="argmax matching, neg:pos 3, batch normalisation, alpha 1"),
        Row("bipartite", {"matching.mode": "bipartite"}, note="Caffe's bipartite matching"),
        Row("neg_ratio_1", {"loss.neg_pos_ratio": 1.0}),
        Row("neg_ratio_5", {"loss.neg_pos_ratio": 5.0}),
        Row("no_mining", {"loss.neg_pos_ratio": 1e4},
            note=("every negative kept (ratio 1e4 exceeds the anchor count), i.e. no mining; the loss has "
                  "no explicit switch, and images without positives still keep no negatives")),
        Row("norm_image", {"loss.normalization": "image"}, note="divide by each image's positives"),
        Row("alpha_0.5", {"loss.alpha": 0.5}),
        Row("alpha_2", {"loss.alpha": 2.0}),
    ),
)

SWEEPS = {s.name: s for s in (PAPER_TABLE2, PAPER_TABLE3, DESIGN_CHOICES)}


def get(name: str) -> Sweep:
    if name not in SWEEPS:
        raise KeyError(f"unknown sweep {name!r}; sweeps: {', '.join(sorted(SWEEPS))}")
    return SWEEPS[name]
