"""``%%codellama`` and ``%codellama``: the interface that works in every front end.

    %%codellama [options]        the cell body is the request; the answer streams as Markdown,
                                 its code goes into a new cell below
    %codellama SUBCOMMAND ...    load, status, models, unload, explain, fix, complete, edit, chat,
                                 config, reset, help

Each subcommand is a module of ``commands/`` that owns its parser and its run function; the
steps they share (streaming, model loading, previews, the history as context, insertion) are
modules of this package. Heavy imports (torch, transformers) happen on the first request, never
at ``%load_ext``.
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.utils.process import arg_split

from ..config import get_config
from ..engine import EngineUser
from .commands import run_cell, run_line

__all__ = ["CodeLlamaMagics"]


@magics_class
class CodeLlamaMagics(EngineUser, Magics):
    """What the commands work with: the shell, the engine (``EngineUser``) and the settings."""

    def __init__(self, shell=None, engine=None) -> None:
        super().__init__(shell)
        self._engine = engine

    @property
    def settings(self):
        return get_config()

    @line_cell_magic
    def codellama(self, line: str, cell: str | None = None) -> Any:
        """Code Llama in the kernel. ``%codellama help`` lists everything."""
        words = arg_split(line, posix=True)
        if cell is None:
            return run_line(self, words)
        return run_cell(self, words, cell)
