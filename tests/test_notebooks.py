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


def test_the_notebooks_execute_top_to_bottom(monkeypatch):
    # All three in one kernel (TensorFlow starts once), each after "%reset -f",
    # so a notebook can use nothing another one defined.
    monkeypatch.setenv("NST_KERAS_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    books = {name: nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4) for name in NAMES}
    whole = nbformat.v4.new_notebook(metadata=books[NAMES[0]].metadata)
    owner = []  # the notebook of each cell of ``whole``
    for name, nb in books.items():
        whole.cells.append(nbformat.v4.new_code_cell("%reset -f"))
        owner.append(None)
        for cell in nb.cells:
            whole.cells.append(cell)
            owner.append(name)
    # "python3" is the native kernel: this interpreter (this virtual environment),
    # started in notebooks/; each notebook's first cell prints both, checked below.
    client = nbclient.NotebookClient(whole, kernel_name="python3", timeout=300,
                                     allow_errors=False,
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    for name in NAMES:
        cells = [c for c, o in zip(whole.cells, owner) if o == name and c.cell_type == "code"]
        text = "".join(o.get("text", "") for c in cells for o in c.outputs)
        assert f"nst_keras from {os.path.join(REPO, 'nst_keras')} | python {sys.executable}" \
            in text, name
        images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
        assert images, f"{name} shows pictures"
