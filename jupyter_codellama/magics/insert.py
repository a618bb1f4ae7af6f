"""Putting code into the notebook: as the next cell, or in place of the magic's cell. Never run."""

from __future__ import annotations


def insert(shell, code: str, where: str) -> None:
    """``where``: ``below`` (a new cell), ``replace`` (the magic's own cell) or ``none``."""
    if where == "none" or not code.strip():
        return
    shell.set_next_input(code, replace=(where == "replace"))


def insert_answer_code(shell, answer: str, where: str, none_found: str) -> str:
    """Insert the code of a chat answer; say ``none_found`` when it holds none. Returns the code."""
    from ..prompts import extract_code

    code = extract_code(answer)
    if code:
        insert(shell, code, where)
    else:
        print(none_found)
    return code
