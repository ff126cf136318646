"""Training configs as code: each file here has ``get_config()`` returning a locked ConfigDict.

A bare name resolves to a file of this package (``--config shapes``), anything else is a path
(``--config path/to/my_config.py``), so configs work from any directory after ``pip install``.
"""

from __future__ import annotations

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> tuple:
    """Names of the configs that ship with the package."""
    return tuple(sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                        if f.endswith(".py") and not f.startswith("_")))


def resolve(name_or_path: str) -> str:
    """Path of a config file: a packaged name (``"shapes"``) or an existing path."""
    if os.path.exists(name_or_path):
        return name_or_path
    base = name_or_path[:-3] if name_or_path.endswith(".py") else name_or_path
    candidate = os.path.join(CONFIG_DIR, base + ".py")
    if os.sep not in base and os.path.exists(candidate):
        return candidate
    raise FileNotFoundError(
        f"config {name_or_path!r} is neither a file nor a packaged config; packaged configs: "
        f"{', '.join(names())}")


def load(name_or_path: str):
    """``get_config()`` of a config file or packaged name, as a locked ConfigDict."""
    import importlib.util

    path = resolve(name_or_path)
    spec = importlib.util.spec_from_file_location("ssd_jax_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.lock()
    return config

