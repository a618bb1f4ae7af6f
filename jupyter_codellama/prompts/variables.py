"""One-line summaries of the live kernel namespace: what the model needs, never the data.

The kernel knows what no editor knows: ``df`` has columns ``price float64, city object``,
``X`` is a ``(1000, 20)`` float32 array, ``fit(model, X, y, *, epochs=10)`` exists. Each
summary is bounded (a huge list costs as much as a small one) and never imports pandas,
numpy or torch: kinds are recognised from ``type(value).__module__`` and class attributes,
so nothing is loaded that the user did not load, and instance ``__getattr__`` hooks are not
triggered while deciding what a value is.

Summaries are built on the engine thread on every keystroke, so ``.shape`` / ``.dtypes`` are
read only from types known to hold them in memory (pandas, polars and cuDF frames, numpy,
torch, …). A lazy frame (modin, pyspark.pandas, dask, a polars LazyFrame) may run its whole
query when asked for its shape: it shows its type only. A namespace that takes too long to
describe shows the rest of its names with their types only.
"""

from __future__ import annotations

import inspect
import reprlib
import time
import types
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Mapping, Sequence

from .redact import DEFAULT_DENY, REDACT_WINDOW, clip, is_denied

__all__ = ["IPYTHON_NAMES", "VariableSummary", "bounded_repr", "describe_value", "summarize_namespace"]

#: Names IPython puts into ``user_ns`` that say nothing about the user's work.
IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
_INTERNAL_MODULES = ("IPython", "ipykernel", "ipywidgets", "jupyter_codellama")
# Libraries whose frames, series and arrays hold their data (or device buffers) in memory, so
# that shape and dtypes are metadata. A polars LazyFrame is no DataFrame and has no shape.
_EAGER_MODULES = frozenset({"pandas", "polars", "cudf", "numpy", "torch", "cupy", "jax", "jaxlib", "tensorflow"})
_DESCRIBE_SECONDS = 0.2  # for the whole namespace, per prompt
_MAX_COLUMNS = 40
_MAX_SIGNATURE = 160
_BUILTIN_VALUES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    bool,
    type(None),
    list,
    tuple,
    dict,
    set,
    frozenset,
    range,
)


@dataclass(frozen=True)
class VariableSummary:
    name: str
    description: str

    @property
    def line(self) -> str:
        return f"{self.name}: {self.description}"


class _BoundedRepr(reprlib.Repr):
    """reprlib for builtins; any other object shows as ``<TypeName>`` (its repr may be costly)."""

    def repr_instance(self, obj: Any, level: int) -> str:
        if type(obj) in (float, complex, bool, type(None)):
            return repr(obj)
        return f"<{type(obj).__name__}>"


Redact = Callable[[str], str]


def bounded_repr(value: Any, max_chars: int = 80, redact: Redact | None = None) -> str:
    """A repr of at most ``max_chars`` characters that never walks a big container.

    With ``redact``, strings inside are kept long enough that the repr is redacted before
    anything in view is cut (reprlib would cut a long string in its middle).
    """
    r = _BoundedRepr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset, r.maxfrozenset = 2, 6, 6, 4, 6, 6
    r.maxother = max(8, max_chars)
    r.maxstring = 2 * (max_chars + REDACT_WINDOW) if redact is not None else r.maxother
    return clip(r.repr(value), max_chars, redact)


def describe_value(value: Any, max_repr: int = 80, redact: Redact | None = None) -> str:
    """``DataFrame (3 rows × 2 columns): a int64, b object``, ``def f(x, y=2)``, ``int = 5``…

    ``redact`` runs before every cut (a default argument in a signature, a repr).
    """
    cls = type(value)
    try:
        if isinstance(value, type):
            return _describe_class(value, redact)
        if inspect.isroutine(value):
            return _describe_routine(value, redact)
        eager = _module_root(cls) in _EAGER_MODULES
        if eager and cls.__name__ == "DataFrame":
            return _describe_frame(value, redact)
        if eager and hasattr(cls, "shape") and hasattr(cls, "dtype"):
            return f"{cls.__name__} shape {tuple(value.shape)} dtype {value.dtype}"
        if isinstance(value, _BUILTIN_VALUES):
            return _describe_builtin(value, max_repr, redact)
    except Exception:  # noqa: BLE001 - a broken __len__/property must not break the prompt
        pass
    return _type_name(cls)


