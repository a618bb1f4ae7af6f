"""The subcommands, one module each, and the tables that dispatch to them.

``%codellama NAME ...`` runs ``LINE_COMMANDS[NAME]``; ``%%codellama NAME ...`` runs NAME's
cell form where it has one (``complete``), else the body is a request (``%%codellama``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from IPython.core.error import UsageError

from ..command import Command
from ..parsing import parse
from . import ask, chat, complete, config, edit, explain, fix, load, models, reset, status, unload
from . import help as help_command

if TYPE_CHECKING:
    from .. import CodeLlamaMagics

LINE_COMMANDS: dict[str, Command] = {
    "load": load.COMMAND,
    "status": status.COMMAND,
    "models": models.COMMAND,
    "unload": unload.COMMAND,
    "explain": explain.COMMAND,
    "fix": fix.COMMAND,
    "complete": complete.COMMAND,
    "edit": edit.COMMAND,
    "chat": chat.COMMAND,
    "config": config.COMMAND,
    "reset": reset.COMMAND,
    "help": help_command.COMMAND,
}
#: ``%%codellama [options]``: what a cell whose first word names no cell command asks for.
CELL_DEFAULT: Command = ask.COMMAND
_HELP_WORDS = ("-h", "--help")


def command_named(name: str) -> Command:
    try:
        return LINE_COMMANDS[name]
    except KeyError:
        raise UsageError(
            f"Unknown subcommand {name!r}. Use one of: {', '.join(LINE_COMMANDS)} (%codellama help)."
        ) from None


def run_line(magic: CodeLlamaMagics, words: Sequence[str]) -> Any:
    if not words or words[0] in _HELP_WORDS:
        words = ["help"]
    command = command_named(words[0])
    args = parse(command.parser(), words[1:])
    return None if args is None or command.run is None else command.run(magic, args)


def run_cell(magic: CodeLlamaMagics, words: Sequence[str], body: str) -> Any:
    command = LINE_COMMANDS.get(words[0]) if words else None
    if command is not None and command.run_cell is not None:
        words = words[1:]
    else:
        command = CELL_DEFAULT
    args = parse(command.parser(), words)
    return None if args is None or command.run_cell is None else command.run_cell(magic, args, body)
