"""``%codellama models``: the catalogue, with each model's capabilities and memory."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.display import Markdown

from ..command import Command
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    return new_parser("%codellama models", "The catalogue: every model with its capabilities and memory.")


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> Markdown:
    from ...models import CATALOGUE

    lines = ["| name | hub id | infilling | chat | context | NF4 weights |", "|---|---|---|---|---|---|"]
    for s in CATALOGUE:
        memory = "0.5 GB fp32 (CPU)" if s.family == "embedded" else f"≈{s.weight_bytes('4bit') / 1e9:.1f} GB"
        lines.append(
            f"| `{s.name}` | {s.repo_id} | {'yes' if s.supports_infill else '–'} | "
            f"{s.chat_format or '–'} | {s.context_length} | {memory} |"
        )
    return Markdown("\n".join(lines) + "\n\nAny local folder or other hub id works too.")


COMMAND = Command(parser, run)
