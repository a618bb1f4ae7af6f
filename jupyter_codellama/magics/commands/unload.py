"""``%codellama unload``: free the model and its memory."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..command import Command
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return new_parser("%codellama unload", "Free the model and its memory (an answer being generated is cancelled).")


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> None:
    magic.engine.unload()
    print("Model unloaded; its memory is free.")


COMMAND = Command(parser, run)
