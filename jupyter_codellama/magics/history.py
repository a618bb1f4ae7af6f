"""The kernel's history as the model sees it: executed cells, their outputs and errors, and
references to them (``In[5]``, ``5``, or the previous cell)."""

from __future__ import annotations

import re
from typing import Any, Callable

from IPython.core.error import UsageError

from ..prompts.notebook_context import Cell, CellOutput
from ..session import get_session, is_assistant_cell, user_variables

_CELL_REF = re.compile(r"^(?:In\[(\d+)\]|(\d+))$")


def notebook_context(shell, mode: str):
    """The context of a request: ``none``, the last ``cell`` or the whole ``notebook``."""
    if mode == "none":
        return None
    from ..prompts import ContextSettings, NotebookContext

    namespace = user_variables(shell)
    cells = history_cells(shell, namespace)
    if mode == "cell":
        # The namespace still redacts its secrets' values; only the summaries are left out.
        return NotebookContext(
            cells=cells[-1:], current=None, namespace=namespace, settings=ContextSettings(include_variables=False)
        )
    return NotebookContext(cells=cells, current=None, namespace=namespace)


def history_cells(shell, namespace: dict) -> list[Cell]:
    """Executed cells (not the current one, not our own magics) with outputs and errors."""
    from ..prompts.redact import Redactor

    raw = shell.history_manager.input_hist_raw
    outputs = shell.user_ns.get("Out", {})
    errors = get_session().errors
    redact = Redactor(namespace=namespace)
    cells: list[Cell] = []
    for n in range(1, len(raw) - 1):
        source = raw[n]
        if not source.strip() or is_assistant_cell(source):
            continue
        outs: list[CellOutput] = []
        if n in outputs:
            text = _bounded_repr(outputs[n], redact)
            outs.append({"output_type": "execute_result", "data": {"text/plain": text}})
        if n in errors:
            e = errors[n]
            outs.append(
                {"output_type": "error", "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback.splitlines()}
            )
        cells.append({"cell_type": "code", "source": source, "outputs": outs, "execution_count": n})
    return cells


def cell_number(ref: str) -> int:
    m = _CELL_REF.match(ref.strip())
    if not m:
        raise UsageError(f"Cannot read cell reference {ref!r}: use In[5] or 5.")
    return int(m.group(1) or m.group(2))


def cell_source(shell, ref: str | None) -> tuple[int, str]:
    """The number and source of the executed cell ``ref``; None: the previous cell."""
    raw = shell.history_manager.input_hist_raw
    if ref is not None:
        n = cell_number(ref)
        if not 0 < n < len(raw) - 1 or not raw[n].strip():
            raise UsageError(f"There is no executed cell In[{n}] in this kernel session.")
        return n, raw[n]
    for n in range(len(raw) - 2, 0, -1):
        if raw[n].strip() and not is_assistant_cell(raw[n]):
            return n, raw[n]
    raise UsageError("No earlier cell to work on: run a cell first, or name one (In[n]).")


def _bounded_repr(value: Any, redact: Callable[[str], str], limit: int = 2000) -> str:
    """The output's repr, redacted before it is cut (a cut would hide a secret's closing quote)."""
    from ..prompts.redact import clip

    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not break the prompt
        text = f"<{type(value).__name__}: repr failed: {exc}>"
    return clip(text, limit, redact)
