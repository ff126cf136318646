"""What every part of ``ssd_jax.export`` shares: formats, platforms, argument parsing, the error type
(a leaf module, so the package's parts import it without importing each other)."""

from __future__ import annotations

import os

from ssd_jax.errors import UsageError

FORMATS = ("stablehlo", "saved_model", "onnx", "tflite")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
EXTRA_HINT = "pip install -e '.[export]'"
DEFAULT_BATCH = {"stablehlo": "dynamic", "saved_model": "dynamic", "onnx": "dynamic", "tflite": 1}


class ExportError(UsageError, ValueError):
    """A user mistake (unknown format or platform, bad batch, bad input); the message says which.
    The command line reports it as a usage error (exit code 2)."""


def metadata_path(out: str) -> str:
    """Where the sidecar JSON of artifact ``out`` lives: ``<out>.json``."""
    return os.path.normpath(out) + ".json"


def parse_batch(batch) -> int | str:
    """``"dynamic"`` / None -> ``"dynamic"``; a positive int (or its string) -> that int."""
    if batch is None or batch == "dynamic":
        return "dynamic"
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or (isinstance(batch, float) and batch != value):
        raise ExportError(f"batch must be a positive integer or 'dynamic', got {batch!r}")
    return value


def parse_platforms(platforms) -> tuple:
    """``"cpu,cuda"`` or a sequence -> a tuple of known platform names (order kept, no repeats)."""
    if platforms is None:
        return ("cpu",)
    items = platforms.split(",") if isinstance(platforms, str) else list(platforms)
    names = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name not in PLATFORMS:
            raise ExportError(f"unknown platform {item!r}; expected some of {', '.join(PLATFORMS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ExportError("platforms is empty; expected some of " + ", ".join(PLATFORMS))
    return tuple(names)


def require(module: str, what: str):
    """Imports ``module`` or raises ImportError naming the ``export`` extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the '{module.split('.')[0]}' package, which is not installed "
                          f"({e}); install the export extra: {EXTRA_HINT}") from e
