"""jupyter-codellama: a Code Llama assistant inside the Jupyter kernel.

Importing this package is cheap: torch and transformers are imported only when the engine is
first used, so ``%load_ext jupyter_codellama`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .engine.engine import Engine
    from .engine.generation import GenerationResult

__all__ = [
    "__version__",
    "get_engine",
    "generate",
    "load",
    "status",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built JupyterLab extension lives (``jupyter labextension develop`` reads this)."""
    return [{"src": "labextension", "dest": "jupyter-codellama"}]


def load_ipython_extension(shell) -> None:
    """``%load_ext jupyter_codellama``."""
    from .extension import load_ipython_extension as _load

    _load(shell)


def unload_ipython_extension(shell) -> None:
    from .extension import unload_ipython_extension as _unload

    _unload(shell)


def get_engine() -> "Engine":
    """The kernel's single engine (one model, one worker thread)."""
    from .engine.engine import get_engine as _get_engine

    return _get_engine()


def load(model: str | None = None, *, wait: bool = True, **options: Any) -> dict[str, Any]:
    """Load ``model`` (catalogue name, hub id or folder); returns the engine status."""
    handle = get_engine().load(model, **options)
    return handle.wait() if wait else get_engine().status()


def generate(prompt: Any = None, **kwargs: Any) -> "GenerationResult":
    """Blocking generation with the loaded (or default) model; see ``Engine.generate``."""
    return get_engine().generate(prompt, **kwargs)


def status() -> dict[str, Any]:
    return get_engine().status()
