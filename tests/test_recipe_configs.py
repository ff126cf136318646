"""The small-dataset recipe: ``shapes_pretrain`` initialises ``raccoon_finetune`` (config.init_from),
which is ``raccoon`` with the fine-tuning schedule."""

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax import anchors, checkpoints, configs, models, param_trees, train_utils


def _variables(config, num_classes):
    module, spec = models.create(config.model, num_classes, image_size=config.image_size,
                                 anchors=config.get("anchors"), options=config.get("model_options"))
    return spec, jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3))))


def test_pretraining_has_the_fine_tuning_default_boxes_and_every_array_but_the_class_heads():
    pre, fine = configs.load("shapes_pretrain"), configs.load("raccoon_finetune")
    pre_spec, pre_vars = _variables(pre, 5)     # background + 4 shapes
    fine_spec, fine_vars = _variables(fine, 2)  # background + raccoon
    np.testing.assert_array_equal(anchors.default_boxes(pre_spec), anchors.default_boxes(fine_spec))
    diff = param_trees.compare_trees(fine_vars, pre_vars)
    assert not diff.missing and not diff.unexpected
    maps = len(fine_spec.feature_map_sizes)
    assert sorted(m.path for m in diff.wrong_shape) == sorted(
        [f"params/heads/conf_{i}/{leaf}" for i in range(maps) for leaf in ("kernel", "bias")])


def test_init_from_a_pretraining_checkpoint_copies_all_but_the_class_heads(tmp_path):
    pre, fine = configs.load("shapes_pretrain"), configs.load("raccoon_finetune")
    _, pre_vars = _variables(pre, 5)
    _, fine_vars = _variables(fine, 2)
    ones = jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32), pre_vars)
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=1)
    ckpt.save(7, {"params": ones["params"], "batch_stats": ones["batch_stats"]}, {"step": np.int32(7)})
    ckpt.close()
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), fine_vars)
    state = train_utils.TrainState(step=np.int32(0), params=zeros["params"], batch_stats=zeros["batch_stats"],
                                   opt_state=None)
    loaded = train_utils.load_pretrained(state, str(tmp_path))
    flat = param_trees.flatten({"params": loaded.params, "batch_stats": loaded.batch_stats})
    copied = {p for p, v in flat.items() if np.all(np.asarray(v) == 1.0)}
    fresh = {p for p, v in flat.items() if np.all(np.asarray(v) == 0.0)}
    assert copied | fresh == set(flat) and fresh and copied
    assert all(p.startswith("params/heads/conf_") for p in fresh)
    assert any(p.startswith("params/heads/loc_") for p in copied)
    assert any(p.startswith("batch_stats/") for p in copied)


def test_finetune_is_raccoon_with_the_fine_tuning_schedule():
    base, fine = configs.load("raccoon"), configs.load("raccoon_finetune")
    np.testing.assert_array_equal(anchors.default_boxes(models.config_spec(base)),
                                  anchors.default_boxes(models.config_spec(fine)))
    aug = ("paste_prob", "mosaic_prob", "mosaic_tiles")
    assert (base.init_from, base.num_steps, *(base.data.augment[k] for k in aug)) == ("", 1400, 0.7, 0.5, 2)
    assert (fine.init_from, fine.num_steps, *(fine.data.augment[k] for k in aug[:2])) == (
        "runs/shapes_pretrain", 800, 0.0, 0.0)
    base_data, fine_data = base.data.to_dict(), fine.data.to_dict()
    for data in (base_data, fine_data):
        for k in aug:
            del data["augment"][k]  # checked above; everything else must be equal
    assert fine_data == base_data and fine.model == base.model
    assert fine.model_options.to_dict() == base.model_options.to_dict()
