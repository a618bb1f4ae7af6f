"""``%codellama chat``: an ipywidgets chat, for front ends without the JupyterLab extension."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..command import Command
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return new_parser("%codellama chat", "A chat widget (for front ends without the JupyterLab extension).")


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> Any:
    from ...widgets import ChatWidget

    return ChatWidget(magic.shell, engine=magic.engine).widget


COMMAND = Command(parser, run)
