"""The in-kernel engine: model loading, the worker thread, streaming generation."""
