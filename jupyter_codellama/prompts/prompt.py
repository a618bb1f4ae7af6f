"""What every prompt builder returns, and how much room a prompt may take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..models import ModelSpec
from .notebook_context import ContextReport

__all__ = ["Prompt", "PromptKind", "PromptTooLongError", "context_preview", "model_window", "prompt_budget"]

PromptKind = Literal["chat", "completion", "psm", "spm", "continuation", "raw"]
"""chat: Instruct format; completion: a base model asked in code comments; psm/spm: Code Llama
infilling; continuation: prefix-only completion for models without infilling; raw: text or ids
given as they are (the Python API)."""

_FALLBACK_WINDOW = 2048  # for custom models that state no usable context length


class PromptTooLongError(ValueError):
    """The request alone does not fit in the model's window (after dropping all it can)."""


@dataclass(frozen=True)
class Prompt:
    """Token ids ready for the engine, plus what to stop on and what went in.

    ``text`` is the same prompt in the model's own notation (``<s>[INST] ...``, ``<PRE> ...``)
    for display; ``ids`` are the truth.
    """

    ids: list[int]
    text: str
    kind: PromptKind
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    max_new_tokens: int = 256
    window: int = 0
    report: ContextReport = field(default_factory=ContextReport)
    #: Text cut off the end of ``ids`` that the answer must start with (token healing): the
    #: engine steers the first tokens through it and does not show it.
    lead: str = ""

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


def model_window(spec: ModelSpec, tokenizer: Any) -> int:
    """Tokens the model attends to: the catalogue's figure, else the tokenizer's, else 2048."""
    if spec.context_length > 0:
        return spec.context_length
    stated = getattr(tokenizer, "model_max_length", 0) or 0
    return int(stated) if 0 < stated < 10_000_000 else _FALLBACK_WINDOW


def prompt_budget(
    spec: ModelSpec, tokenizer: Any, max_new_tokens: int, max_prompt_tokens: int | None
) -> tuple[int, int]:
    """(window, the most prompt tokens allowed): the window minus the generation budget, capped."""
    window = model_window(spec, tokenizer)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    limit = window - max_new_tokens
    if max_prompt_tokens is not None:
        limit = min(limit, max_prompt_tokens)
    if limit <= 0:
        raise PromptTooLongError(
            f"No room for a prompt: the window of {spec.name} is {window} tokens and "
            f"{max_new_tokens} are reserved for the answer. Lower max_new_tokens."
        )
    return window, limit


def context_preview(prompt: Prompt) -> dict[str, Any]:
    """Exactly what would be sent (text and ids), its size, and what context went in or was cut.

    JSON-ready: the comm's ``context-preview`` reply and ``%codellama context`` show it.
    """
    return {
        "kind": prompt.kind,
        "text": prompt.text,
        "ids": list(prompt.ids),
        "tokens": prompt.num_tokens,
        "window": prompt.window,
        "max_new_tokens": prompt.max_new_tokens,
        "stop": list(prompt.stop),
        "stop_token_ids": list(prompt.stop_token_ids),
        **prompt.report.to_dict(),
    }
