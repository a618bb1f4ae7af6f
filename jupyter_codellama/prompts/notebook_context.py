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
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Mapping, Sequence, TypedDict

from .redact import DEFAULT_DENY, Redactor
from .variables import summarize_namespace

__all__ = [
    "AllocatedContext",
    "Cell",
    "CellOutput",
    "ContextItem",
    "ContextReport",
    "ContextSettings",
    "CountTokens",
    "NotebookContext",
    "approximate_tokens",
    "build_context",
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
    source: str | list[str]
    outputs: list[CellOutput]
    execution_count: int | None


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


def _comment(lines: Sequence[str]) -> str:
    return "\n".join(f"# {line}" if line.strip() else "#" for line in lines)


def _cell_header(cell: Cell, note: str = "") -> str:
    count = cell.get("execution_count")
    return f"# In[{count if count is not None else ' '}]:{note}"


def _render_source(cell: Cell) -> str:
    source = _text(cell.get("source")).strip("\n")
    if cell.get("cell_type", "code") == "code":
        return f"{_cell_header(cell)}\n{source}"
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
    for ln in reversed(lines[len(head):]):
        if size + len(ln) + 1 > max_chars // 3:
            break
        tail.insert(0, ln)
        size += len(ln) + 1
    cut = len(lines) - len(head) - len(tail)
    return head + [f"… ({cut} lines cut) …"] + tail


def render_outputs(cell: Cell, *, max_chars: int = 600, traceback_lines: int = 0,
                   redact: Callable[[str], str] | None = None) -> str:
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


def _cell_pieces(
    cells: Sequence[Cell], current: int | None, settings: ContextSettings, redact: Callable[[str], str],
    count: CountTokens, use_suffix: bool,
) -> list[_Piece]:
    pieces: list[_Piece] = []
    error_cell = _last_error_cell(cells)
    anchor = current if current is not None else len(cells)
    for i, cell in enumerate(cells):
        after = i > anchor or (i == current)
        if after and not use_suffix:
            continue
        distance, side = abs(i - anchor), (1 if i > anchor else 0)
        if i == current:
            tier = 2
        elif i == error_cell:
            tier = 3
        elif distance <= settings.near_cells:
            tier = 4
        else:
            tier = 6
        block = (1 if after else 0, i)
        source = None
        if i != current:
            if not _text(cell.get("source")).strip():
                continue
            text = redact(_render_source(cell))
            label = f"cell {i + 1}" + (" (markdown)" if cell.get("cell_type", "code") != "code" else "")
            source = _Piece(
                (tier, distance, side, 0), block, 0, text, ContextItem("cell", label, count(text + _BLOCK_SEP))
            )
            pieces.append(source)
        if settings.include_outputs and cell.get("outputs"):
            lines = settings.max_traceback_lines if i == error_cell else 0
            text = render_outputs(cell, max_chars=settings.max_output_chars, traceback_lines=lines, redact=redact)
            if text:
                item = ContextItem("outputs", f"outputs of cell {i + 1}", count(text + "\n"))
                pieces.append(_Piece((tier, distance, side, 1), block, 1, text, item, needs=source))
    return pieces


def _variable_pieces(context: NotebookContext, mentioned: set[str], redact: Callable[[str], str],
                     count: CountTokens) -> tuple[list[_Piece], list[ContextItem], list[str]]:
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
            pieces.append(_Piece((5, n), (0, -1), n, text, item))
        else:
            over.append(item)
    notes = [f"withheld by the deny-list: {', '.join(withheld)}"] if withheld else []
    return pieces, over, notes


def _render_blocks(pieces: list[_Piece]) -> list[str]:
    blocks: dict[tuple, list[_Piece]] = {}
    for piece in sorted(pieces, key=lambda p: (p.block, p.part)):
        blocks.setdefault(piece.block, []).append(piece)
    rendered = []
    for key, group in blocks.items():
        body = "\n".join(p.text for p in group)
        rendered.append(f"{_VARIABLES_HEADER}\n{body}" if key == (0, -1) else body)
    return rendered


def _assemble(head: str, prefix: str, suffix: str, chosen: list[_Piece]) -> tuple[str, str]:
    before = _render_blocks([p for p in chosen if p.block[0] == 0])
    after = _render_blocks([p for p in chosen if p.block[0] == 1])
    prefix_text = "".join(b + _BLOCK_SEP for b in before) + head + prefix
    if not after:
        return prefix_text, suffix
    trailing = len(suffix) - len(suffix.rstrip("\n"))
    return prefix_text, suffix + "\n" * max(0, 2 - trailing) + _BLOCK_SEP.join(after)


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
    labels the current cell for chat. ``redact`` defaults to :func:`prompt_redactor` of the
    context. See the module docstring for the rules.
    """
    context = context or NotebookContext()
    settings = context.settings
    count = _counter(count_tokens)
    budget = max(0, budget)
    cells = list(context.cells)
    current = context.current if context.current is not None and 0 <= context.current < len(cells) else None
    redact = prompt_redactor(context) if redact is None else redact
    prefix = redact(prefix)
    suffix = redact(suffix) if use_suffix else ""

    is_code = current is not None and cells[current].get("cell_type", "code") == "code"
    head = _cell_header(cells[current], "  (current cell)" if mark_current else "") + "\n" if is_code else ""
    # Neither is counted whole: a huge cell costs about as much as the budget it is cut to.
    kept_prefix = _tail_within(prefix, budget, count)
    head = head if len(kept_prefix) == len(prefix) else ""
    used = count(head + kept_prefix)
    kept_suffix = _head_within(suffix, (budget - used) // 2, count)

    mentioned = set(_IDENTIFIER.findall(prefix + suffix))
    pieces = _cell_pieces(cells, current, settings, redact, count, use_suffix)
    var_pieces, cut_vars, notes = _variable_pieces(context, mentioned, redact, count)
    pieces += var_pieces
    if not use_suffix:
        notes.append("prefix only: the text after the cursor is not part of this prompt")

    remaining = budget - used - count(kept_suffix)
    chosen: list[_Piece] = []
    cut: list[ContextItem] = []
    header_cost = count(_VARIABLES_HEADER + "\n")
    for piece in sorted(pieces, key=lambda p: p.rank):
        is_variable = piece.block == (0, -1)
        cost = piece.item.tokens + (header_cost if is_variable else 0)
        if (piece.needs is None or piece.needs in chosen) and cost <= remaining:
            chosen.append(piece)
            remaining -= cost
            header_cost = 0 if is_variable else header_cost
        else:
            cut.append(piece.item)
    cut += cut_vars

    while True:
        prefix_text, suffix_text = _assemble(head, kept_prefix, kept_suffix, chosen)
        total = count(prefix_text) + count(suffix_text)
        excess = total - budget
        if excess <= 0:
            break
        if chosen:
            dropped = chosen.pop()
            dependants = [p for p in chosen if p.needs is dropped]
            chosen = [p for p in chosen if p.needs is not dropped]
            cut += [dropped.item] + [p.item for p in dependants]
        elif kept_suffix:
            kept_suffix = _head_within(kept_suffix, count(kept_suffix) - excess, count)
        elif head:
            head = ""
        else:
            kept_prefix = _tail_within(kept_prefix, count(kept_prefix) - excess, count)

    included = [ContextItem("current", "current cell, before the cursor", count(head + kept_prefix),
                            truncated=kept_prefix != prefix)]
    if suffix:
        included.append(ContextItem("current", "current cell, after the cursor", count(kept_suffix),
                                    truncated=kept_suffix != suffix))
    included += [p.item for p in chosen]
    report = ContextReport(budget, total, tuple(included), tuple(cut), tuple(notes))
    return AllocatedContext(prefix_text, suffix_text, report)
