"""Notebooks run top to bottom on tiny settings, and are committed without outputs."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


#: What each notebook must print: the reblur check's value, one NeurMAP iteration's losses; the sweep's table
#: rows and the image panels it found.
EXPECTED = {
    "01_quickstart": ["mean |R(S, m_gt) - B| = 0.0", "'train/deblur/total'", "'train/motion/weighted/reblur'"],
    "02_compare_runs": ["| 0_baseline-unet | done | baseline |", "| 1_neurmap-unet | done | neurmap |", "val_iter"],
}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    for needle in EXPECTED[path.stem]:
        assert needle in text, f"{path.name}: no {needle!r} in the outputs:\n{text[-2000:]}"
    assert not [o for o in outputs if o.get("output_type") == "error"]
