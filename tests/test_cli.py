"""The shared command-line convention (ssd_jax/cli.py): config overrides, option spelling, exit codes."""

import pytest

from ssd_jax import cli
from ssd_jax.errors import ConfigError, UsageError


def test_overrides_take_the_type_of_the_field_they_set():
    config = cli.load_config("shapes", [("optimizer.lr", "0.002"), ("num_steps", "7"), ("eval.with_coco", "false"),
                                        ("optimizer.frozen", "('base/conv1',)"), ("optimizer.name", "sgd"),
                                        ("image_size", "96"), ("optimizer.boundaries", "[5, 6]")])
    assert config.optimizer.lr == 0.002 and isinstance(config.optimizer.lr, float)
    assert config.num_steps == 7 and isinstance(config.num_steps, int)
    assert config.eval.with_coco is False
    assert config.optimizer.frozen == ("base/conv1",)
    assert config.optimizer.name == "sgd"
    assert config.image_size == 96
    assert config.optimizer.boundaries == (5, 6)


def test_a_typo_names_the_closest_field():
    with pytest.raises(UsageError, match=r"no field 'optimizer.lrr'; did you mean 'optimizer.lr'\?"):
        cli.load_config("shapes", [("optimizer.lrr", "0.1")])
    with pytest.raises(UsageError, match=r"no field 'optimiser.lr'; did you mean 'optimizer.lr'\?"):
        cli.load_config("shapes", [("optimiser.lr", "0.1")])


def test_a_value_of_the_wrong_type_names_the_field():
    with pytest.raises(UsageError, match=r"--config.num_steps=ten"):
        cli.load_config("shapes", [("num_steps", "ten")])
    with pytest.raises(UsageError, match=r"--config.eval.with_coco=maybe: expected true or false"):
        cli.load_config("shapes", [("eval.with_coco", "maybe")])
    with pytest.raises(UsageError, match=r"--config.optimizer is a group of fields"):
        cli.load_config("shapes", [("optimizer", "3")])


def test_an_unknown_config_name_lists_the_packaged_ones():
    with pytest.raises(UsageError, match=r"packaged configs: .*shapes"):
        cli.load_config("no_such_config")


def test_parse_collects_overrides_in_order_and_accepts_dashes():
    p = cli.parser("ssd_jax.x", "doc", config="required")
    p.add_argument("--score_threshold", type=float, default=0.5)
    args, overrides = cli.parse(p, ["--config", "shapes", "--config.num_steps=3", "--score-threshold", "0.25",
                                    "--config.optimizer.lr", "0.1", "--config.num_steps=4"])
    assert args.config == "shapes" and args.score_threshold == 0.25
    assert overrides == [("num_steps", "3"), ("optimizer.lr", "0.1"), ("num_steps", "4")]
    assert cli.load_config(args.config, overrides).num_steps == 4  # the last one wins


def test_usage_errors_exit_2_failures_exit_1_and_print_one_line(capsys):
    p = cli.parser("ssd_jax.x", "doc", config="required")

    def main(argv):
        args, overrides = cli.parse(p, argv)
        cli.load_config(args.config, overrides)
        raise ConfigError("config.batch_size=12 does not divide by the 8 devices")

    assert cli.run(main, ["--config", "shapes", "--bogus"]) == cli.EXIT_USAGE
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert cli.run(main, ["--config", "shapes", "--config.optimizer.lrr=1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip() == "error: config has no field 'optimizer.lrr'; did you mean 'optimizer.lr'?"
    assert cli.run(main, ["--config", "shapes"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not divide" in err and "Traceback" not in err
    assert cli.run(main, ["--config", "shapes", "--verbose"]) == cli.EXIT_FAILED
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run(main, [])
