"""Errors the command lines report as one ``error: ...`` line, without a traceback."""


class ConfigError(ValueError):
    """A config value that cannot work (reported without a traceback by the command line)."""


class CheckpointError(RuntimeError):
    """Checkpoints exist but cannot be restored (so a run must not start afresh over them)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


class UsageError(Exception):
    """The command line itself is wrong: an unknown option, config name or field, a value of the wrong type."""
