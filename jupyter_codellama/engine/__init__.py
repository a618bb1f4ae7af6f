"""The in-kernel engine: model loading, the worker thread, streaming generation.

Importing this package imports no torch; :mod:`.worker` does, on first use of the engine.
"""


class EngineUser:
    """Mixin: ``self.engine`` is the engine given to ``__init__``, else the kernel's own."""

    _engine = None

    @property
    def engine(self):
        if self._engine is None:
            from .engine import get_engine

            self._engine = get_engine()
        return self._engine
