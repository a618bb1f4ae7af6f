"""What the assistant remembers within one kernel: the conversation and the errors cells raised.

Errors are recorded by a ``post_run_cell`` hook so that ``%codellama fix`` and ``Err[n]`` know
the failing cell's source and traceback without any front end's help. The same hook records
which cell ran as which execution count (:class:`RunLog`): with IPython's history, that tells
of any cell a front end sends whether it ran in this kernel and whether it changed since.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .prompts.chat import ChatMessage
    from .prompts.notebook_context import CellRun

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_TRACEBACK_LINES = 30
_MAX_HISTORY_TURNS = 20
_MAX_RUNS = 10_000  # executions whose cell id is kept; older ones are judged by their source alone


@dataclass(frozen=True)
class RecordedError:
    execution_count: int
    source: str
    ename: str
    evalue: str
    traceback: str

    def describe(self) -> str:
        return f"{self.ename}: {self.evalue}\n{self.traceback}"


class RunLog:
    """Which cell ran as which execution count in this kernel, by the front end's cell id.

    IPython's history holds the source of every count (``In[n]``); JupyterLab sends each cell's
    id with its execution request. A cell the front end sends is then judged (:meth:`states`):
    it ran as ``In[n]`` and is unchanged, or was edited since, or never ran, or shows a count
    that is not this kernel's (the kernel restarted: counts start again at 1). A cell without an
    id (another front end) is judged by its count and source alone.
    """

    def __init__(self) -> None:
        self._cell_of_count: dict[int, str] = {}
        self._count_of_cell: dict[str, int] = {}

    def record(self, result: Any) -> None:
        """``post_run_cell``: remember the count a cell ran as (executions kept out of history have none)."""
        info = getattr(result, "info", None)
        count = getattr(result, "execution_count", None)
        cell_id = getattr(info, "cell_id", None)
        if not getattr(info, "store_history", False) or not isinstance(count, int) or not isinstance(cell_id, str):
            return
        self._cell_of_count[count] = cell_id
        self._count_of_cell[cell_id] = count
        while len(self._cell_of_count) > _MAX_RUNS:  # counts grow: the first key is the oldest
            old = next(iter(self._cell_of_count))
            if self._count_of_cell.get(self._cell_of_count[old]) == old:
                del self._count_of_cell[self._cell_of_count[old]]
            del self._cell_of_count[old]

    def judged(self, cells: Sequence[Any], shell: Any) -> list[Any]:
        """The cells, each with its ``run`` (see :func:`~.prompts.notebook_context.with_runs`)."""
        from .prompts.notebook_context import with_runs

        return with_runs(cells, self.states(cells, shell))

    def states(self, cells: Sequence[Mapping], shell: Any) -> list[CellRun | None]:
        """What this kernel knows of each cell's last run: None for markdown and raw cells."""
        history = list(getattr(getattr(shell, "history_manager", None), "input_hist_raw", None) or [""])
        return [self._state(cell, history) for cell in cells]

    def _state(self, cell: Mapping, history: list[str]) -> CellRun | None:
        from .prompts.notebook_context import CellRun, cell_source

        if cell.get("cell_type", "code") != "code":
            return None
        cell_id = cell.get("id") if isinstance(cell.get("id"), str) else None
        count = self._count_of_cell.get(cell_id) if cell_id is not None else None
        if count is None:  # the kernel's word first: the page's count may be cleared or another kernel's
            if "execution_count" not in cell:
                return None  # not said (inline completion sends sources only): no mark, not "never run"
            count = cell.get("execution_count")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                return CellRun("never")
        if count >= len(history):  # this kernel has not reached In[n]: it ran in a kernel before this one
            return CellRun("earlier")
        if not history[count]:  # In[n] forgotten (``%reset in``): nothing to judge by
            return None
        if history[count] == cell_source(cell).rstrip("\n"):  # IPython keeps no trailing newlines
            return CellRun("ran", count)
        ran_as = self._cell_of_count.get(count)
        if cell_id is not None and ran_as is not None and ran_as != cell_id:
            return CellRun("earlier")  # In[n] is another cell's run here
        return CellRun("edited", count)


@dataclass
class Session:
    history: list[ChatMessage] = field(default_factory=list)
    errors: dict[int, RecordedError] = field(default_factory=dict)
    runs: RunLog = field(default_factory=RunLog)

    @property
    def last_error(self) -> RecordedError | None:
        return self.errors[max(self.errors)] if self.errors else None

    def add_exchange(self, request: str, answer: str) -> None:
        self.history += [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]
        del self.history[: max(0, len(self.history) - 2 * _MAX_HISTORY_TURNS)]

    def reset(self) -> None:
        self.history.clear()

    def record(self, result: Any) -> None:
        """``post_run_cell`` hook: remember which cell ran, and the cell and traceback of an exception."""
        self.runs.record(result)
        exc = getattr(result, "error_in_exec", None)
        if exc is None or isinstance(exc, KeyboardInterrupt):
            return
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", "") or ""
        count = getattr(result, "execution_count", None) or (max(self.errors, default=0) + 1)
        self.errors[count] = RecordedError(count, source, type(exc).__name__, str(exc), format_traceback(exc))
        for old in sorted(self.errors)[:-20]:  # a long session keeps the recent ones
            del self.errors[old]


def format_traceback(exc: BaseException) -> str:
    """The traceback as plain text, user frames only (IPython's own machinery is noise)."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "site-packages/IPython" not in f.filename.replace("\\", "/")]
    lines = traceback.format_list(user or frames) + traceback.format_exception_only(type(exc), exc)
    text = _ANSI.sub("", "".join(lines))
    kept = text.splitlines()[-_MAX_TRACEBACK_LINES:]
    return "\n".join(kept)


_session = Session()


def get_session() -> Session:
    return _session


def user_variables(shell) -> dict[str, Any]:
    """The user's own names: what ``%who`` lists (not IPython's injected ``open``, ``In``, …)."""
    hidden = getattr(shell, "user_ns_hidden", {})
    missing = object()
    for _ in range(5):  # the main thread may be running code while the comm thread reads
        try:
            return {k: v for k, v in list(shell.user_ns.items()) if v is not hidden.get(k, missing)}
        except RuntimeError:
            continue
    return {}


def kernel_namespace() -> dict[str, Any]:
    """The user's variables in the running IPython kernel, or {} outside one (a plain script)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return user_variables(shell) if shell is not None else {}


_OWN_LINE = re.compile(r"^\s*(%%?codellama\b|%(re)?load_ext\s+jupyter_codellama\b)")


def is_assistant_cell(source: str) -> bool:
    """A cell that only talks to the assistant (its magics, loading it): not notebook code."""
    code = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not code:
        return False
    if _OWN_LINE.match(code[0]) and code[0].lstrip().startswith("%%codellama"):
        return True
    return all(_OWN_LINE.match(line) for line in code)
