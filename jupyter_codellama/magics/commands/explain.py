"""``%codellama explain [In[n]]``: explain a cell (default: the previous one)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ...prompts.requests import ExplainRequest
from .. import options
from ..command import Command
from ..history import cell_source, notebook_context
from ..model import ensure_model
from ..parsing import cell_task_parser
from ..preview import preview
from ..stream import stream

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return cell_task_parser("explain", "Explain a cell.", insert_help="none: explain only shows its answer")


def run(magic: CodeLlamaMagics, args: argparse.Namespace):
    if args.insert not in (None, "none"):
        raise UsageError("explain shows its answer; it inserts nothing.")
    number, source = cell_source(magic.shell, args.cell)
    max_new = options.max_new_tokens(magic, args)
    ensure_model(magic, None)
    context = notebook_context(magic.shell, "notebook")
    spec = ExplainRequest(
        source=source, label=f"In[{number}]", context=context, namespace=context.namespace, max_new_tokens=max_new
    )
    if args.preview:
        return preview(magic, spec)
    stream(
        magic,
        "chat",
        spec,
        max_new_tokens=max_new,
        temperature=options.temperature(magic, args),
        meta={"explain": number},
    )
    return None


COMMAND = Command(parser, run)
