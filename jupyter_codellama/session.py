"""What the assistant remembers within one kernel: the conversation and the errors cells raised.

Errors are recorded by a ``post_run_cell`` hook so that ``%codellama fix`` and ``Err[n]`` know
the failing cell's source and traceback without any front end's help.
"""
from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_TRACEBACK_LINES = 30
_MAX_HISTORY_TURNS = 20


@dataclass(frozen=True)
class RecordedError:
    execution_count: int
    source: str
    ename: str
    evalue: str
    traceback: str

    def describe(self) -> str:
        return f"{self.ename}: {self.evalue}\n{self.traceback}"


@dataclass
class Session:
    history: list[dict[str, str]] = field(default_factory=list)
    errors: dict[int, RecordedError] = field(default_factory=dict)

    @property
    def last_error(self) -> RecordedError | None:
        return self.errors[max(self.errors)] if self.errors else None

    def add_exchange(self, request: str, answer: str) -> None:
        self.history += [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]
        del self.history[: max(0, len(self.history) - 2 * _MAX_HISTORY_TURNS)]

    def reset(self) -> None:
        self.history.clear()

    def record(self, result: Any) -> None:
        """``post_run_cell`` hook: remember the cell and traceback of an exception."""
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
