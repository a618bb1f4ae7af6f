"""``%codellama fix [In[n]]``: explain the last error (or In[n]'s) and put corrected code in a cell."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ...prompts.requests import FixRequest
from ...session import RecordedError, get_session
from .. import options
from ..command import Command
from ..history import cell_number, notebook_context
from ..insert import insert_answer_code
from ..model import ensure_model
from ..parsing import cell_task_parser
from ..preview import preview
from ..stream import stream

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return cell_task_parser(
        "fix",
        "Explain the last error and propose a fix.",
        insert_help="where the corrected code goes (default: below)",
        cell_help="In[n] or n (default: the last cell that raised an error)",
    )


def run(magic: CodeLlamaMagics, args: argparse.Namespace):
    error = _error(args.cell)
    max_new = options.max_new_tokens(magic, args)
    ensure_model(magic, None)
    context = notebook_context(magic.shell, "notebook")
    spec = FixRequest(
        source=error.source,
        error=error.describe(),
        label=f"In[{error.execution_count}]",
        context=context,
        namespace=context.namespace,
        max_new_tokens=max_new,
    )
    if args.preview:
        return preview(magic, spec)
    result = stream(
        magic,
        "chat",
        spec,
        max_new_tokens=max_new,
        temperature=options.temperature(magic, args),
        meta={"fix": error.execution_count},
    )
    if result is not None:
        insert_answer_code(
            magic.shell,
            result.text,
            args.insert or "below",
            "(The answer holds no corrected code: nothing was inserted.)",
        )
    return None


def _error(ref: str | None) -> RecordedError:
    """The error of cell ``ref``, else the last one recorded."""
    session = get_session()
    if ref is None:
        if session.last_error is None:
            raise UsageError("No error to fix: no cell has raised an exception since %load_ext jupyter_codellama.")
        return session.last_error
    number = cell_number(ref)
    if number not in session.errors:
        raise UsageError(
            f"In[{number}] raised no error that was recorded (errors are recorded once the extension is loaded)."
        )
    return session.errors[number]


COMMAND = Command(parser, run)
