"""The Colab notebooks in notebooks/: their common cells, and each one executed end to end.

The execution test runs every notebook as a user would (a fresh python3 ipykernel, every cell in
order) with ``SSD_JAX_SMOKE=1`` (tiny step and image counts, the same cells) and
``SSD_JAX_NO_INSTALL=1`` (the install cell skips pip; the kernel imports this checkout's ssd_jax
through PYTHONPATH). Each notebook runs in a temporary copy of notebooks/, so workdirs and outputs
never land in the repository. The kernel inherits conftest.py's environment: 8 CPU devices (the
notebooks size their batches from ``jax.device_count()``) and the shared compilation cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO_ROOT, "notebooks")
NOTEBOOKS = ("quickstart", "custom_dataset", "pretrained_ssd300", "tpu_voc0712")
CELL_TIMEOUT_S = 900


def _load(name):
    with open(os.path.join(NOTEBOOK_DIR, f"{name}.ipynb")) as f:
        return json.load(f)


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _code_cells(nb):
    return [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]


def _shipped_raccoon() -> str:
    """The project's shared/data/raccoon (next to the checkout, or above it for worktrees), or ""."""
    here = REPO_ROOT
    for _ in range(5):
        here = os.path.dirname(here)
        candidate = os.path.join(here, "shared", "data", "raccoon")
        if os.path.isdir(os.path.join(candidate, "Annotations")):
            return candidate
    return ""


def test_the_list_of_notebooks_is_complete():
    found = sorted(f[:-6] for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
    assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_badge_install_and_backend_cells(name):
    nb = _load(name)
    first = _source(nb["cells"][0])
    assert nb["cells"][0]["cell_type"] == "markdown"
    badge = re.search(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/"
                      r"([\w.-]+)\.ipynb", first)
    assert badge and "colab-badge.svg" in first, "the first cell must be an Open in Colab badge"
    assert badge.group(2) == name
    assert re.search(r"\bCPU\b", first) and re.search(r"\bGPU\b", first) and re.search(r"\bTPU\b", first), (
        "the first cell says how long the notebook takes on CPU, GPU and TPU")

    cells = _code_cells(nb)
    install = cells[0]
    repo = re.search(r'^REPO = "([^"]+)"', install, re.M)
    assert repo, "the install cell starts with the REPO slug"
    assert repo.group(1) == badge.group(1), "the badge and REPO name the same repository"
    assert all(s in install for s in ('"SSD_JAX_NO_INSTALL"', '"SSD_JAX_SMOKE"', '"../setup.cfg"',
                                      '"-e", ".."', "git+https://github.com/{REPO}"))
    backend = cells[1]
    assert "jax.default_backend()" in backend and "jax.devices()" in backend
    text = "\n".join(cells)
    assert "setup_tpu" not in text, "backend detection is jax.default_backend(), not a legacy TPU set-up"
    assert "SMOKE" in "\n".join(cells[2:]), "sizes come from SSD_JAX_SMOKE"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs(name):
    """quickstart.ipynb carries the outputs of a real CPU run; the others are committed without outputs."""
    nb = _load(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    if name == "quickstart":
        outputs = "".join(json.dumps(c["outputs"]) for c in code)
        assert "full mode" in outputs and "trained 1200 steps" in outputs, (
            "quickstart.ipynb is committed with the outputs of a full (not smoke) run of the shapes config")
        assert sum(1 for c in code if c["outputs"]) >= len(code) - 1  # only the plotting set-up prints nothing
        assert len(json.dumps(nb)) < 600_000, "keep the committed notebook small (low-dpi figures, JPEG pictures)"
    else:
        assert not any(c["outputs"] or c.get("execution_count") for c in code), f"{name}: clear the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_end_to_end_in_smoke_mode(name, tmp_path, monkeypatch):
    import ipykernel  # noqa: F401  (the test extra installs nbclient, nbformat and ipykernel: a missing one fails)
    import nbclient
    import nbformat

    if name == "custom_dataset":
        raccoon = _shipped_raccoon()
        if not raccoon:
            pytest.skip("the raccoon data (shared/data/raccoon next to the checkout) is not here")
        monkeypatch.setenv("SSD_JAX_DATA_ROOT", raccoon)
    monkeypatch.setenv("SSD_JAX_SMOKE", "1")
    monkeypatch.setenv("SSD_JAX_NO_INSTALL", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    # The kernel inherits conftest.py's XLA_FLAGS (8 CPU devices), JAX_COMPILATION_CACHE_DIR and
    # CUDA_VISIBLE_DEVICES.

    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, work)
    nb = nbformat.read(str(work / f"{name}.ipynb"), as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{name}.ipynb failed in a cell:\n{error}")
    finally:
        nbformat.write(nb, str(work / f"{name}.executed.ipynb"))  # for a look after a failure

    outputs = "".join(json.dumps(c.get("outputs", [])) for c in nb.cells if c.cell_type == "code")
    assert "SSD_JAX_NO_INSTALL=1: pip install skipped" in outputs
    assert os.path.join(REPO_ROOT, "ssd_jax") in outputs, "the kernel ran this checkout's ssd_jax"
    if name == "pretrained_ssd300":
        assert "SYNTHETIC state dict" in outputs
    if name in ("quickstart", "custom_dataset", "tpu_voc0712"):
        assert "final VOC mAP@0.5" in outputs
