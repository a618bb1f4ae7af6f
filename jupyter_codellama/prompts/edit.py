"""Edit a cell by instruction: the prompt, and the answer turned back into the cell's new source.

Two prompt shapes, chosen by what the model was trained on:

* chat models (Code Llama Instruct, templates): the cell (or the selected part of it, with the
  whole cell for reference) and the instruction, answered with the rewritten code in one block;
* base models that fill in the middle: a "rewrite the middle" FIM prompt. The code before the
  selection is the prefix, the code after it the suffix, and the old part goes before the hole
  as a comment with the instruction, so the middle the model writes is the new part.

The edited source is always ``before + new part + after``: text outside the selection never
changes, whatever the model writes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from .postprocess import extract_code

__all__ = ["EditTarget", "edit_question", "edited_source", "fim_parts", "split_selection", "unified_diff"]


@dataclass(frozen=True)
class EditTarget:
    """A cell's source cut at the selection: only ``part`` is rewritten."""

    before: str
    part: str
    after: str

    @property
    def whole(self) -> bool:
        return not self.before and not self.after


def split_selection(source: str, selection: tuple[int, int] | None) -> EditTarget:
    """Cut ``source`` at ``selection`` (character offsets, end exclusive); None: the whole cell."""
    if selection is None:
        return EditTarget("", source, "")
    start, end = selection
    if not 0 <= start <= end <= len(source):
        raise ValueError(f"The selection {start}..{end} is outside the cell ({len(source)} characters).")
    if start == end:
        raise ValueError("The selection is empty: select the code to edit, or edit the whole cell.")
    return EditTarget(source[:start], source[start:end], source[end:])


def edit_question(target: EditTarget, instruction: str, label: str) -> str:
    """The chat wording of an edit request."""
    instruction = instruction.strip()
    if target.whole:
        return (
            f"Rewrite this notebook cell ({label}) as follows: {instruction}\n\n"
            f"{_fenced(target.part)}\n\nAnswer with the whole rewritten cell in one ```python "
            "block, then at most one sentence on what changed."
        )
    whole = target.before + target.part + target.after
    return (
        f"This is a notebook cell ({label}):\n\n{_fenced(whole)}\n\n"
        f"Rewrite only this part of it as follows: {instruction}\n\n{_fenced(target.part)}\n\n"
        "Answer with the rewritten part only, in one ```python block, then at most one sentence on "
        "what changed."
    )


def fim_parts(target: EditTarget, instruction: str) -> tuple[str, str]:
    """(prefix, suffix) of the "rewrite the middle" infilling prompt."""
    indent = _indent_of(target.part)
    old = "\n".join(
        f"{indent}# {line[len(indent) :]}" if line.strip() else f"{indent}#"
        for line in target.part.rstrip("\n").splitlines()
    )
    task = " ".join(instruction.split())
    prefix = f"{target.before}{indent}# Before:\n{old}\n{indent}# After ({task}):\n"
    suffix = target.after if target.after.startswith("\n") or not target.after else "\n" + target.after
    return prefix, suffix


def edited_source(target: EditTarget, answer: str, *, fenced: bool) -> str:
    """The cell's new source from the model's answer.

    ``fenced``: a chat answer, whose code is its first ```python block (an answer with no code
    leaves the part as it was; later blocks are usage examples or repeats, not the cell);
    otherwise the answer is the FIM middle, taken as written.
    """
    if fenced:
        part = extract_code(_through_first_block(answer)) if "```" in answer else ""
        if not part.strip():
            return target.before + target.part + target.after
        part = _keep_line_ends(target.part, part)
    else:
        part = answer if answer.endswith("\n") or not target.part.endswith("\n") else answer + "\n"
    return target.before + part + target.after


class EditProposal:
    """An edit on its way through the engine. It builds the prompt (on the engine thread, for
    the model that answers), so it knows how the answer becomes the cell: a chat answer's code
    block, an infilled middle, or a base model's code continuing the request written as comments
    (a block if it wrote one). The magic and the comm read the edited source through it."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.target: EditTarget = spec.target
        #: How the answer reads: "chat", "infill" or "completion"; known once the prompt is built.
        self.form = "chat"

    def build(self, loaded: Any) -> Any:
        prompt = self.spec(loaded)
        self.form = {"chat": "chat", "completion": "completion"}.get(prompt.kind, "infill")
        return prompt

    def source(self, answer: str) -> str:
        """The cell's whole new source for the answer so far."""
        fenced = self.form == "chat" or (self.form == "completion" and "```" in answer)
        return edited_source(self.target, answer, fenced=fenced)


def unified_diff(old: str, new: str, label: str = "cell") -> str:
    """A unified diff of two sources ("" when they are the same)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{label} (before)",
        tofile=f"{label} (after)",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _through_first_block(answer: str) -> str:
    """The answer up to the end of its first fenced block (all of it while that block is open)."""
    opening = answer.find("```")
    body = answer.find("\n", opening)
    closing = answer.find("```", body) if body >= 0 else -1
    return answer if closing < 0 else answer[: closing + 3]


def _fenced(code: str) -> str:
    """A ```python block; the code's own last newline would show as a blank line before the fence."""
    return f"```python\n{code.rstrip(chr(10))}\n```"


def _indent_of(code: str) -> str:
    for line in code.splitlines():
        if line.strip():
            return line[: len(line) - len(line.lstrip())]
    return ""


def _keep_line_ends(old: str, new: str) -> str:
    """A fenced block loses the part's trailing newline and its first line's indentation."""
    indent = _indent_of(old)
    if indent and not _indent_of(new):
        new = "\n".join(indent + line if line.strip() else line for line in new.splitlines())
    return new + "\n" if old.endswith("\n") and not new.endswith("\n") else new
