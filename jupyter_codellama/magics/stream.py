"""Running one generation job from a magic and showing its text as it arrives."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError
from IPython.display import Markdown, display

from ..prompts.requests import PromptSpec

if TYPE_CHECKING:
    from ..engine.generation import GenerationResult
    from . import CodeLlamaMagics

_UPDATE_EVERY_S = 0.15


class StreamView:
    """Markdown updated in place in a kernel (throttled); plain text printed in a terminal."""

    def __init__(self, shell) -> None:
        self._rich = getattr(shell, "kernel", None) is not None
        self._shown = ""
        self._last = 0.0
        self._handle: Any = display(Markdown("*…*"), display_id=True) if self._rich else None

    def update(self, text: str) -> None:
        if text == self._shown:
            return
        if not self._rich:
            print(text[len(self._shown) :], end="", flush=True)
            self._shown = text
        elif time.monotonic() - self._last >= _UPDATE_EVERY_S:
            self._handle.update(Markdown(text))
            self._shown, self._last = text, time.monotonic()

    def finish(self, text: str, footer: str, metadata: dict | None = None) -> None:
        if self._rich:
            self._handle.update(Markdown(f"{text}\n\n*{footer}*"), metadata=metadata or {})
        else:
            print(text[len(self._shown) :], end="", flush=True)
            print(f"\n[{footer}]")
        self._shown = text


def stream(
    magic: CodeLlamaMagics,
    kind: str,
    spec: PromptSpec | Callable[[Any], Any],
    *,
    max_new_tokens: int,
    temperature: float,
    meta: dict,
    show: bool = True,
) -> GenerationResult | None:
    """Run a job, showing its text as it arrives; None when the user interrupted it."""
    cfg = magic.settings
    pieces: list[str] = []
    job = magic.engine.submit(
        kind,
        spec,
        on_chunk=pieces.append,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=cfg.top_p,
        max_time=cfg.max_time,
    )
    view = None
    try:  # from here on a Ctrl-C must cancel the job, wherever it lands
        view = StreamView(magic.shell) if show else None
        while True:
            try:
                result = job.wait(0.05)
                break
            except TimeoutError:
                if view is not None:
                    view.update("".join(pieces))
    except KeyboardInterrupt:
        _interrupted(job, view, pieces)
        return None
    status = magic.engine.status()
    if result.stop_reason == "error":
        if view is not None:
            view.finish("", f"error: {result.error}")
        raise UsageError(result.error or "Generation failed.")
    metadata = {
        "jupyter_codellama": {
            **meta,
            "model": status.get("model"),
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            **result.to_dict(),
        }
    }
    if view is not None:
        view.finish(result.text, footer(result, status.get("model", "?")), metadata)
    return result


def _interrupted(job: Any, view: StreamView | None, pieces: list[str]) -> None:
    """Ctrl-C: stop the job, keep what it wrote on screen, and say that nothing was inserted."""
    job.cancel()
    try:
        result = job.wait(30)
    except TimeoutError:
        result = None
    text = result.text if result is not None else "".join(pieces)
    if view is not None:
        view.finish(text, "generation interrupted")
    print("Generation interrupted: nothing was inserted; the kernel is fine.")


def footer(result: GenerationResult, model: str) -> str:
    t = result.timings
    parts = [model, f"{len(result.tokens)} tokens"]
    if t.get("first_token_s") is not None:
        parts.append(f"first token {t['first_token_s']:.2f} s")
    if t.get("tokens_per_s"):
        parts.append(f"{t['tokens_per_s']:.1f} tok/s")
    parts.append(f"stop: {result.stop_reason}")
    return " · ".join(parts)
