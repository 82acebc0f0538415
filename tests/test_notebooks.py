"""The notebooks run top to bottom (offline: tiny images, random weights)."""

import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
NAMES = ["keras_io_tutorial.ipynb", "deprocess_offsets.ipynb", "layer_reconstructions.ipynb"]


def test_committed_notebooks_have_no_outputs():
    for name in NAMES:
        nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, monkeypatch):
    monkeypatch.setenv("NST_KERAS_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    # "python3" is the native kernel: this interpreter (this virtual environment),
    # started in notebooks/; the first cell prints both, checked below.
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     allow_errors=False,
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert f"nst_keras from {os.path.join(REPO, 'nst_keras')} | python {sys.executable}" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, "the notebook shows pictures"
