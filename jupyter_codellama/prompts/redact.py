"""Keep secrets out of prompts: deny-listed names, their values, and token-shaped strings.

A notebook often holds an API key (``api_key = "sk-..."`` or ``getpass()``); the model must
never see it, whether it sits in a cell, an output, a chat message, a variable summary or an
interpolation. Four nets, all applied to every piece of text that goes into a prompt:

1. the *values* of deny-listed variables in the namespace (string or bytes, 6+ characters);
2. PEM private-key blocks;
3. values given to a deny-listed name: string literals assigned to a name, attribute,
   keyword or dict/environ key (``auth=("u", "p")`` too), ``os.environ.setdefault("NAME", "v")``,
   ``%env NAME=v`` and unquoted ``NAME=v`` lines (``.env`` files, ``export``);
4. strings shaped like well-known credentials (OpenAI, Anthropic, Stripe, GitHub, GitLab,
   Hugging Face, AWS, Slack, Google, JWTs), ``Bearer``/``Basic``/``Token`` header values and
   the password of a ``scheme://user:password@host`` URL.

Every pattern is anchored so that it scans each character a bounded number of times: the
redactor runs on the engine thread on every keystroke, over cells of any size.

Over-redaction (``max_tokens = "100"`` matches ``*token*``) is the accepted price.
"""

from __future__ import annotations

import fnmatch
import re
import sys
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["DEFAULT_DENY", "REDACTED", "Redactor", "clip", "is_denied", "redaction_cache_bytes"]

#: fnmatch patterns, matched case-insensitively against variable names and string keys.
DEFAULT_DENY: tuple[str, ...] = (
    "*key*",
    "*token*",
    "*secret*",
    "*password*",
    "*passwd*",
    "pass",
    "*_pass",
    "*_pass_*",
    "pwd",
    "*_pwd",
    "pwd_*",
    "*credential*",
    "creds",
    "*_creds",
    "auth",
    "*_auth",
    "auth_*",
    "*_auth_*",
    "*authorization*",
)
REDACTED = "<redacted>"
_MIN_SECRET_CHARS = 6
# How far past a cut the text is redacted before cutting: a secret (or the literal holding it)
# that starts before the cut and is shorter than this is recognised whole.
REDACT_WINDOW = 4096

# A quoted literal without named groups (the first element of ``auth=("user", "password")``).
_PLAIN_LITERAL = r"""[rRbBuUfF]{0,2}(?:"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|'[^'\\\n]*+(?:\\.[^'\\\n]*+)*+')"""
# The target of a literal: `name = `, `name: str = `, `f(name=`, `["name"] = `, `{"name": `,
# `setdefault("name", `; not `name == ` nor `KeyError: '...'` (a bare name before ":" assigns
# nothing). `(?<!\w)` and the possessive quantifiers keep the scan linear: without them a long
# word run was retried from each of its characters.
_ASSIGNED_LITERAL = re.compile(
    r"""(?:(?<!\w)(?P<name>[A-Za-z_]\w*+)\s*+(?::\s*+[\w.\[\], |]{1,100}+)?=(?!=)"""
    r"""|(?P<call>\(\s*+)?(?P<kq>["'])(?P<key>[^"'\n]{1,200}+)(?P=kq)\s*+(?:\]\s*+=(?!=)|:|(?(call),|(?!))))\s*+"""
    rf"""(?P<pair>\(\s*+{_PLAIN_LITERAL}\s*+,\s*+)?"""
    r"""(?P<pfx>[rRbBuUfF]{0,2})(?P<q>\"\"\"|'''|"|')(?P<val>(?:\\.|(?!(?P=q))[^\\\n])*+)(?P=q)"""
)
# `%env NAME=value`, `%env NAME value`, `export name=value`, `NAME=value` (upper case, no spaces
# around "=", as in .env files and shells; not a keyword argument such as `max_tokens=256,`).
_UNQUOTED_ASSIGNMENT = re.compile(
    r"""^[ \t]*+(?:%(?:set_)?env[ \t]++(?P<ename>[A-Za-z_]\w*+)(?:[ \t]*+=[ \t]*+|[ \t]++)(?P<evalue>\S[^\n]*+)"""
    r"""|(?:!?export[ \t]++(?P<xname>[A-Za-z_]\w*+)|(?P<uname>[A-Z_][A-Z0-9_]*+))"""
    r"""=(?P<uvalue>[^\s'"=(][^\s'"(]*+)(?!\S))""",
    re.MULTILINE,
)
_CREDENTIAL_SHAPES = re.compile(
    r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{16,}|[srp]k_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
    r"|eyJ[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*)"
)
# An AWS secret access key: a run of base64 of exactly that length (with upper, lower case and a
# digit: see _redact_aws_secret). Apart from the shapes above: one alternation of both was slower.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AUTH_SCHEME = re.compile(r"(?<!\w)(?P<scheme>Bearer|Basic|Token)\s++(?P<token>[A-Za-z0-9._~+/-]{16,}+=*+)")
_URL_PASSWORD = re.compile(r"://(?P<user>[^\s:/@'\"]{0,256}+):(?P<password>[^\s/@'\"]{1,256}+)@")
_PEM_PRIVATE_KEY = re.compile(
    r"(?P<begin>-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----)[\s\S]*?"
    r"(?:(?P<end>-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----)|\Z)"
)


