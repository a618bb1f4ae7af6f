"""``%codellama reset``: forget the conversation of ``%%codellama`` requests."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ...session import get_session
from ..command import Command
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return new_parser("%codellama reset", "Clear the conversation (%%codellama requests are a conversation).")


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> None:
    get_session().reset()
    print("Chat history cleared.")


COMMAND = Command(parser, run)
