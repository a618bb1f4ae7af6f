"""The progress of a model load: a bar in a kernel, stage lines elsewhere."""

from __future__ import annotations

from typing import Any

from IPython.display import display


class ProgressView:
    """A progress bar (ipywidgets in a kernel) or stage lines (elsewhere) for model loading."""

    def __init__(self, shell, title: str) -> None:
        self._bar: Any = None
        self._label: Any = None
        self._last_stage = ""
        if getattr(shell, "kernel", None) is not None:
            try:
                import ipywidgets as w

                self._bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="Loading")
                self._label = w.Label(title)
                display(w.HBox([self._bar, self._label]))
                return
            except ImportError:
                pass
        print(title, flush=True)

    def update(self, progress: dict | None) -> None:
        if not progress:
            return
        stage, fraction = str(progress.get("stage", "")), float(progress.get("fraction", 0.0))
        if self._bar is not None:
            self._bar.value, self._label.value = fraction, stage
            return
        base = stage.split(" (")[0]
        if base != self._last_stage:
            print(f"  {fraction:4.0%}  {base}", flush=True)
            self._last_stage = base

    def close(self, message: str, ok: bool) -> None:
        if self._bar is not None:
            self._bar.value = 1.0 if ok else self._bar.value
            self._bar.bar_style = "success" if ok else "danger"
            self._label.value = message
        # Printed too: a saved notebook (or one viewed without widgets) keeps the outcome.
        print(message, flush=True)
