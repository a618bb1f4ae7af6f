"""Measuring the code the model writes: a sandboxed checker and task sets."""
