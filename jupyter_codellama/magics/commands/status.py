"""``%codellama status``: what is loaded and how (or what is loading, or what failed)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from IPython.display import Markdown

from ..command import Command
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics

_FIELDS = (
    "model",
    "repo_id",
    "backend",
    "kernel",
    "quantization",
    "dtype",
    "device",
    "device_map",
    "memory",
    "supports_infill",
    "chat_format",
    "context_length",
    "endpoint",
    "served_model",
    "latency_ms",
)


def parser():
    return new_parser("%codellama status", "The model's state, quantization, device, memory and prefix cache.")


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> Markdown:
    s = magic.engine.status()
    rows = [("state", s["state"])]
    if s["state"] == "loading" and s.get("progress"):
        rows.append(("progress", f"{s['progress']['fraction']:.0%} — {s['progress']['stage']}"))
    if s["state"] == "error":
        rows.append(("error", s.get("error", "")))
    rows += [(key, s[key]) for key in _FIELDS if key in s]
    rows.append(("prefix cache", s["prefix_cache"]))
    return Markdown("| | |\n|---|---|\n" + "\n".join(f"| {k} | {_cell(v)} |" for k, v in rows))


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        value = ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


COMMAND = Command(parser, run)
