"""The one command-line convention of every ``python -m ssd_jax.*`` command.

Every command is an :mod:`argparse` parser built with :func:`parser`, so ``--help`` lists every
option, and runs through :func:`run`, which turns a user's mistake into one line on stderr:

    error: config has no field 'optimizer.lrr'; did you mean 'optimizer.lr'?

Options are spelled with underscores (``--workdir``, ``--config``, ``--num_processes``, as in
the Flax examples and big_vision); the same option with dashes (``--score-threshold``) is
accepted too. A command that takes a config takes it as ``--config NAME_OR_PATH`` (a packaged
name from ``ssd_jax/configs/`` or a path to any file with ``get_config()``) followed by any
number of ``--config.FIELD=VALUE`` overrides; a field that does not exist is an error naming
the closest one. ``--verbose`` shows the full traceback of an error instead of the one line.

Exit codes, the same for every command:
  0  done (also when SIGTERM / Ctrl-C stopped training after saving a checkpoint);
  1  the command ran and failed: a missing workdir, checkpoint or data file, a non-finite loss,
     a config value that cannot work;
  2  the command line itself is wrong: an unknown option, config name or config field, a
     value of the wrong type.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from ssd_jax import configs
from ssd_jax.errors import CheckpointError, ConfigError, NonFiniteLossError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# What a user's mistake raises: reported as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (CheckpointError, ConfigError, NonFiniteLossError, FileNotFoundError, NotADirectoryError, ValueError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: usage line + one error line, exit 2
        self.print_usage(sys.stderr)
        raise UsageError(message)


def parser(prog: str, description: str, config: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with ``--verbose``, and ``--config`` when ``config`` is "required" or "optional".

    ``description`` is the command's docstring (its first paragraph is shown by ``--help``).
    """
    p = _Parser(prog=f"python -m {prog}", description=description,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    if config is not None:
        p.add_argument("--config", required=config == "required", metavar="NAME_OR_PATH",
                       help=f"packaged config ({', '.join(configs.names())}) or a path to a file with get_config(); "
                            "override fields with --config.FIELD=VALUE (e.g. --config.optimizer.lr=0.002)")
    p.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    return p


def _normalize_option(arg: str) -> str:
    """``--score-threshold=0.3`` -> ``--score_threshold=0.3`` (config overrides are left alone)."""
    if not arg.startswith("--") or arg.startswith("--config."):
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None):
    """Parses ``argv`` (default ``sys.argv[1:]``); returns ``(args, overrides)``.

    ``overrides`` are the ``--config.FIELD=VALUE`` / ``--config.FIELD VALUE`` pairs in command-line
    order, for :func:`load_config`. Anything else unknown is a usage error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            field, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    p.error(f"--config.{field} needs a value")
                value, i = argv[i + 1], i + 1
            overrides.append((field, value))
        else:
            rest.append(_normalize_option(arg))
        i += 1
    return p.parse_args(rest), overrides


def _fields(config, prefix: str = "") -> list[str]:
    names = []
    for key, value in config.items():
        names.append(prefix + key)
        if hasattr(value, "items"):
            names += _fields(value, prefix + key + ".")
    return names


def _parse_value(text: str, current, field_type):
    """``text`` as the type of the field it overrides (bools accept true/false/1/0/yes/no)."""
    kind = field_type if field_type is not None else type(current)
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if kind in (tuple, list):
            raise ValueError("expected a Python literal such as (1, 2) or ()") from None
        return text  # a None-valued field: take the text as a string
    if kind is tuple and isinstance(value, list):
        value = tuple(value)
    return value


def apply_overrides(config, overrides: Sequence[tuple[str, str]]):
    """Sets each ``(dotted_field, text)`` on the locked ``config`` in place; returns it.

    Raises:
      UsageError: an unknown field (naming the closest existing one), a group of fields, or a
        value that does not parse as the field's type.
    """
    known = _fields(config)
    for field, text in overrides:
        *parents, leaf = field.split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            current = node[leaf]
        except (KeyError, AttributeError, TypeError):
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else "; see the config file for its fields"
            raise UsageError(f"config has no field '{field}'{hint}") from None
        if hasattr(current, "items"):
            raise UsageError(f"--config.{field} is a group of fields; set one of them, "
                             f"e.g. --config.{field}.{next(iter(current.keys()), 'FIELD')}=...")
        field_type = node.get_type(leaf) if hasattr(node, "get_type") else None
        field_type = field_type if field_type in (bool, int, float, str, tuple, list) else None
        try:
            node[leaf] = _parse_value(text, current, field_type)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--config.{field}={text}: {e} (the field is {current!r})") from None
    return config


def load_config(name_or_path: str, overrides: Sequence[tuple[str, str]] = ()):
    """The locked ConfigDict of a packaged config name or a file, with ``overrides`` applied."""
    try:
        config = configs.load(name_or_path)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    return apply_overrides(config, overrides)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)`` and returns the exit code; a user's mistake becomes one line on stderr.

    ``--verbose`` anywhere in ``argv`` re-raises with the full traceback instead.
    """
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    try:
        code = main(argv)
    except UsageError as e:
        if verbose:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except USER_ERRORS as e:
        if verbose:
            traceback.print_exc()
        print(f"error: {e}" + ("" if verbose else "  (--verbose for the traceback)"), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if code is None else int(code)


def exit_with(main: Callable[[Sequence[str] | None], int | None]):
    """``sys.exit(run(main))``: the ``if __name__ == "__main__"`` line of every command."""
    sys.stdout.flush()
    sys.exit(run(main))


def quiet_libraries():
    """Keeps orbax, absl and TensorFlow at warnings (they log every checkpoint at INFO)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
