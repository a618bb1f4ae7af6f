"""The comm protocol's one definition, ``protocol.schema.json``, and the check of each request.

The schema (JSON Schema, draft 2020-12) describes every request and reply; the TypeScript types
of the front end are generated from it (``scripts/gen_protocol_ts.py``). Here it is loaded once,
each request type's validator is compiled once into Python code by ``fastjsonschema`` (a
``complete`` request is checked on every keystroke), and :func:`validate_request` turns the
first violation into a :class:`BadRequest` that names the field and never repeats a large value.
The tests check the compiled validators against ``jsonschema``, the reference implementation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_PATH = Path(__file__).with_name("protocol.schema.json")
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

PROTOCOL_VERSION: int = SCHEMA["x-protocol-version"]
COMM_TARGET: str = SCHEMA["x-comm-target"]
REQUEST_TYPES: tuple[str, ...] = tuple(SCHEMA["x-requests"])
ERROR_CODES: tuple[str, ...] = tuple(SCHEMA["$defs"]["KernelErrorCode"]["enum"])
MAX_REQUEST_ID: int = SCHEMA["$defs"]["IRequestEnvelope"]["properties"]["request_id"]["maxLength"]

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "an object",
    "boolean": "a boolean",
    "null": "null",
}


class BadRequest(ValueError):
    """A message that does not follow the protocol; ``code`` goes into the error reply."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limit:
    """The most a field may hold: list entries, and characters of text in all (nested included)."""

    items: int
    chars: int


#: Checked on every message before any work: a front end sends one notebook or one conversation,
#: never more, and a larger value is refused rather than kept, parsed and tokenized. ``cells``
#: are whole nbformat cells, image outputs included, hence their room.
FIELD_LIMITS: dict[str, Limit] = {
    "prefix": Limit(1, 4 << 20),
    "suffix": Limit(1, 4 << 20),
    "cells": Limit(10_000, 64 << 20),
    "extra": Limit(2_000, 16 << 20),
    "messages": Limit(1_000, 16 << 20),
    "system": Limit(1, 1 << 20),
    "stop": Limit(16, 4096),
}
#: Any other field: names, numbers, options.
_OTHER_FIELD = Limit(64, 4096)
_MAX_FIELDS = 64


def check_sizes(data: Mapping) -> None:
    """Refuse a message with an oversized field; the error names the field, never its value."""
    if len(data) > _MAX_FIELDS:
        raise BadRequest(f"A message holds at most {_MAX_FIELDS} fields, this one {len(data):,}.")
    for name, value in data.items():
        if not isinstance(name, str) or len(name) > 64:
            raise BadRequest("A field name is longer than 64 characters.")
        limit = FIELD_LIMITS.get(name, _OTHER_FIELD)
        if isinstance(value, (list, dict)) and len(value) > limit.items:
            raise BadRequest(f"'{name}' is too large: {len(value):,} entries (at most {limit.items:,}).")
        if _text_size(value, limit.chars) > limit.chars:
            raise BadRequest(f"'{name}' is too large: over {limit.chars:,} characters of text.")


