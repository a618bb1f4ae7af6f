"""``%codellama config``: every setting with its value."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.display import Markdown

from ..command import Command
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return new_parser(
        "%codellama config", "Every setting with its value (change with %config CodeLlama.<name> = value)."
    )


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> Markdown:
    cfg = magic.settings
    lines = ["| setting | value | |", "|---|---|---|"]
    for name, trait in sorted(cfg.traits(config=True).items()):
        help_text = (trait.help or "").split(". ")[0].replace("|", "\\|")
        lines.append(f"| `{name}` | `{getattr(cfg, name)!r}` | {help_text} |")
    return Markdown("\n".join(lines) + "\n\nChange with `%config CodeLlama.<name> = value`.")


COMMAND = Command(parser, run)
