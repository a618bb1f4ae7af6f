"""``%load_ext jupyter_codellama``: register settings, magics and the comm target — nothing heavy.

Loading the extension imports neither torch nor transformers and loads no model: that happens on
the first request (or ``%codellama load``), on the engine's own thread.
"""

from __future__ import annotations

from .comm import register_comm_target
from .config import CodeLlama, set_config
from .magics import CodeLlamaMagics
from .session import get_session

_loaded_shells: set[int] = set()


def load_ipython_extension(shell) -> None:
    if id(shell) in _loaded_shells:
        return
    config = CodeLlama(parent=shell)  # reads ipython_config.py and %config
    set_config(config)
    if config not in shell.configurables:
        shell.configurables.append(config)
    shell.register_magics(CodeLlamaMagics(shell))
    shell.events.register("post_run_cell", get_session().record)
    register_comm_target(shell)
    _loaded_shells.add(id(shell))


def unload_ipython_extension(shell) -> None:
    if id(shell) not in _loaded_shells:
        return
    try:
        shell.events.unregister("post_run_cell", get_session().record)
    except ValueError:
        pass
    _loaded_shells.discard(id(shell))