def is_denied(name: str, deny: Sequence[str] = DEFAULT_DENY) -> bool:
    """Whether ``name`` matches one of the fnmatch patterns, ignoring case."""
    return _deny_pattern(tuple(deny)).match(name.lower()) is not None


@lru_cache(maxsize=64)
def _deny_pattern(deny: tuple[str, ...]) -> re.Pattern:
    """The patterns as one regex: names are checked for every variable on every keystroke."""
    return re.compile("|".join(fnmatch.translate(p.lower()) for p in deny) or "(?!)")


class Redactor:
    """Callable ``text -> text`` with every secret it knows about replaced by ``<redacted>``."""

    def __init__(self, deny: Sequence[str] = DEFAULT_DENY, namespace: Mapping[str, Any] | None = None) -> None:
        self.deny = tuple(deny)
        # Longest first, so a secret that contains another is replaced whole.
        self._values = tuple(sorted(set(_secret_values(namespace or {}, self.deny)), key=len, reverse=True))
        self._needles = _needles(self.deny)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        key = (text, self._values, self.deny, self._needles)
        found = _cache.get(key)
        if found is None:
            found = _redact(text, self._values, self.deny, self._needles)
            _cache.put(key, found)
        return found


def clip(text: str, limit: int, redact: Callable[[str], str] | None = None) -> str:
    """At most ``limit`` characters of ``text``, ending in "…" when cut; redacted *before* the cut.

    Cutting first would keep a secret's first characters and drop the closing quote by which
    ``password = "…"`` is recognised. Only ``limit`` + :data:`REDACT_WINDOW` characters are
    redacted, so a huge text costs no more than a short one.
    """
    if redact is not None:
        window = text[: limit + REDACT_WINDOW]
        text = redact(window) + ("…" if len(window) < len(text) else "")
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _redact(text: str, values: tuple[str, ...], deny: tuple[str, ...], needles: tuple[str, ...] | None) -> str:
    for value in values:
        text = text.replace(value, REDACTED)
    if "PRIVATE KEY-----" in text:
        text = _PEM_PRIVATE_KEY.sub(_redact_pem, text)
    lowered = text.lower()
    if deny and (needles is None or any(n in lowered for n in needles)):
        text = _ASSIGNED_LITERAL.sub(lambda match: _redact_literal(match, deny), text)
        text = _UNQUOTED_ASSIGNMENT.sub(lambda match: _redact_unquoted(match, deny), text)
    text = _CREDENTIAL_SHAPES.sub(REDACTED, text)
    text = _AWS_SECRET.sub(_redact_aws_secret, text)
    # The plain substring tests skip a regex pass over a big cell that cannot match.
    if "Bearer" in text or "Basic" in text or "Token" in text:
        text = _AUTH_SCHEME.sub(lambda m: _replace_group(m, "token"), text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: _replace_group(m, "password"), text)
    return text


def _redact_aws_secret(match: re.Match) -> str:
    """Random base64 of this length has all three kinds; a path or identifier rarely does."""
    found = match.group(0)
    kinds = (str.isupper, str.islower, str.isdigit)
    return REDACTED if all(any(kind(c) for c in found) for kind in kinds) else found


def _replace_group(match: re.Match, group: str) -> str:
    """``match`` with only ``group`` redacted."""
    start, end = (i - match.start() for i in match.span(group))
    whole = match.group(0)
    return whole[:start] + REDACTED + whole[end:]


def _redact_literal(match: re.Match, deny: tuple[str, ...]) -> str:
    target = match.group("name") or match.group("key")
    if not match.group("val") or not is_denied(target, deny):
        return match.group(0)
    return _replace_group(match, "val")


def _redact_unquoted(match: re.Match, deny: tuple[str, ...]) -> str:
    if match.group("ename"):
        name, group = match.group("ename"), "evalue"
    else:
        name, group = match.group("xname") or match.group("uname"), "uvalue"
    return _replace_group(match, group) if is_denied(name, deny) else match.group(0)


def _redact_pem(match: re.Match) -> str:
    return f"{match.group('begin')}\n{REDACTED}\n{match.group('end') or ''}"


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


# ---------------------------------------------------------------------------------------------
# The cache: the same cells are redacted again on every keystroke


class _ByteBoundedCache:
    """An LRU of redacted texts that holds at most ``max_bytes`` of text (keys and results).

    Bounded by size, not entries: a few thousand entries of a megabyte cell each were
    gigabytes. A text too large to share the cache with others is not kept at all.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()  # the engine, comm and main threads all build prompts

    def get(self, key: tuple) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple, value: str) -> None:
        size = sys.getsizeof(key[0]) + (sys.getsizeof(value) if value is not key[0] else 0)
        if size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


_cache = _ByteBoundedCache(32 * 2**20)


def redaction_cache_bytes() -> int:
    """Bytes of text the redaction cache holds now (at most its bound)."""
    return _cache.bytes
