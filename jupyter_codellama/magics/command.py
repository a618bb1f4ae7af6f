"""What a subcommand is: a parser (the source of its help too) and what it does."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.magic_arguments import MagicArgumentParser

if TYPE_CHECKING:
    from . import CodeLlamaMagics


@dataclass(frozen=True)
class Command:
    """``run`` serves ``%codellama NAME ...``, ``run_cell`` ``%%codellama NAME ...`` (the body
    as its last argument); a command without one is not offered in that form."""

    parser: Callable[[], MagicArgumentParser]
    run: Callable[[CodeLlamaMagics, argparse.Namespace], Any] | None = None
    run_cell: Callable[[CodeLlamaMagics, argparse.Namespace, str], Any] | None = None
