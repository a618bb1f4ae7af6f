"""From a comm message to a request spec: the parse step of the comm's parse → spec → submit.

Every message reaching these functions has passed the size limits and the protocol's schema
(:mod:`.protocol`), so its fields have the right types and ranges; what is left to check here is
what the schema cannot say (an index into ``cells``, a conversation that ends with an answer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from .prompts import Cell, ContextSettings, NotebookContext
from .prompts.chat import ChatMessage
from .prompts.notebook_context import CellRun
from .prompts.requests import ChatRequest, EditRequest, ExplainRequest, FixRequest, InfillRequest
from .protocol import BadRequest

__all__ = ["KernelView", "chat_spec", "cell_spec", "generation_options", "infill_spec", "snapshot"]


@dataclass(frozen=True)
class KernelView:
    """What the kernel adds to a message: its live namespace, and what it knows of each cell's
    last run (``judge`` marks the cells a front end sent as stale, never run, …)."""

    namespace: Callable[[], Mapping[str, Any]]
    judge: Callable[[list], list] = lambda cells: cells


def get(data: Mapping, name: str, default: Any = None) -> Any:
    """A field's value; ``default`` when it is absent or null."""
    value = data.get(name)
    return default if value is None else value


def generation_options(data: Mapping, default_max: int) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "max_new_tokens": get(data, "max_new_tokens", default_max),
        "temperature": float(get(data, "temperature", 0.0)),
        "stop": tuple(s for s in get(data, "stop", ()) if s),
    }
    max_time_ms = get(data, "max_time_ms")
    if max_time_ms is not None:
        opts["max_time"] = max_time_ms / 1000
    return opts


def notebook_context(data: Mapping, kernel: KernelView) -> NotebookContext:
    cells = list(get(data, "cells", []))
    current = get(data, "current")
    if current is not None and current >= max(1, len(cells)):
        raise BadRequest("'current' is out of range: an index into cells.")
    # Always the namespace: its secrets' values are redacted; the setting leaves out summaries.
    settings = ContextSettings(include_variables=get(data, "variables", True))
    return NotebookContext(
        cells=kernel.judge(cells), current=current, namespace=snapshot(kernel.namespace()), settings=settings
    )


def _messages(data: Mapping) -> list[ChatMessage]:
    return [{"role": m["role"], "content": m["content"]} for m in get(data, "messages", [])]


def chat_spec(data: Mapping, kernel: KernelView, default_max: int) -> ChatRequest:
    context = notebook_context(data, kernel) if data.get("cells") else None
    return ChatRequest(
        messages=_messages(data),
        system=get(data, "system"),
        context=context,
        namespace=_namespace(context, kernel),
        max_new_tokens=get(data, "max_new_tokens", default_max),
    )


CellTask = ExplainRequest | FixRequest | EditRequest


def cell_spec(data: Mapping, kernel: KernelView, default_max: int, kind: type[CellTask]) -> CellTask:
    """Explain, fix or edit the current cell: its source (and error) go into our wording of the
    request, the other cells into the context; ``messages`` are the conversation so far."""
    context = notebook_context(data, kernel)
    if context.current is None or context.current >= len(context.cells):
        raise BadRequest("'current' is required: the index in 'cells' of the cell to explain, fix or edit.")
    cell = context.cells[context.current]
    history = _messages(data)
    if history and history[-1]["role"] != "assistant":
        raise BadRequest("'messages' are the conversation so far: they end with an answer.")
    others = [c for i, c in enumerate(context.cells) if i != context.current]
    common = {
        "source": cell_source(cell),
        "label": _label(cell),
        "history": history,
        "context": replace(context, cells=others, current=None),
        "namespace": _namespace(context, kernel),
        "max_new_tokens": get(data, "max_new_tokens", default_max),
    }
    if kind is ExplainRequest:
        return ExplainRequest(**common)
    if kind is EditRequest:
        return _edit_request(data, common)
    error = error_text(cell)
    if not error:
        raise BadRequest("The current cell shows no error to fix (its outputs hold none).")
    return FixRequest(error=error, **common)


def infill_spec(data: Mapping, kernel: KernelView) -> InfillRequest:
    extra = get(data, "extra", [])
    context = notebook_context(data, kernel) if (data.get("cells") or extra) else None
    if context is not None and extra:
        # llama.cpp's /infill "extra" chunks become cells placed before the current one.
        extra_cells: list[Cell] = [{"cell_type": "code", "source": e["text"]} for e in extra]
        current = context.current + len(extra_cells) if context.current is not None else None
        context = replace(context, cells=[*extra_cells, *context.cells], current=current)
    return InfillRequest(
        prefix=data["prefix"],
        suffix=get(data, "suffix", ""),
        mode=get(data, "mode", "psm"),
        context=context,
        namespace=_namespace(context, kernel),
        max_new_tokens=get(data, "max_new_tokens", 64),
    )


def _label(cell: Mapping) -> str:
    """How the question names the cell, with what the kernel knows of its last run: a fix of a
    cell edited since it ran explains an error its previous version raised."""
    run = cell.get("run")
    mark = run.mark if isinstance(run, CellRun) else ""
    return f"the active cell, {mark}" if mark else "the active cell"


def _edit_request(data: Mapping, common: dict) -> EditRequest:
    selection = data.get("selection")
    span = (selection["start"], selection["end"]) if selection else None  # the schema checked both
    try:
        return EditRequest(instruction=data["instruction"], selection=span, **common)
    except ValueError as exc:  # an empty instruction, a selection outside the cell
        raise BadRequest(str(exc)) from None


def _namespace(context: NotebookContext | None, kernel: KernelView) -> Mapping[str, Any]:
    """The namespace that redacts the request: the context's snapshot, else a fresh one."""
    if context is not None and context.namespace is not None:
        return context.namespace
    return snapshot(kernel.namespace())


def cell_source(cell: Mapping) -> str:
    source = cell.get("source") or ""
    return "".join(source) if isinstance(source, list) else str(source)


def error_text(cell: Mapping) -> str:
    """The error a cell's outputs show (name, value and traceback), or ""."""
    for output in cell.get("outputs") or []:
        if isinstance(output, dict) and output.get("output_type") == "error":
            lines = [str(line) for line in output.get("traceback") or []]
            head = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
            return "\n".join([head, *lines]) if lines else head
    return ""


def snapshot(namespace: Mapping) -> dict:
    """A shallow copy of the user's namespace, taken while the main thread may be running code."""
    for _ in range(5):
        try:
            return dict(namespace)
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return {}
