"""Default boxes from the config (config.anchors): shipped boxes unchanged, heads that follow the spec."""

import hashlib

import jax
import jax.numpy as jnp
import pytest

from ssd_jax import anchors, configs, models, param_trees
from ssd_jax.errors import ConfigError

# (boxes, sha256 prefix of default_boxes' bytes) of every shipped config, computed from the model
# factories before config.anchors existed (commit 4eed907's models.create(model, 2, image_size=...)).
SHIPPED_BOXES = {
    "raccoon": (2408, "9ad3e1b774c6f498"),
    "shapes": (1532, "d65f4d9b38afce3f"),
    "ssd300_coco": (8732, "327b6cefbab2f6a4"),
    "ssd300_voc0712": (8732, "327b6cefbab2f6a4"),
    "ssd512_voc0712": (24564, "08da2460e78cb614"),
    "ssdlite320_mobilenet_v2_coco": (3234, "1dad1e3536be810f"),
}


def test_every_shipped_config_keeps_its_default_boxes():
    assert set(SHIPPED_BOXES) <= set(configs.names())
    for name, (count, digest) in SHIPPED_BOXES.items():
        boxes = anchors.default_boxes(models.config_spec(configs.load(name)))
        assert (len(boxes), hashlib.sha256(boxes.tobytes()).hexdigest()[:16]) == (count, digest), name


def _shapes(module, spec):
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3))))
    out = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((2, *spec.image_size, 3))), variables)
    return variables, out


def test_the_default_section_gives_the_same_params_tree():
    default = configs.load("shapes").anchors
    plain, plain_spec = models.create("ssd_tiny", 5, image_size=96)
    configured, spec = models.create("ssd_tiny", 5, image_size=96, anchors=default)
    assert spec == plain_spec
    assert param_trees.compare_trees(_shapes(plain, plain_spec)[0], _shapes(configured, spec)[0]).matches


@pytest.mark.parametrize("section", [
    dict(aspect_ratios=((),)),                                    # squares only: 2 per location
    dict(aspect_ratios=((2.0, 3.0),)),                            # 6 per location on every map
    dict(s_min=0.1, s_max=0.8, aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))),
    dict(sources=(1, 2, 3), s_min=0.15, s_max=0.9),               # drop the finest and the coarsest
    dict(sources=(1,), aspect_ratios=((2.0, 3.0, 4.0),)),         # one map only
])
def test_heads_follow_the_spec(section):
    module, spec = models.create("ssd_tiny", 3, image_size=96, anchors=section)
    variables, (loc, logits) = _shapes(module, spec)
    assert loc.shape == (2, len(anchors.default_boxes(spec)), 4) and logits.shape == (2, spec.num_boxes, 3)
    heads = variables["params"]["heads"]
    maps = len(spec.feature_map_sizes)
    assert sorted(heads) == sorted([f"loc_{i}" for i in range(maps)] + [f"conf_{i}" for i in range(maps)])
    for i, k in enumerate(spec.boxes_per_location):
        assert heads[f"loc_{i}"]["kernel"].shape[-1] == 4 * k
        assert heads[f"conf_{i}"]["kernel"].shape[-1] == 3 * k


@pytest.mark.parametrize("section, field", [
    (dict(aspect_ratios=((0.0,),)), "aspect_ratios"), (dict(sources=(0, 9)), "sources"),
    (dict(s_min=0.9, s_max=0.2), "s_min"), (dict(aspect_ratios=((2.0,), (3.0,))), "aspect_ratios")])
def test_a_spec_that_cannot_work_is_a_config_error_naming_the_field(section, field):
    with pytest.raises(ConfigError, match=f"config.anchors.{field}"):
        models.create("ssd_tiny", 3, image_size=96, anchors=section)


def test_model_json_rebuilds_the_configured_model():
    section = dict(sources=(1, 2, 3), s_min=0.15, s_max=0.9, aspect_ratios=[[2.0, 3.0]])  # as JSON reads it
    module, spec = models.create("ssd_tiny", 3, image_size=96, anchors=section)
    info = dict(model="ssd_tiny", num_classes=3, image_size=[96, 96], anchor_config=section,
                default_boxes=anchors.spec_to_dict(spec))
    rebuilt, rebuilt_spec = models.from_model_info(info)
    assert rebuilt_spec == spec == anchors.spec_from_dict(info["default_boxes"])
    assert param_trees.compare_trees(_shapes(module, spec)[0], _shapes(rebuilt, rebuilt_spec)[0]).matches
