"""``%codellama complete [In[n]]`` / ``%%codellama complete``: fill a cell's <FILL_ME> marker."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.display import Markdown, display

from ...prompts.requests import InfillRequest
from ...session import user_variables
from .. import options
from ..command import Command
from ..history import cell_source
from ..insert import insert
from ..model import ensure_model
from ..parsing import cell_task_parser
from ..preview import preview
from ..stream import stream

if TYPE_CHECKING:
    from .. import CodeLlamaMagics

FILL_ME = "<FILL_ME>"
_DEFAULT_MAX_NEW_TOKENS = 256


def parser():
    return cell_task_parser(
        "complete",
        f"Fill the {FILL_ME} marker of a cell (%%codellama complete: of the "
        "cell's body) by infilling, or by prefix continuation for models without it.",
        insert_help="where the filled cell goes (default: below)",
        max_new_help=f"longest middle, in tokens (default: {_DEFAULT_MAX_NEW_TOKENS})",
    )


def run(magic: CodeLlamaMagics, args: argparse.Namespace):
    number, code = cell_source(magic.shell, args.cell)
    return _fill(magic, args, code, f"In[{number}]")


def run_cell(magic: CodeLlamaMagics, args: argparse.Namespace, body: str):
    return _fill(magic, args, body, "this cell")


def _fill(magic: CodeLlamaMagics, args: argparse.Namespace, code: str, where: str):
    if code.count(FILL_ME) != 1:
        raise UsageError(
            f"{where} must contain exactly one {FILL_ME} marker where the code should go, "
            f"e.g.\ndef mean(xs):\n    {FILL_ME}\n    return result"
        )
    prefix, suffix = code.split(FILL_ME)
    max_new = options.option(args, "max_new_tokens", _DEFAULT_MAX_NEW_TOKENS, "complete's default")
    ensure_model(magic, None)
    spec = InfillRequest(prefix=prefix, suffix=suffix, namespace=user_variables(magic.shell), max_new_tokens=max_new)
    if args.preview:
        return preview(magic, spec)
    result = stream(
        magic, "generate", spec, max_new_tokens=max_new, temperature=0.0, meta={"complete": where}, show=False
    )
    if result is None:
        return None
    from ...prompts import clean_completion

    infilling = bool(magic.engine.status().get("supports_infill"))
    middle = result.text if infilling and result.stop_reason == "eos" else clean_completion(result.text, prefix, suffix)
    filled = prefix + middle + suffix
    how = "infilling" if infilling else "prefix continuation (this model has no infilling)"
    display(
        Markdown(f"```python\n{filled}\n```\n\n*filled by {how}: {len(middle)} characters*"),
        metadata={"jupyter_codellama": {"complete": where, "middle": middle, "stop_reason": result.stop_reason}},
    )
    insert(magic.shell, filled, args.insert or "below")
    return None


COMMAND = Command(parser, run, run_cell)
