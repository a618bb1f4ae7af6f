"""Opt-in interpolation of ``{var}``, ``In[n]``, ``Out[n]`` and ``Err[n]`` into a request.

Jupyter AI substitutes unconditionally and so breaks requests that contain code. Here:

* only ``{name}`` with a plain identifier is a placeholder; dict/set literals, format specs
  (``{x:>3}``), attribute paths and doubled braces (``{{x}}``) are text;
* nothing inside fenced code blocks, inline code (backticks) or f-string literals changes;
* unknown, private or deny-listed names are left as they are, and said so;
* substituted values are bounded and pass the same secret redaction as all context.

The result reports every substitution and every placeholder left alone, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from .redact import DEFAULT_DENY, Redactor, clip, is_denied
from .variables import bounded_repr

__all__ = ["Interpolation", "Substitution", "interpolate"]

_PLACEHOLDER = re.compile(r"(?<!\{)\{(?P<name>[A-Za-z_]\w*)\}(?!\})|\b(?P<hist>In|Out|Err)\[(?P<n>\d+)\]")
_PROTECTED = re.compile(
    r"(?P<fence>^[ \t]*(?P<f>`{3,}|~{3,}).*?(?:^[ \t]*(?P=f)[ \t]*$|\Z))"
    r"|(?P<code>`[^`\n]+`)"
    r"|(?P<fstr>(?<![\w\"'])(?:[rR][fF]|[fF][rR]?)(?P<q>\"\"\"|'''|\"|')(?:\\.|(?!(?P=q))[^\\])*?(?P=q))",
    re.MULTILINE | re.DOTALL,
)


SubstitutionKind = Literal["variable", "input", "output", "error"]


@dataclass(frozen=True)
class Substitution:
    placeholder: str
    kind: SubstitutionKind
    chars: int


@dataclass(frozen=True)
class Interpolation:
    text: str
    substituted: tuple[Substitution, ...]
    left_as_is: tuple[tuple[str, str], ...]  # (placeholder, why)

    def summary(self) -> str:
        """One line for the user: what was replaced, and what was not and why."""
        parts = [f"{s.placeholder} ({s.chars} chars)" for s in self.substituted]
        text = f"Substituted {', '.join(parts)}." if parts else "Nothing substituted."
        if self.left_as_is:
            text += " Left as is: " + ", ".join(f"{p} ({why})" for p, why in self.left_as_is) + "."
        return text


def interpolate(
    text: str,
    namespace: Mapping[str, Any],
    *,
    errors: Mapping[int, str] | None = None,
    deny: Sequence[str] = DEFAULT_DENY,
    max_chars: int = 2000,
) -> Interpolation:
    """Replace placeholders in ``text`` from ``namespace`` (IPython's ``user_ns``).

    ``In``/``Out`` come from the namespace's own ``In`` list and ``Out`` dict; ``Err[n]`` from
    ``errors`` (cell number → error text), which the caller records.
    """
    redact = Redactor(deny, namespace)
    substituted: list[Substitution] = []
    left: list[tuple[str, str]] = []

    def replace(match: re.Match) -> str:
        placeholder = match.group(0)
        value, kind, why = _lookup(match, namespace, errors or {}, deny, redact)
        if why:
            left.append((placeholder, why))
            return placeholder
        value = clip(value, max_chars, redact)
        substituted.append(Substitution(placeholder, kind, len(value)))
        return value

    pieces, last = [], 0
    for protected in _PROTECTED.finditer(text):
        pieces.append(_PLACEHOLDER.sub(replace, text[last : protected.start()]))
        pieces.append(protected.group(0))
        last = protected.end()
    pieces.append(_PLACEHOLDER.sub(replace, text[last:]))
    return Interpolation("".join(pieces), tuple(substituted), tuple(left))


def _lookup(
    match: re.Match, namespace: Mapping[str, Any], errors: Mapping[int, str], deny: Sequence[str], redact: Redactor
) -> tuple[str, SubstitutionKind, str]:
    """(value text, kind, "") or ("", kind, why it stays as is)."""
    name = match.group("name")
    if name is not None:
        if name.startswith("_"):
            return "", "variable", "private name"
        if is_denied(name, deny):
            return "", "variable", "withheld by the deny-list"
        if name not in namespace:
            return "", "variable", "no such variable"
        return _as_text(namespace[name], redact), "variable", ""
    hist, n = match.group("hist"), int(match.group("n"))
    if hist == "In":
        inputs = namespace.get("In")
        if isinstance(inputs, Sequence) and 0 < n < len(inputs):
            return str(inputs[n]), "input", ""
        return "", "input", f"no input {n}"
    if hist == "Out":
        outputs = namespace.get("Out")
        if isinstance(outputs, Mapping) and n in outputs:
            return _as_text(outputs[n], redact), "output", ""
        return "", "output", f"no output {n}"
    if n in errors:
        return str(errors[n]), "error", ""
    return "", "error", f"no error recorded for cell {n}"


def _as_text(value: Any, redact: Redactor) -> str:
    """Strings as they are; containers bounded (and redacted before the cut); others by ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict, set, frozenset, bytes)):
        return bounded_repr(value, 400, redact)
    return str(value)
