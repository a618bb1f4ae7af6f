"""Keep secrets out of prompts: deny-listed names, their values, and token-shaped strings.

A notebook often holds an API key (``api_key = "sk-..."`` or ``getpass()``); the model must
never see it, whether it sits in a cell, an output, a variable summary or an interpolation.
Three nets, all applied to every piece of text that goes into a prompt:

1. the *values* of deny-listed variables in the namespace (string or bytes, 6+ characters);
2. string literals assigned to a deny-listed name, attribute, keyword or dict/environ key;
3. strings shaped like well-known credentials (OpenAI, GitHub, Hugging Face, AWS, Slack, Google).

Over-redaction (``max_tokens = "100"`` matches ``*token*``) is the accepted price.
"""
from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["DEFAULT_DENY", "REDACTED", "Redactor", "is_denied"]

#: fnmatch patterns, matched case-insensitively against variable names and string keys.
DEFAULT_DENY: tuple[str, ...] = ("*key*", "*token*", "*secret*", "*password*")
REDACTED = "<redacted>"
_MIN_SECRET_CHARS = 6

# `name = "..."`, `name: str = "..."`, `f(name="...")`, `["name"] = "..."`, `{"name": "..."}`;
# not `name == "..."` nor `KeyError: '...'` (a bare name before ":" assigns nothing).
_ASSIGNED_LITERAL = re.compile(
    r"""(?:(?P<name>[A-Za-z_]\w*)\s*(?::\s*[\w.\[\], |]+?\s*)?=(?!=)"""
    r"""|(?P<kq>["'])(?P<key>[^"'\n]{1,200})(?P=kq)\s*(?:\]\s*=(?!=)|:))\s*"""
    r"""(?P<pfx>[rRbBuUfF]{0,2})(?P<q>\"\"\"|'''|"|')(?P<val>(?:\\.|(?!(?P=q))[^\n])*)(?P=q)"""
)
_CREDENTIAL_SHAPES = re.compile(
    r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})"
)


def is_denied(name: str, deny: Sequence[str] = DEFAULT_DENY) -> bool:
    """Whether ``name`` matches one of the fnmatch patterns, ignoring case."""
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in deny)


class Redactor:
    """Callable ``text -> text`` with every secret it knows about replaced by ``<redacted>``."""

    def __init__(self, deny: Sequence[str] = DEFAULT_DENY, namespace: Mapping[str, Any] | None = None) -> None:
        self.deny = tuple(deny)
        # Longest first, so a secret that contains another is replaced whole.
        self._values = tuple(sorted(set(_secret_values(namespace or {}, self.deny)), key=len, reverse=True))
        self._needles = _needles(self.deny)

    def __call__(self, text: str) -> str:
        return _redact(text, self._values, self.deny, self._needles) if text else text


@lru_cache(maxsize=4096)  # the same cells are redacted again on every keystroke
def _redact(text: str, values: tuple[str, ...], deny: tuple[str, ...], needles: tuple[str, ...] | None) -> str:
    for value in values:
        text = text.replace(value, REDACTED)
    lowered = text.lower()
    if deny and (needles is None or any(n in lowered for n in needles)):
        text = _ASSIGNED_LITERAL.sub(lambda match: _redact_literal(match, deny), text)
    return _CREDENTIAL_SHAPES.sub(REDACTED, text)


def _redact_literal(match: re.Match, deny: tuple[str, ...]) -> str:
    target = match.group("name") or match.group("key")
    if not match.group("val") or not is_denied(target, deny):
        return match.group(0)
    start, end = (i - match.start() for i in match.span("val"))
    whole = match.group(0)
    return whole[:start] + REDACTED + whole[end:]


def _needles(deny: Sequence[str]) -> tuple[str, ...] | None:
    """Text every match of the patterns must contain (``"key"`` for ``*key*``), to skip the regex.

    None when a pattern has no literal part (``*``): then every text is searched.
    """
    needles = []
    for pattern in deny:
        parts = [p for p in re.split(r"[*?]|\[[^\]]*\]", pattern.lower()) if p]
        if not parts:
            return None
        needles.append(max(parts, key=len))
    return tuple(needles)


def _secret_values(namespace: Mapping[str, Any], deny: Sequence[str]) -> Iterable[str]:
    for name, value in list(namespace.items()):
        if not isinstance(name, str) or not is_denied(name, deny):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and len(value.strip()) >= _MIN_SECRET_CHARS:
            yield value.strip()