def _text_size(value: Any, budget: int) -> int:
    """Characters in ``value`` (keys, nested values), counted only until ``budget`` is passed.

    Iterative, so a deeply nested value cannot exhaust the stack; each container counts one.
    """
    total, stack = 0, [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1  # about its decimal digits
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += 1
            stack.extend(item)
        else:
            total += 1
    return total


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut for an error message: bad input is named, never echoed whole.

    Only scalars are shown: a container may be nested too deeply for ``repr``.
    """
    if value is not None and not isinstance(value, (str, int, float, bool)):
        return f"a {_json_type(value)}"
    if isinstance(value, str):
        value = value[: limit + 1]
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge number"
    return text if len(text) <= limit else text[:limit] + "…"


def validate_request(kind: str, data: Mapping[str, Any]) -> None:
    """Raise :class:`BadRequest` naming the first field of ``data`` that breaks the schema of a
    ``kind`` request. ``kind`` is one of :data:`REQUEST_TYPES`; sizes are checked before."""
    from fastjsonschema import JsonSchemaValueException

    try:
        _validator(SCHEMA["x-requests"][kind]["request"])(data)
    except JsonSchemaValueException as exc:
        raise BadRequest(describe(exc)) from None
    for name in _integer_fields(kind):
        if isinstance(data.get(name), float):
            # Draft 2020-12 counts 1.0 as an integer; what receives it (``range()``) does not.
            raise BadRequest(f"'{name}' must be an integer, not number.")


class BadOption(BadRequest):
    """A generation option that breaks the schema: ``field`` names it, ``expected`` says in
    words what it must be (``"at least 1"``), ``value`` is what it was."""

    def __init__(self, field: str, expected: str, value: Any) -> None:
        super().__init__(f"'{field}' must be {expected}, not {short(value)}.")
        self.field, self.expected, self.value = field, expected, value


def check_generation_options(options: Mapping[str, Any]) -> None:
    """Raise :class:`BadOption` for the first of ``options`` (``max_new_tokens``,
    ``temperature``, ``stop``, ``max_time_ms``) that breaks ``IGenerationOptions``: the rule every
    generating request of the comm follows, for the callers that are not the comm (the magics)."""
    from fastjsonschema import JsonSchemaValueException

    data = dict(options)
    try:
        _validator("IGenerationOptions")(data)
    except JsonSchemaValueException as exc:
        where = _path(int(part) if part.isdigit() else part for part in exc.path[1:])
        raise BadOption(where, _expected(exc), exc.value) from None
    for name, prop in _properties(SCHEMA["$defs"]["IGenerationOptions"]).items():
        if prop.get("type") == "integer" and isinstance(data.get(name), float):
            raise BadOption(name, "an integer", data[name])


_BOUND_WORDS = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "over", "exclusiveMaximum": "under"}


def _expected(error) -> str:
    """What a value must be, in words, for the rule it broke."""
    if error.rule in _BOUND_WORDS:
        return f"{_BOUND_WORDS[error.rule]} {error.rule_definition}"
    if error.rule == "type":
        types = [error.rule_definition] if isinstance(error.rule_definition, str) else error.rule_definition
        return " or ".join(_TYPE_WORDS[t] for t in types)
    return f"as the protocol says ({error.rule})"


def describe(error) -> str:
    """One sentence for a ``fastjsonschema.JsonSchemaValueException``: the field, what it must be."""
    # "data.messages[0].role" → messages, 0, role
    parts = [int(part) if part.isdigit() else part for part in error.path[1:]]
    where = _path(parts)
    rule, expected, value = error.rule, error.rule_definition, error.value
    if rule == "required":
        missing = next((name for name in expected if name not in value), expected[0])
        return f"'{_path([*parts, missing])}' is required."
    if rule == "type":
        types = [expected] if isinstance(expected, str) else expected
        return f"'{where}' must be {' or '.join(_TYPE_WORDS[t] for t in types)}, not {_json_type(value)}."
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"'{where}' is out of range: {_range(error.definition)}."
    if rule in ("enum", "const"):
        allowed = expected if rule == "enum" else [expected]
        return f"'{where}' must be {' or '.join(map(repr, allowed))}, not {short(value)}."
    if rule == "minItems":
        return f"'{where}' must hold at least {expected} item{'s' if expected > 1 else ''}."
    if rule in ("minLength", "maxLength"):
        return f"'{where}' must be {expected} characters {'or more' if rule == 'minLength' else 'at most'}."
    return f"'{where}' does not follow the protocol ({rule})."


def _path(parts: Iterable) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(message)"


def _range(schema: Mapping[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    low_text = f"over {low}" if "exclusiveMinimum" in schema else f"{low}"
    return f"{low_text}..{high}" if high is not None else f"at least {low_text}"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for kind, name in ((float, "number"), (str, "string"), (list, "list"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


@cache
def _validator(definition: str):
    """The compiled validator of one ``$defs`` entry (built once per process, on first use).

    fastjsonschema knows drafts up to 07; the keywords this schema uses mean the same there (a
    ``$ref`` with sibling keywords would not: draft 07 ignores the siblings). The tests compare
    its verdicts with ``jsonschema``'s for draft 2020-12.
    """
    import fastjsonschema

    return fastjsonschema.compile(
        {"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]}, use_default=False, use_formats=False
    )


@cache
def _integer_fields(kind: str) -> tuple[str, ...]:
    """The fields of a ``kind`` request that the schema types as integers."""
    request = SCHEMA["$defs"][SCHEMA["x-requests"][kind]["request"]]
    return tuple(name for name, prop in _properties(request).items() if prop.get("type") == "integer")


def _properties(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A schema's top-level properties, through ``$ref``, ``allOf`` and ``if``'s branches."""
    found: dict[str, Any] = {}
    if "$ref" in schema:
        found.update(_properties(SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]]))
    for part in (*schema.get("allOf", ()), *(schema[k] for k in ("then", "else") if k in schema)):
        found.update(_properties(part))
    found.update(schema.get("properties", {}))
    return found
