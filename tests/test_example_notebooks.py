"""Every example notebook runs top to bottom in a real kernel with the embedded model.

The 135M model's code is often wrong: correctness is reported by the notebooks, not asserted;
what is asserted is what a reader must see (answers, checks, context, no secrets).
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "example_notebooks").glob("*.ipynb"))


def shown_text(nb) -> str:
    """Everything the notebook shows: streams, errors, plain text and Markdown outputs."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            if out.get("output_type") == "error":
                parts.append(f"{out.get('ename', '')}: {out.get('evalue', '')}")
            data = out.get("data", {})
            parts.append(data.get("text/markdown", "") + data.get("text/plain", ""))
    return "\n".join(parts)


EXPECTED = {
    "01_quickstart": ["embedded ready", "tok/s", "codellama/CodeLlama-7b-Instruct-hf", "max_new_tokens"],
    "02_fix_and_explain": ["KeyError", "stop:"],
    "03_infilling": ["def average(numbers):", "return total / len(numbers)", "continuation"],
    "04_data_analysis_context": ["unit_price", "float64", "region", "tokens"],
    "05_programming_tasks": ["merge strings alternately:", "tasks solved** by `embedded`", "| fizzbuzz |"],
    "06_python_api": ["tok/s", "cancelled after", "again: "],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_example_notebook_runs_without_errors(path):
    nb = nbformat.read(path, as_version=4)
    # jupyter_client starts "python3" kernels with this interpreter (the project's venv).
    NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    unexpected = [
        o
        for c in nb.cells
        if "raises-exception" not in c.metadata.get("tags", [])
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not unexpected, unexpected[0].get("evalue")
    text = shown_text(nb)
    for needle in EXPECTED[path.stem]:
        assert needle in text, f"{path.stem}: {needle!r} not shown"
    if path.stem == "04_data_analysis_context":
        preview = text.split("Prompt for embedded")[1].split("Context included")[0]
        assert "sk-demo-0000-not-a-real-key" not in preview, "a secret value reached the prompt"
        assert "open: def open" not in preview, "IPython's own names are not the user's variables"
        assert "%load_ext" not in preview, "talking to the assistant is not notebook code"
    if path.stem == "06_python_api":
        assert "cached 0/" not in text.split("again: ")[1]


def test_every_notebook_is_covered():
    assert {p.stem for p in NOTEBOOKS} == set(EXPECTED)