def summarize_namespace(
    namespace: Mapping[str, Any],
    *,
    deny: Sequence[str] = DEFAULT_DENY,
    mentioned: Iterable[str] = (),
    max_repr: int = 80,
    redact: Redact | None = None,
    max_seconds: float = _DESCRIBE_SECONDS,
) -> tuple[list[VariableSummary], list[str]]:
    """Summaries in priority order, plus the names withheld by the deny-list.

    Order: names mentioned in the current cell first, then the most recently defined (a
    namespace dict keeps definition order). Modules, private names and IPython's own entries
    are skipped silently. After ``max_seconds`` the remaining names get their type only.
    """
    mentioned = set(mentioned)
    withheld: list[str] = []
    candidates: list[tuple[str, Any]] = []
    for name, value in reversed(list(namespace.items())):
        if not isinstance(name, str) or name.startswith("_") or name in IPYTHON_NAMES:
            continue
        if isinstance(value, types.ModuleType) or _module_root(type(value)) in _INTERNAL_MODULES:
            continue
        if is_denied(name, deny):
            withheld.append(name)
            continue
        candidates.append((name, value))
    candidates.sort(key=lambda item: item[0] not in mentioned)  # stable: keeps newest-first
    deadline = time.monotonic() + max_seconds
    summaries = [
        VariableSummary(
            name, describe_value(value, max_repr, redact) if time.monotonic() < deadline else _kind_only(value)
        )
        for name, value in candidates
    ]
    return summaries, withheld


def _kind_only(value: Any) -> str:
    """What a value is, from its type alone: costs nothing whatever the value."""
    return f"class {value.__name__}" if isinstance(value, type) else _type_name(type(value))


def _module_root(cls: type) -> str:
    return (getattr(cls, "__module__", None) or "").split(".")[0]


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", "") or ""
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _signature(obj: Any, redact: Redact | None) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return clip(text, _MAX_SIGNATURE, redact)


def _first_doc_line(obj: Any, redact: Redact | None) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return clip(line, 80, redact)


def _describe_routine(func: Any, redact: Redact | None = None) -> str:
    name = getattr(func, "__name__", "function")
    text = f"def {name}{_signature(func, redact)}"
    module = getattr(func, "__module__", None)
    if module and module not in ("__main__", "builtins"):
        text += f" (from {module})"
    doc = _first_doc_line(func, redact)
    return f"{text} — {doc}" if doc else text


def _describe_class(cls: type, redact: Redact | None = None) -> str:
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    text = f"class {cls.__name__}" + (f"({', '.join(bases)})" if bases else "")
    module = getattr(cls, "__module__", None)
    if module == "__main__":  # the user's own class: how to build one is what the model needs
        return f"{text}, construct as {cls.__name__}{_signature(cls, redact)}"
    return text if module in (None, "builtins") else f"{text} (from {module})"


def _describe_frame(frame: Any, redact: Redact | None = None) -> str:
    rows, cols = frame.shape
    dtypes = frame.dtypes
    pairs = dtypes.items() if hasattr(dtypes, "items") else zip(frame.columns, dtypes, strict=False)
    shown = [f"{clip(str(col), 40, redact)} {dtype}" for col, dtype in islice(pairs, _MAX_COLUMNS)]
    more = f", … (+{cols - len(shown)} more)" if cols > len(shown) else ""
    return f"{type(frame).__name__} ({rows} rows × {cols} columns): {', '.join(shown)}{more}"


def _describe_builtin(value: Any, max_repr: int, redact: Redact | None = None) -> str:
    name = type(value).__name__
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, complex)):
        return f"{name} = {bounded_repr(value, max_repr, redact)}"
    if isinstance(value, range):
        return repr(value)
    return f"{name} (len {len(value)}) = {bounded_repr(value, max_repr, redact)}"
