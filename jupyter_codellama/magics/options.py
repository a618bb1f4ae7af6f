"""A magic's generation options, checked by the rule the comm applies to the same fields.

The rule is the protocol's ``IGenerationOptions`` schema (``protocol.schema.json``), so a flag
and a lab request cannot disagree about what ``max_new_tokens`` or ``temperature`` may be.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..protocol import BadOption, check_generation_options

if TYPE_CHECKING:
    from . import CodeLlamaMagics


def option(args: argparse.Namespace, field: str, default: Any, default_name: str) -> Any:
    """``args``'s value of the generation option ``field``, else ``default`` (named
    ``default_name`` in the error, e.g. ``CodeLlama.max_new_tokens``), checked by the schema."""
    value = getattr(args, field, None)
    name = "--" + field.replace("_", "-")
    if value is None:
        value, name = default, default_name
    try:
        check_generation_options({field: value})
    except BadOption as exc:
        raise UsageError(f"{name} must be {exc.expected}, got {value}.") from None
    return value


def max_new_tokens(magic: CodeLlamaMagics, args: argparse.Namespace) -> int:
    return option(args, "max_new_tokens", magic.settings.max_new_tokens, "CodeLlama.max_new_tokens")


def temperature(magic: CodeLlamaMagics, args: argparse.Namespace) -> float:
    return option(args, "temperature", magic.settings.temperature, "CodeLlama.temperature")
