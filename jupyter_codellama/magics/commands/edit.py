"""``%codellama edit In[n] "instruction"``: rewrite an executed cell (or some of its lines) as
the instruction says. The answer streams, then a unified diff; the edited cell goes into a new
cell below (or replaces the magic's cell). Nothing runs: the user reviews, then runs it."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.display import display

from ...prompts.edit import EditProposal, unified_diff
from ...prompts.requests import EditRequest
from .. import options
from ..command import Command
from ..history import cell_source, notebook_context
from ..insert import insert
from ..model import ensure_model
from ..parsing import INSERT_CHOICES, MAX_NEW_TOKENS_HELP, PREVIEW_HELP, new_parser
from ..preview import preview
from ..stream import stream

if TYPE_CHECKING:
    from .. import CodeLlamaMagics

_LINES = re.compile(r"^(\d+)(?:-(\d+))?$")
_USAGE = '%codellama edit In[n] "instruction"'


def parser():
    p = new_parser(
        "%codellama edit",
        "Rewrite an executed cell as the instruction says: the answer streams, "
        "then a unified diff; the edited cell goes into a new cell below. Nothing runs.",
    )
    p.add_argument("cell", metavar="CELL", help="In[n] or n: the executed cell to edit")
    p.add_argument(
        "instruction",
        nargs="*",
        metavar="INSTRUCTION",
        help='how to change it, e.g. "add type hints" (quotes optional)',
    )
    p.add_argument("--lines", metavar="A-B", help="rewrite only lines A to B of the cell (from 1; A alone: one line)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help=MAX_NEW_TOKENS_HELP)
    p.add_argument("--temperature", type=float, metavar="T", help="0 = greedy (default: CodeLlama.temperature)")
    p.add_argument(
        "--insert",
        choices=INSERT_CHOICES,
        help="below (default): the edited cell in a new cell; replace: in place of this cell; none: only show the diff",
    )
    p.add_argument("--preview", action="store_true", help=PREVIEW_HELP)
    return p


def run(magic: CodeLlamaMagics, args: argparse.Namespace):
    number, source = cell_source(magic.shell, args.cell)
    selection = line_selection(source, args.lines, f"In[{number}]") if args.lines else None
    max_new, temperature = options.max_new_tokens(magic, args), options.temperature(magic, args)
    context = notebook_context(magic.shell, "notebook")
    try:
        spec = EditRequest(
            source=source,
            instruction=" ".join(args.instruction),
            selection=selection,
            label=f"In[{number}]",
            context=context,
            namespace=context.namespace,
            max_new_tokens=max_new,
        )
    except ValueError as exc:
        raise UsageError(f"{exc} Use: {_USAGE}") from None
    ensure_model(magic, None)
    if args.preview:
        return preview(magic, spec)
    proposal = EditProposal(spec)
    result = stream(
        magic,
        "chat",
        proposal.build,
        max_new_tokens=max_new,
        temperature=temperature,
        meta={"edit": number, "instruction": spec.instruction, "lines": args.lines},
    )
    if result is not None:
        _propose(magic, source, proposal.source(result.text), number, args.insert)
    return None


def _propose(magic: CodeLlamaMagics, old: str, new: str, number: int, where: str | None) -> None:
    """Show what the edit changes, then put the edited cell where the user asked (never run)."""
    diff = unified_diff(old, new, f"In[{number}]")
    if not diff:
        print(f"(The answer leaves In[{number}] as it was: nothing was inserted.)")
        return
    display(DiffView(diff), metadata={"jupyter_codellama": {"edit": number, "edited": new}})
    insert(magic.shell, new, where or "below")


def line_selection(source: str, lines: str, label: str) -> tuple[int, int]:
    """``A-B`` (or ``A``), 1-based and inclusive, as character offsets of ``source``."""
    m = _LINES.match(lines.strip())
    if not m:
        raise UsageError(
            f"--lines needs A-B, line numbers of the cell counted from 1 (e.g. --lines 2-5), got {lines!r}."
        )
    first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    cell_lines = source.splitlines(keepends=True)
    if not 1 <= first <= last <= len(cell_lines):
        raise UsageError(
            f"--lines {lines}: {label} has {len(cell_lines)} line{'s' * (len(cell_lines) != 1)}; "
            f"use A-B with 1 <= A <= B <= {len(cell_lines)}."
        )
    start = sum(map(len, cell_lines[: first - 1]))
    return start, start + sum(map(len, cell_lines[first - 1 : last]))


class DiffView:
    """A unified diff: Markdown (a ``diff`` block) where rich output shows, plain text in a terminal."""

    def __init__(self, diff: str) -> None:
        self.diff = diff

    def _repr_markdown_(self) -> str:
        fence = "```"
        while fence in self.diff:  # a cell may hold fences of its own
            fence += "`"
        return f"{fence}diff\n{self.diff}{fence}"

    def __repr__(self) -> str:
        return self.diff.rstrip("\n")


COMMAND = Command(parser, run)
