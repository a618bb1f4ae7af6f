"""The notebook as prompt context: cells, outputs, the last error and live variables, in budget.

The notebook is rendered the way ``jupyter nbconvert --to script`` writes it (the form code
models saw most in training): ``# In[3]:`` before each code cell, markdown as ``#`` comments,
plus ``# Out[3]:`` comment blocks for outputs and a ``# Variables in the kernel:`` block at the
top. Everything before the cursor is the *prefix*, everything after it the *suffix* (FIM).

Budget allocation (:func:`build_context`), deterministic, in this order:

1. the current cell before the cursor — whole, or, if it alone exceeds the budget, its tail
   (whole lines where possible, characters when even the last line does not fit);
2. the current cell after the cursor — whole or its head, at most half of what is left;
3. the current cell's outputs (its traceback in full if it raised last);
4. the cell that raised the most recent error: its source, then its truncated traceback;
5. the nearest cells (``near_cells`` above and below; by distance, above first), source
   then outputs;
6. live variables (names used in the current cell first, then newest first);
7. every other cell by distance, source then outputs.

Items are all-or-nothing except (1) and (2); an item that does not fit is cut and smaller
ones after it may still go in; outputs never go in without their cell. Token counts come from
a ``count_tokens`` callable; since counts of pieces need not add up exactly, the assembled
text is re-counted and the lowest-ranked items dropped until ``count(prefix) +
count(suffix) <= budget`` holds. Every secret is redacted before anything is counted.

What ran (each cell's ``run``, set by the kernel: see ``session.RunLog``): a cell
edited since it ran is headed ``# In[7]:  (edited since it ran)``, a code cell that never ran
``# In[ ]:  (never run)``, one whose count is not this kernel's (the kernel restarted, the
notebook came from disk) ``# In[ ]:  (not run since the kernel started)``; one comment line at
the top tells the model that the names such cells define may not exist. When the cells ran in
another order than the page's, they are shown in the order they ran (a cell that did not run
stays after the one above it), and the top says so. The report's labels and notes carry the
same marks, so every preview shows them. Cells without a ``run`` are not marked or moved.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Mapping, Sequence, TypedDict

from .redact import DEFAULT_DENY, Redactor
from .variables import summarize_namespace

__all__ = [
    "AllocatedContext",
    "Cell",
    "CellRun",
    "CellOutput",
    "ContextItem",
    "ContextReport",
    "ContextSettings",
    "CountTokens",
    "NotebookContext",
    "approximate_tokens",
    "build_context",
    "cell_source",
    "with_runs",
    "prompt_redactor",
    "render_outputs",
]

CountTokens = Callable[[str], int]


class CellOutput(TypedDict, total=False):
    """One output as nbformat stores it (and the front end sends it)."""

    output_type: Literal["stream", "execute_result", "display_data", "error"]
    name: str  # stream: "stdout" | "stderr"
    text: str | list[str]  # stream
    data: dict[str, Any]  # execute_result / display_data: mime type -> str | list[str]
    ename: str  # error
    evalue: str
    traceback: list[str]
    execution_count: int | None  # execute_result


class Cell(TypedDict, total=False):
    """One notebook cell as nbformat stores it (and the front end sends it)."""

    cell_type: Literal["code", "markdown", "raw"]
    id: str  # nbformat >= 4.5: the kernel knows which cell ran by it
    source: str | list[str]
    outputs: list[CellOutput]
    execution_count: int | None
    # Set by the kernel, never taken from a front end (JSON cannot hold a CellRun): it travels
    # with the cell wherever the cell list is cut or extended.
    run: CellRun


@dataclass(frozen=True)
class ContextSettings:
    """What goes into the context; the defaults suit a 16k-token Code Llama window."""

    include_variables: bool = True
    include_outputs: bool = True
    deny: tuple[str, ...] = DEFAULT_DENY
    max_variables: int = 30
    near_cells: int = 2
    max_output_chars: int = 600
    max_traceback_lines: int = 12
    max_repr_chars: int = 80


RunState = Literal["ran", "edited", "never", "earlier"]

_RUN_MARKS: dict[str, str] = {
    "ran": "",
    "edited": "edited since it ran",
    "never": "never run",
    "earlier": "not run since the kernel started",
}


@dataclass(frozen=True)
class CellRun:
    """One cell's last run in this kernel, as the kernel knows it (``session.RunLog``).

    ``ran``: its source is what ran as ``In[count]``; ``edited``: it ran as ``In[count]`` and
    was changed since; ``never``: a code cell that did not run; ``earlier``: it shows a count
    that is not this kernel's (a restart, a notebook opened from disk, a pasted cell).
    """

    state: RunState
    count: int | None = None

    @property
    def mark(self) -> str:
        return _RUN_MARKS[self.state]

    @property
    def ran_here(self) -> bool:
        return self.state in ("ran", "edited")


def with_runs(cells: Sequence[Cell], runs: Sequence[CellRun | None]) -> list[Cell]:
    """The cells, each with what the kernel knows of its last run (None: nothing, left as it is)."""
    return [cell if run is None else {**cell, "run": run} for cell, run in zip(cells, runs, strict=True)]


@dataclass(frozen=True)
class NotebookContext:
    """The notebook around the cursor. ``current`` indexes ``cells``; None: no cell is current.

    ``namespace`` is the kernel's: give it even with ``include_variables=False``, since the
    values of its deny-listed names are redacted from every text (a token from ``getpass()``
    printed in an output); the setting only leaves out the summaries.
    """

    cells: Sequence[Cell] = ()
    current: int | None = None
    namespace: Mapping[str, Any] | None = None
    settings: ContextSettings = field(default_factory=ContextSettings)


@dataclass(frozen=True)
class ContextItem:
    kind: Literal["current", "outputs", "cell", "variable"]
    label: str
    tokens: int
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "tokens": self.tokens, "truncated": self.truncated}


@dataclass(frozen=True)
class ContextReport:
    """What went into a prompt and what did not fit: the "context preview" shows this.

    ``budget``/``used`` count the notebook context's tokens (both 0 when no context was given).
    """

    budget: int = 0
    used: int = 0
    included: tuple[ContextItem, ...] = ()
    cut: tuple[ContextItem, ...] = ()
    notes: tuple[str, ...] = ()

    def with_notes(self, *notes: str) -> "ContextReport":
        return replace(self, notes=self.notes + notes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "used": self.used,
            "included": [i.to_dict() for i in self.included],
            "cut": [i.to_dict() for i in self.cut],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class AllocatedContext:
    prefix: str  # ends exactly at the cursor
    suffix: str  # starts exactly at the cursor
    report: ContextReport


def prompt_redactor(context: NotebookContext | None, namespace: Mapping[str, Any] | None = None) -> Redactor:
    """The one redactor of a prompt: the context's deny-list, the deny-listed values of the namespace.

    ``namespace`` defaults to the context's; a prompt without notebook context passes the
    kernel's namespace here, so that chat messages lose its secrets too.
    """
    settings = context.settings if context is not None else ContextSettings()
    if namespace is None and context is not None:
        namespace = context.namespace
    return Redactor(settings.deny, namespace)


def approximate_tokens(text: str) -> int:
    """≈ one token per four characters (BPE on code): cheap, for tests and rough estimates."""
    return (len(text) + 3) // 4


# ---------------------------------------------------------------------------------------------
# Rendering

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_VARIABLES_HEADER = "# Variables in the kernel:"
_BLOCK_SEP = "\n\n"


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def cell_source(cell: Mapping[str, Any]) -> str:
    """A cell's source as one string (nbformat may store it as a list of lines)."""
    return _text(cell.get("source"))


