"""The explanatory notebooks: stored without outputs, and each runs top to bottom in FAST mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # per cell; FAST mode needs a small fraction of it


def _ids(paths):
    return [p.name for p in paths]


def _parameters_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            return i
    raise AssertionError("no cell tagged 'parameters'")


def test_the_four_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    for name in ("01_wkv_recurrence.ipynb", "02_crosswkv.ipynb", "03_state_dynamics.ipynb", "04_state_tracking.ipynb"):
        assert name in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs (clear them before committing)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_structure(path):
    nb = nbformat.read(path, as_version=4)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# ")
    params = nb.cells[_parameters_index(nb)]
    assert "FAST = False" in params.source, "the full run must be the default"
    assert last.cell_type == "markdown" and "what to try next" in last.source.lower()
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # notebooks use dir7's public API only: the kernels package is reached through dir7
    assert "import kernels" not in code and "from kernels" not in code


def _ensure_python3_kernel() -> None:
    """A fresh environment has ipykernel but maybe no registered spec: register one for this user."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(user=True, kernel_name="python3")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_in_fast_mode(path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    _ensure_python3_kernel()

    nb = nbformat.read(path, as_version=4)
    # like papermill: a cell right after the parameters cell overrides the defaults
    nb.cells.insert(_parameters_index(nb) + 1, nbformat.v4.new_code_cell("FAST = True"))
    # the kernel imports this checkout's dir7; one thread keeps a shared CI machine responsive
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # notebooks run from their own folder
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
