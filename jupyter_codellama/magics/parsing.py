"""The subcommands' argument parsers: one way to build and run them, and the help built from them.

Every command owns its parser (``commands/*.py``); ``%codellama help`` prints a summary of all
of them and ``%codellama CMD -h`` argparse's full help of one, so the help cannot drift from
what the parsers accept.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Iterable, Sequence

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

PREVIEW_HELP = "show exactly what would be sent (and what context was cut); generate nothing"
MAX_NEW_TOKENS_HELP = "longest answer, in tokens (default: CodeLlama.max_new_tokens)"
CELL_HELP = "In[n] or n (default: the previous cell)"
INSERT_CHOICES = ("below", "replace", "none")
_WIDTH = 100
_HELP_FLAGS = frozenset({"-h", "--help"})
_FOOTER = (
    "%codellama CMD -h (or %codellama help CMD): a command's full help.\n"
    "Settings: %config CodeLlama.<name> = value   (see %codellama config)"
)


def new_parser(prog: str, description: str) -> MagicArgumentParser:
    """A command's parser; ``prog`` as the user types it (``%codellama load``)."""
    # IPython's help formatter puts a "%" before the prog itself.
    return MagicArgumentParser(prog=prog[1:], description=description, add_help=True)


def magic_name(parser: MagicArgumentParser) -> str:
    return "%" + parser.prog


def cell_task_parser(
    name: str,
    description: str,
    *,
    insert_help: str,
    cell_help: str = CELL_HELP,
    max_new_help: str = MAX_NEW_TOKENS_HELP,
) -> MagicArgumentParser:
    """The parser of a command that works on one executed cell (explain, fix, complete, ...)."""
    p = new_parser(f"%codellama {name}", description)
    p.add_argument("cell", nargs="?", metavar="CELL", help=cell_help)
    p.add_argument("--max-new-tokens", type=int, metavar="N", help=max_new_help)
    p.add_argument("--insert", choices=INSERT_CHOICES, help=insert_help)
    p.add_argument("--preview", action="store_true", help=PREVIEW_HELP)
    return p


def parse(parser: MagicArgumentParser, words: Sequence[str]) -> argparse.Namespace | None:
    """``words`` parsed; None when ``-h`` printed the help. Mistakes are ``UsageError``s."""
    if words and not _options(parser) and not _HELP_FLAGS & set(words):
        raise UsageError(f"{magic_name(parser)} takes no arguments (got {' '.join(words)!r}).")
    try:
        return parser.parse_args(list(words))
    except SystemExit:  # --help printed the usage
        return None


def summary(parsers: Iterable[MagicArgumentParser]) -> str:
    """Every command: its synopsis, description and options, one line each."""
    return "\n\n".join(_summary_of(parser) for parser in parsers) + "\n\n" + _FOOTER


def _summary_of(parser: MagicArgumentParser) -> str:
    actions = _options(parser)
    positionals = " ".join(_invocation(a) for a in actions if not a.option_strings)
    lines = [f"{magic_name(parser)} {positionals}".rstrip(), *_wrap(parser.description or "", "    ")]
    for action in actions:
        lines += _wrap(action.help or "", f"    {_invocation(action):<30} ")
    return "\n".join(lines)


def _wrap(text: str, first: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=first, subsequent_indent=" " * len(first)) or [first.rstrip()]


def _options(parser: MagicArgumentParser) -> list[argparse.Action]:
    """The parser's arguments, without ``-h``."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]  # argparse has no public list


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest.upper()
        return f"[{name}]" if action.nargs in ("?", "*") else str(name)
    flags = "/".join(action.option_strings)
    if action.nargs == 0:
        return flags
    if action.metavar:
        return f"{flags} {action.metavar}"
    return f"{flags} {'|'.join(map(str, action.choices)) if action.choices else action.dest.upper()}"
