"""The model a magic needs: loaded on demand, with progress, a failure told as a ``UsageError``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .progress import ProgressView

if TYPE_CHECKING:
    from . import CodeLlamaMagics


def ensure_model(magic: CodeLlamaMagics, model: str | None) -> None:
    """Load ``model`` (or the default model, when none is loaded) unless it is already there."""
    status = magic.engine.status()
    if model:
        from ..models import UnknownModelError, resolve_model

        try:
            spec = resolve_model(model)
        except UnknownModelError as exc:
            raise UsageError(str(exc)) from None
        if status["state"] == "ready" and status.get("repo_id") == spec.repo_id:
            return
        load_with_progress(magic, model)
    elif status["state"] in ("unloaded", "error", "loading"):
        load_with_progress(magic, None, already_loading=status["state"] == "loading")


def load_with_progress(
    magic: CodeLlamaMagics, model: str | None, *, already_loading: bool = False, **options: Any
) -> None:
    """Load (or wait for the load under way), showing progress; a failure is a ``UsageError``."""
    from ..engine.loading import ModelLoadError

    try:
        handle = None if already_loading else magic.engine.load(model, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    view = ProgressView(magic.shell, f"Loading {model or magic.settings.model or 'the default model'} …")
    try:
        _wait_for_load(magic.engine, handle, view)
    except KeyboardInterrupt:
        view.close("Still loading in the background: see %codellama status.", ok=False)
        return
    except (ModelLoadError, ValueError) as exc:
        view.close("Loading failed.", ok=False)
        raise UsageError(str(exc)) from None
    _report_loaded(magic.engine.status(), view)


def _wait_for_load(engine: Any, handle: Any, view: ProgressView) -> None:
    while True:
        status = engine.status()
        if handle is not None and handle.done or handle is None and status["state"] != "loading":
            break
        view.update(status.get("progress"))
        time.sleep(0.1)
    if handle is not None:
        handle.wait()


def _report_loaded(status: dict, view: ProgressView) -> None:
    if status["state"] != "ready":
        view.close("Loading failed.", ok=False)
        raise UsageError(status.get("error") or "The model did not load.")
    memory = ", ".join(f"{k} {v}" for k, v in status.get("memory", {}).items())
    where = (
        f"served by {status['endpoint']}"
        if status.get("backend") == "remote"
        else f"{status['quantization']}, {status['device']}; {memory}"
    )
    view.close(f"{status['model']} ready ({where}) in {status.get('load_seconds', 0):.1f} s", ok=True)
    for warning in status.get("warnings", []):
        print("Note:", warning)
