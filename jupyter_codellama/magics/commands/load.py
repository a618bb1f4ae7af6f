"""``%codellama load [MODEL] [options]``: load a model, showing progress."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ..command import Command
from ..model import load_with_progress
from ..parsing import new_parser

if TYPE_CHECKING:
    from .. import CodeLlamaMagics

_OPTIONS = ("quantization", "gpu_memory", "cpu_memory", "device", "dtype", "endpoint")


def parser():
    p = new_parser("%codellama load", "Load a model (default: CodeLlama.model).")
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a catalogue name, a folder, a hub id, a .gguf file or "
        "owner/repo/file.gguf (with --endpoint: the name the server serves)",
    )
    q = p.add_mutually_exclusive_group()
    q.add_argument(
        "--4bit", dest="quantization", action="store_const", const="4bit", help="4-bit weights (on a CPU: the C kernel)"
    )
    q.add_argument(
        "--8bit", dest="quantization", action="store_const", const="8bit", help="8-bit weights (on a CPU: the C kernel)"
    )
    q.add_argument(
        "--no-quant", dest="quantization", action="store_const", const="none", help="the checkpoint's own precision"
    )
    q.add_argument(
        "--nf4",
        dest="quantization",
        action="store_const",
        const="nf4",
        help="bitsandbytes NF4 (on a CPU: slow; --4bit runs the CPU kernel)",
    )
    q.add_argument("--int8", dest="quantization", action="store_const", const="int8", help="bitsandbytes 8-bit")
    p.add_argument(
        "--gpu-memory", metavar="X", help="most GPU memory the weights may use, e.g. 6GiB (the rest is offloaded)"
    )
    p.add_argument("--cpu-memory", metavar="Y", help="most CPU memory offloaded weights may use, e.g. 24GiB")
    p.add_argument("--device", metavar="D", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", metavar="T", help="compute dtype: auto, float32, bfloat16 or float16")
    p.add_argument(
        "--endpoint",
        metavar="URL",
        help="generate on this OpenAI-compatible server "
        "(vLLM, llama-server, transformers serve; http://host:8000/v1); MODEL is the name it serves",
    )
    return p


def run(magic: CodeLlamaMagics, args: argparse.Namespace) -> None:
    from ...engine.loading import parse_memory

    options = {name: getattr(args, name) for name in _OPTIONS}
    for flag in ("gpu_memory", "cpu_memory"):
        if options[flag] is not None:
            try:
                parse_memory(options[flag])
            except ValueError as exc:
                raise UsageError(f"--{flag.replace('_', '-')}: {exc}") from None
    load_with_progress(magic, args.model, **{k: v for k, v in options.items() if v is not None})


COMMAND = Command(parser, run)
