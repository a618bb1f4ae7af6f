"""Every example notebook runs top to bottom in a real kernel with the embedded model."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "example_notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_example_notebook_runs_without_errors(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    # jupyter_client starts "python3" kernels with this interpreter (the project's venv).
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if path.stem == "01_quickstart":
        assert "tok/s" in text and "cancelled after" in text
        assert "again: " in text and "cached 0/" not in text.split("again: ")[1]
