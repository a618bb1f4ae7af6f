"""``%codellama help [CMD]`` (also ``%codellama`` alone): a summary of every command, built from
their parsers, or one command's full help."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..command import Command
from ..parsing import new_parser, summary

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    p = new_parser("%codellama help", "This summary, or one command's full help.")
    p.add_argument("command", nargs="?", metavar="CMD", help="a subcommand: show its full help")
    return p


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> None:
    from . import CELL_DEFAULT, LINE_COMMANDS, command_named  # the table this command is part of

    if args.command is None:
        print(summary([CELL_DEFAULT.parser(), *(c.parser() for c in LINE_COMMANDS.values())]))
    else:
        command_named(args.command).parser().print_help()


COMMAND = Command(parser, run)