def _comment(lines: Sequence[str]) -> str:
    return "\n".join(f"# {line}" if line.strip() else "#" for line in lines)


def _cell_header(cell: Cell, *notes: str) -> str:
    """``# In[3]:``, with notes in brackets: ``# In[7]:  (current cell, edited since it ran)``."""
    count = cell.get("execution_count")
    shown = ", ".join(n for n in notes if n)
    return f"# In[{count if count is not None else ' '}]:" + (f"  ({shown})" if shown else "")


def _render_source(cell: Cell, mark: str = "") -> str:
    source = _text(cell.get("source")).strip("\n")
    if cell.get("cell_type", "code") == "code":
        return f"{_cell_header(cell, mark)}\n{source}"
    return _comment(source.splitlines())


def _clip_lines(lines: list[str], max_chars: int) -> list[str]:
    """Keep the head (⅔) and the tail (⅓) of long output, saying how much was cut."""
    if sum(len(ln) + 1 for ln in lines) <= max_chars:
        return lines
    longest = max(8, max_chars // 3)  # so that one huge line (a printed list) still shows its start
    lines = [ln if len(ln) <= longest else ln[: longest - 1] + "…" for ln in lines]
    head: list[str] = []
    size = 0
    for ln in lines:
        if size + len(ln) + 1 > max_chars * 2 // 3:
            break
        head.append(ln)
        size += len(ln) + 1
    tail: list[str] = []
    size = 0
    for ln in reversed(lines[len(head) :]):
        if size + len(ln) + 1 > max_chars // 3:
            break
        tail.insert(0, ln)
        size += len(ln) + 1
    cut = len(lines) - len(head) - len(tail)
    return head + [f"… ({cut} lines cut) …"] + tail


def render_outputs(
    cell: Cell, *, max_chars: int = 600, traceback_lines: int = 0, redact: Callable[[str], str] | None = None
) -> str:
    """``# Out[n]:`` and the outputs as comments; errors in full only when ``traceback_lines``.

    ``redact`` runs before long output is cut, so that a cut never keeps half a secret.
    """
    lines: list[str] = []
    for out in cell.get("outputs") or ():
        kind = out.get("output_type")
        if kind == "stream":
            lines += _ANSI.sub("", _text(out.get("text"))).splitlines()
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            if "text/plain" in data:
                lines += _ANSI.sub("", _text(data["text/plain"])).splitlines()
            elif data:
                lines.append(f"[{', '.join(sorted(data))} output]")
        elif kind == "error":
            summary = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".rstrip(": ")
            trace = [ln for part in out.get("traceback") or () for ln in _ANSI.sub("", part).splitlines()]
            trace = [ln for ln in trace if ln.strip()]
            if traceback_lines and trace:
                lines += (["…"] if len(trace) > traceback_lines else []) + trace[-traceback_lines:]
                if summary not in trace[-1]:
                    lines.append(summary)
            else:
                lines.append(summary)
    if not lines:
        return ""
    if redact is not None:
        lines = redact("\n".join(lines)).split("\n")
    count = cell.get("execution_count")
    header = f"# Out[{count}]:" if count is not None else "# Output:"
    return header + "\n" + _comment(_clip_lines(lines, max_chars))


def _last_error_cell(cells: Sequence[Cell]) -> int | None:
    """The cell whose error is the most recent: highest execution count; on a tie, the lowest cell."""
    best: tuple[int, int] | None = None
    for i, cell in enumerate(cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs") or ()):
            key = (cell.get("execution_count") or -1, i)
            best = key if best is None or key > best else best
    return best[1] if best else None


# The top of a context whose cells are marked or moved: the model reads it before the cells.
_MARK_NOTICE = (
    "# Cells marked (edited since it ran), (never run) or (not run since the kernel started) did "
    "not run as shown in this kernel: the names they define may not exist, or hold other values."
)
_ORDER_NOTICE = "# The cells are in the order they ran, which is not their order in the notebook."


@dataclass(frozen=True)
class _Page:
    """The cells as the context shows them: the kernel's counts, the marks, the order they ran."""

    cells: list[Cell]
    current: int | None
    marks: list[str]
    position: list[int]  # where each cell is shown: its page index unless the cells ran in another order

    @property
    def reordered(self) -> bool:
        return self.position != list(range(len(self.cells)))


def _page(context: NotebookContext) -> _Page:
    cells = list(context.cells)
    runs = [cell.get("run") if isinstance(cell.get("run"), CellRun) else None for cell in cells]
    # The kernel's count: the page's may be from another kernel, or cleared while the cell ran.
    cells = [
        cell if run is None else {**cell, "execution_count": run.count if run.ran_here else None}
        for cell, run in zip(cells, runs, strict=True)
    ]
    current = context.current if context.current is not None and 0 <= context.current < len(cells) else None
    marks = [run.mark if run is not None else "" for run in runs]
    return _Page(cells, current, marks, _run_order(cells, runs, current))


def _run_order(cells: Sequence[Cell], runs: Sequence[CellRun | None], current: int | None) -> list[int]:
    """Each cell's place in the order the cells ran; the page order when they ran in it.

    Cells that did not run here keep their neighbours: markdown goes just before the next cell
    below it that ran (a heading stays with its code), code just after the one above it (a draft
    stays where it was written); the current cell, unless it ran as it is, comes last: it is what
    runs next.
    """
    counts = [run.count if run is not None and run.ran_here else None for run in runs]
    ran = [c for c in counts if c is not None]
    if all(a < b for a, b in zip(ran, ran[1:], strict=False)):
        return list(range(len(cells)))
    current_run = runs[current] if current is not None else None
    if current is not None and current_run is not None and current_run.state == "edited":
        counts[current] = None  # it goes last with what runs next, not where its old version ran
    below: list[int | None] = []  # the count of the nearest cell at or below that ran
    for count in reversed(counts):
        below.append(count if count is not None else (below[-1] if below else None))
    below.reverse()
    keys: list[tuple[float, int, int]] = []
    above = 0
    for i, count in enumerate(counts):
        if count is not None:
            above = count
            keys.append((count, 1, i))
        elif i == current:
            keys.append((math.inf, 0, i))
        elif cells[i].get("cell_type", "code") != "code" and (nearest := below[i]) is not None:
            keys.append((nearest, 0, i))
        else:
            keys.append((above, 2, i))
    position = [0] * len(cells)
    for place, i in enumerate(sorted(range(len(cells)), key=keys.__getitem__)):
        position[i] = place
    return position


# ---------------------------------------------------------------------------------------------
# Allocation


@dataclass(eq=False)  # identity: two identical cells are still two pieces
class _Piece:
    rank: tuple  # allocation order: lower goes in first
    block: tuple  # (side, position): pieces with the same block render together
    part: int  # order inside the block
    text: str
    item: ContextItem
    needs: "_Piece | None" = None
    mark: str = ""  # the cell's run mark, for the notice at the top and the report's notes
    cell: int = -1  # the cell's page index (-1: a variable)


def _counter(count_tokens: CountTokens) -> CountTokens:
    return lambda text: count_tokens(text) if text else 0


# A first guess of how many characters a token covers: the search for the part of a huge cell
# that fits starts there, so that only text about the size of the answer is ever counted.
_CHARS_PER_TOKEN_GUESS = 4
_NEWLINE = re.compile("\n")


def _bracket_fit(size: int, fits: Callable[[int], bool], guess: int) -> tuple[int, int]:
    """(lo, hi) with ``fits(lo)`` and not ``fits(hi)``, ``hi <= 2 * lo + 1``; ``hi = size + 1`` when all fits.

    Doubles (or halves) from ``guess``: for a megabyte cell and a budget of a few thousand
    tokens, the texts counted are a few times the budget, never the whole cell.
    """
    k = max(1, min(size, guess))
    if fits(k):
        while k < size:
            nxt = min(size, 2 * k)
            if not fits(nxt):
                return k, nxt
            k = nxt
        return size, size + 1
    while k > 1:
        nxt = k // 2
        if fits(nxt):
            return nxt, k
        k = nxt
    return 0, 1


def _first_true(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The least ``i`` in ``[lo, hi)`` with ``ok(i)`` (``ok`` monotone: False…True), else ``hi``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _tail_within(text: str, limit: int, count: CountTokens) -> str:
    """The longest tail of ``text`` with at most ``limit`` tokens, from a line start if possible."""
    if limit <= 0:
        return ""
    n = len(text)
    fits = lambda start: count(text[start:]) <= limit  # noqa: E731
    kept, over = _bracket_fit(n, lambda size: fits(n - size), limit * _CHARS_PER_TOKEN_GUESS)
    if over > n:
        return text
    # Tails from a start at or before n - over do not fit: only line starts after it can.
    starts = [m.end() for m in _NEWLINE.finditer(text, n - over, n - 1)]
    i = _first_true(0, len(starts), lambda j: fits(starts[j]))
    if i < len(starts):
        start = starts[i]
    else:  # even the last line is too long: cut inside it
        start = _first_true(n - over + 1, n - kept, fits)
    while start < n and not fits(start):  # counts need not be monotonic
        start += 1
    return text[start:]


def _head_within(text: str, limit: int, count: CountTokens) -> str:
    """The longest head of ``text`` with at most ``limit`` tokens, up to a line end if possible."""
    if limit <= 0:
        return ""
    fits = lambda end: count(text[:end]) <= limit  # noqa: E731
    kept, over = _bracket_fit(len(text), fits, limit * _CHARS_PER_TOKEN_GUESS)
    if over > len(text):
        return text
    # Heads up to `kept` fit and up to `over` do not: the last line end before `over` that fits.
    ends = [m.end() for m in _NEWLINE.finditer(text, 0, over - 1)]
    if ends:
        i = _first_true(0, len(ends), lambda j: fits(ends[len(ends) - 1 - j]))  # from the last line end back
        end = ends[len(ends) - 1 - i] if i < len(ends) else 0
    else:
        end = 0
    if not end:  # not even the first line fits: cut inside it
        end = _first_true(kept + 1, over, lambda k: not fits(k)) - 1
    while end > 0 and not fits(end):
        end -= 1
    return text[:end]


_VARIABLES_BLOCK = (0, -1)  # before the cursor, before every cell


def _tier(i: int, current: int | None, error_cell: int | None, distance: int, settings: ContextSettings) -> int:
    if i == current:
        return 2
    if i == error_cell:
        return 3
    return 4 if distance <= settings.near_cells else 6


def _source_piece(
    page: _Page, i: int, rank: tuple, block: tuple, redact: Callable[[str], str], count: CountTokens
) -> _Piece:
    cell, mark = page.cells[i], page.marks[i]
    text = redact(_render_source(cell, mark))
    label = f"cell {i + 1}" + (" (markdown)" if cell.get("cell_type", "code") != "code" else "")
    label += f" ({mark})" if mark else ""
    item = ContextItem("cell", label, count(text + _BLOCK_SEP))
    return _Piece(rank + (0,), block, 0, text, item, mark=mark, cell=i)


def _outputs_piece(
    page: _Page,
    i: int,
    rank: tuple,
    block: tuple,
    source: _Piece | None,
    error_cell: int | None,
    settings: ContextSettings,
    redact: Callable[[str], str],
    count: CountTokens,
) -> _Piece | None:
    cell = page.cells[i]
    if not settings.include_outputs or not cell.get("outputs"):
        return None
    lines = settings.max_traceback_lines if i == error_cell else 0
    text = render_outputs(cell, max_chars=settings.max_output_chars, traceback_lines=lines, redact=redact)
    if not text:
        return None
    item = ContextItem("outputs", f"outputs of cell {i + 1}", count(text + "\n"))
    return _Piece(rank + (1,), block, 1, text, item, needs=source, cell=i)


def _cell_pieces(
    page: _Page, settings: ContextSettings, redact: Callable[[str], str], count: CountTokens, use_suffix: bool
) -> list[_Piece]:
    pieces: list[_Piece] = []
    error_cell = _last_error_cell(page.cells)
    current = page.current
    anchor = current if current is not None else len(page.cells)
    # Before or after the cursor by where a cell is shown (the order it ran, if not the page's).
    shown_at = page.position[current] if current is not None else len(page.cells)
    for i, cell in enumerate(page.cells):
        after = page.position[i] > shown_at or i == current
        if after and not use_suffix:
            continue
        distance = abs(i - anchor)
        rank = (_tier(i, current, error_cell, distance, settings), distance, 1 if i > anchor else 0)
        block = (1 if after else 0, page.position[i])
        source = None
        if i != current:
            if not _text(cell.get("source")).strip():
                continue
            source = _source_piece(page, i, rank, block, redact, count)
            pieces.append(source)
        outputs = _outputs_piece(page, i, rank, block, source, error_cell, settings, redact, count)
        if outputs is not None:
            pieces.append(outputs)
    return pieces


def _variable_pieces(
    context: NotebookContext, mentioned: set[str], redact: Callable[[str], str], count: CountTokens
) -> tuple[list[_Piece], list[ContextItem], list[str]]:
    settings = context.settings
    if not settings.include_variables or not context.namespace:
        return [], [], []
    summaries, withheld = summarize_namespace(
        context.namespace, deny=settings.deny, mentioned=mentioned, max_repr=settings.max_repr_chars, redact=redact
    )
    pieces, over = [], []
    for n, summary in enumerate(summaries):
        text = redact(_comment([summary.line]))
        item = ContextItem("variable", summary.name, count(text + "\n"))
        if n < settings.max_variables:
            pieces.append(_Piece((5, n), _VARIABLES_BLOCK, n, text, item))
        else:
            over.append(item)
    notes = [f"withheld by the deny-list: {', '.join(withheld)}"] if withheld else []
    return pieces, over, notes


@dataclass
class _Fit:
    """The current cell's part of the context, as much of it as fits so far."""

    head: str  # its "# In[n]:" line; "" for markdown or once cut
    mark: str  # the run mark shown in that line (chat only)
    prefix: str
    suffix: str


def _fit_current(page: _Page, prefix: str, suffix: str, budget: int, count: CountTokens, mark_current: bool) -> _Fit:
    current = page.current
    cell = page.cells[current] if current is not None else None
    code = cell if cell is not None and cell.get("cell_type", "code") == "code" else None
    is_code = code is not None
    mark = page.marks[current] if current is not None and is_code and mark_current else ""
    head = _cell_header(code, "current cell" if mark_current else "", mark) + "\n" if code is not None else ""
    # Neither is counted whole: a huge cell costs about as much as the budget it is cut to.
    kept_prefix = _tail_within(prefix, budget, count)
    head = head if len(kept_prefix) == len(prefix) else ""
    used = count(head + kept_prefix)
    kept_suffix = _head_within(suffix, (budget - used) // 2, count)
    return _Fit(head, mark if head else "", kept_prefix, kept_suffix)


def _top_lines(piece: _Piece, reordered: bool) -> list[str]:
    """The lines at the top of the context that ``piece`` needs: the first piece chosen pays for them."""
    needed = (
        (_VARIABLES_HEADER, piece.block == _VARIABLES_BLOCK),
        (_MARK_NOTICE, bool(piece.mark)),
        (_ORDER_NOTICE, reordered and piece.item.kind == "cell"),
    )
    return [line for line, needs in needed if needs]


def _allocate(
    pieces: list[_Piece], remaining: int, count: CountTokens, reordered: bool, paid: set[str]
) -> tuple[list[_Piece], list[ContextItem]]:
    """Pieces by rank, each that fits with what it needs; the rest are cut."""
    chosen: list[_Piece] = []
    cut: list[ContextItem] = []
    for piece in sorted(pieces, key=lambda p: p.rank):
        lines = [line for line in _top_lines(piece, reordered) if line not in paid]
        cost = piece.item.tokens + sum(count(line + "\n") for line in lines)
        if (piece.needs is None or piece.needs in chosen) and cost <= remaining:
            chosen.append(piece)
            remaining -= cost
            paid.update(lines)
        else:
            cut.append(piece.item)
    return chosen, cut


def _notices(fit: _Fit, chosen: list[_Piece], reordered: bool) -> list[str]:
    marked = bool(fit.mark) or any(p.mark for p in chosen)
    moved = reordered and any(p.item.kind == "cell" for p in chosen)
    return [line for line, shown in ((_MARK_NOTICE, marked), (_ORDER_NOTICE, moved)) if shown]


def _render_blocks(pieces: list[_Piece]) -> list[str]:
    blocks: dict[tuple, list[_Piece]] = {}
    for piece in sorted(pieces, key=lambda p: (p.block, p.part)):
        blocks.setdefault(piece.block, []).append(piece)
    rendered = []
    for key, group in blocks.items():
        body = "\n".join(p.text for p in group)
        rendered.append(f"{_VARIABLES_HEADER}\n{body}" if key == _VARIABLES_BLOCK else body)
    return rendered


def _assemble(fit: _Fit, chosen: list[_Piece], reordered: bool) -> tuple[str, str]:
    notices = _notices(fit, chosen, reordered)
    before = (["\n".join(notices)] if notices else []) + _render_blocks([p for p in chosen if p.block[0] == 0])
    after = _render_blocks([p for p in chosen if p.block[0] == 1])
    prefix_text = "".join(b + _BLOCK_SEP for b in before) + fit.head + fit.prefix
    if not after:
        return prefix_text, fit.suffix
    trailing = len(fit.suffix) - len(fit.suffix.rstrip("\n"))
    return prefix_text, fit.suffix + "\n" * max(0, 2 - trailing) + _BLOCK_SEP.join(after)


def _shrink_to_budget(
    fit: _Fit, chosen: list[_Piece], cut: list[ContextItem], reordered: bool, budget: int, count: CountTokens
) -> tuple[str, str, int]:
    """(prefix, suffix, their tokens) within ``budget``: counts of pieces need not add up exactly,
    so the assembled text is re-counted and the lowest-ranked pieces (then the current cell) give way."""
    while True:
        prefix_text, suffix_text = _assemble(fit, chosen, reordered)
        total = count(prefix_text) + count(suffix_text)
        excess = total - budget
        if excess <= 0:
            return prefix_text, suffix_text, total
        if chosen:
            dropped = chosen.pop()
            cut += [dropped.item] + [p.item for p in chosen if p.needs is dropped]
            chosen[:] = [p for p in chosen if p.needs is not dropped]
        elif fit.suffix:
            fit.suffix = _head_within(fit.suffix, count(fit.suffix) - excess, count)
        elif fit.head:
            fit.head, fit.mark = "", ""
        else:
            fit.prefix = _tail_within(fit.prefix, count(fit.prefix) - excess, count)


def _run_notes(fit: _Fit, chosen: list[_Piece], reordered: bool) -> list[str]:
    """What the preview says about the marks and the order of the cells that went in."""
    notes = (
        ["cells shown in the order they ran, not in the notebook's order"]
        if _ORDER_NOTICE in _notices(fit, chosen, reordered)
        else []
    )
    marked: dict[str, list[str]] = {fit.mark: ["the current cell"]} if fit.mark else {}
    for piece in sorted(chosen, key=lambda p: p.cell):
        if piece.mark and piece.item.kind == "cell":
            marked.setdefault(piece.mark, []).append(f"cell {piece.cell + 1}")
    notes += [
        f"{mark}: {', '.join(cells)} (the names defined there may not exist in the kernel)"
        for mark, cells in marked.items()
    ]
    return notes


def build_context(
    prefix: str,
    suffix: str = "",
    context: NotebookContext | None = None,
    *,
    budget: int,
    count_tokens: CountTokens,
    use_suffix: bool = True,
    mark_current: bool = False,
    redact: Callable[[str], str] | None = None,
) -> AllocatedContext:
    """Fit the current cell and as much notebook as possible into ``budget`` tokens.

    ``prefix``/``suffix`` are the current cell's text around the cursor; ``use_suffix=False``
    (prefix-continuation prompts) leaves out everything after the cursor. ``mark_current``
    labels the current cell for chat (with its run mark). ``redact`` defaults to
    :func:`prompt_redactor` of the context. See the module docstring for the rules.
    """
    context = context or NotebookContext()
    count = _counter(count_tokens)
    budget = max(0, budget)
    page = _page(context)
    redact = prompt_redactor(context) if redact is None else redact
    prefix = redact(prefix)
    suffix = redact(suffix) if use_suffix else ""
    fit = _fit_current(page, prefix, suffix, budget, count, mark_current)

    mentioned = set(_IDENTIFIER.findall(prefix + suffix))
    pieces = _cell_pieces(page, context.settings, redact, count, use_suffix)
    var_pieces, cut_vars, notes = _variable_pieces(context, mentioned, redact, count)
    if not use_suffix:
        notes.append("prefix only: the text after the cursor is not part of this prompt")

    paid = {_MARK_NOTICE} if fit.mark else set()
    remaining = budget - count(fit.head + fit.prefix) - count(fit.suffix) - sum(count(line + "\n") for line in paid)
    chosen, cut = _allocate(pieces + var_pieces, remaining, count, page.reordered, paid)
    cut += cut_vars
    prefix_text, suffix_text, total = _shrink_to_budget(fit, chosen, cut, page.reordered, budget, count)

    included = [
        ContextItem(
            "current", "current cell, before the cursor", count(fit.head + fit.prefix), truncated=fit.prefix != prefix
        )
    ]
    if suffix:
        included.append(
            ContextItem("current", "current cell, after the cursor", count(fit.suffix), truncated=fit.suffix != suffix)
        )
    included += [p.item for p in chosen]
    notes += _run_notes(fit, chosen, page.reordered)
    report = ContextReport(budget, total, tuple(included), tuple(cut), tuple(notes))
    return AllocatedContext(prefix_text, suffix_text, report)
