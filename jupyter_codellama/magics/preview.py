"""``--preview``: exactly what a request would send, and what context went in or was cut."""

from __future__ import annotations

from typing import TYPE_CHECKING

from IPython.display import Markdown

from ..prompts.requests import PromptSpec, build

if TYPE_CHECKING:
    from . import CodeLlamaMagics

_FENCE = "~~~~"  # the prompt itself contains ``` fences


def preview(magic: CodeLlamaMagics, spec: PromptSpec) -> Markdown:
    from ..prompts import context_preview

    loaded = magic.engine.loaded
    # Built on the engine thread: the tokenizer must not be used beside it.
    shown = magic.engine.run_with_model(lambda model: context_preview(build(spec, model))).wait()
    rows = [
        f"- {i['kind']}: {i['label']} ({i['tokens']} tokens{', truncated' if i['truncated'] else ''})"
        for i in shown["included"]
    ]
    cut = [f"- {i['kind']}: {i['label']} ({i['tokens']} tokens)" for i in shown["cut"]]
    notes = [f"- {n}" for n in shown["notes"]]
    return Markdown(
        f"**Prompt for {loaded.spec.name}: {shown['tokens']} tokens** (window {shown['window']}, "
        f"{shown['max_new_tokens']} kept for the answer)\n\n{_FENCE}text\n{shown['text']}\n{_FENCE}\n\n"
        + ("**Context included**\n" + "\n".join(rows) + "\n\n" if rows else "")
        + ("**Cut to fit**\n" + "\n".join(cut) + "\n\n" if cut else "")
        + ("**Notes**\n" + "\n".join(notes) if notes else "")
    )
