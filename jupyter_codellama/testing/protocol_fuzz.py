"""Protocol fuzzing of the comm (hypothesis): what a broken or hostile front end could send.

Messages are valid requests (small: a few tokens each), the same with one field dropped,
retyped or made huge, unknown types, broken request ids, and data that is not an object at
all; cancels aim at the requests before them. :class:`FuzzRun` sends batches to a real kernel
(:class:`~.kernel_comm.KernelComm`), each on a fresh comm, ``hello`` first or not, and checks
that every request got exactly one terminal reply and that the kernel still runs cells.

``load`` is only sent with model names that cannot exist, and ``unload`` not at all: a real
load takes seconds. The fault tests cover both.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from ..comm import FIELD_LIMITS, PROTOCOL_VERSION, REQUEST_TYPES
from .kernel_comm import KernelComm

#: Placeholders the runner replaces: a fresh request id; the id of the last or first request.
NEW_ID, LAST_ID, FIRST_ID = "$new", "$last", "$first"

#: Reply types each request may end with.
ENDINGS = {"hello": {"hello", "error"}, "status": {"status", "error"}}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

cells: st.SearchStrategy[list[dict[str, Any]]] = st.lists(
    st.fixed_dictionaries(
        {"cell_type": st.sampled_from(["code", "markdown"]), "source": st.text(max_size=60)},
        optional={"outputs": st.just([])},
    ),
    max_size=4,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "user", "assistant", "system"]), "content": st.text(max_size=80)}
    ),
    min_size=1,
    max_size=3,
)
tokens = st.integers(1, 3)
context = {"cells": cells, "current": st.integers(0, 3), "variables": st.booleans()}
options = {
    "temperature": st.sampled_from([0, 0.5]),
    "stop": st.lists(st.text(min_size=1, max_size=4), max_size=2),
    "max_time_ms": st.integers(1, 3000),
}


def _request(kind: str, required: dict, optional: dict | None = None):
    return st.fixed_dictionaries(
        {"type": st.just(kind), "request_id": st.just(NEW_ID), **required}, optional=optional or {}
    )


VALID = {
    "hello": _request("hello", {"protocol_version": st.sampled_from([PROTOCOL_VERSION] * 3 + [0, 2])}),
    "status": _request("status", {}),
    "chat": _request(
        "chat", {"messages": messages, "max_new_tokens": tokens}, {**context, **options, "system": st.text(max_size=40)}
    ),
    "complete": _request(
        "complete",
        {"prefix": st.text(max_size=80), "max_new_tokens": tokens},
        {
            **context,
            **options,
            "suffix": st.text(max_size=40),
            "stream": st.booleans(),
            "multiline": st.booleans(),
            "mode": st.sampled_from(["psm", "spm"]),
            "extra": st.lists(
                st.fixed_dictionaries({"label": st.text(max_size=8), "text": st.text(max_size=40)}), max_size=2
            ),
        },
    ),
    "explain": _request("explain", {**context, "max_new_tokens": tokens}, {**options, "messages": messages}),
    "fix": _request("fix", {**context, "max_new_tokens": tokens}, {**options, "messages": messages}),
    "edit": _request(
        "edit",
        {**context, "instruction": st.text(min_size=1, max_size=40), "max_new_tokens": tokens},
        {
            **options,
            "messages": messages,
            "selection": st.fixed_dictionaries({"start": st.integers(0, 20), "end": st.integers(0, 20)}),
        },
    ),
    "prewarm": _request("prewarm", {"prefix": st.text(max_size=80)}, context),
    "cancel": _request("cancel", {"target_id": st.sampled_from([LAST_ID, LAST_ID, FIRST_ID, "no-such-id"])}),
    "context-preview": _request(
        "context-preview",
        {
            "for": st.sampled_from(["chat", "complete", "explain", "fix", "edit"]),
            "messages": messages,
            "prefix": st.text(max_size=40),
            "instruction": st.text(min_size=1, max_size=40),
        },
        context,
    ),
    "load": _request(
        "load",
        {"model": st.from_regex(r"zz-[a-z]{1,6}", fullmatch=True)},
        {"quantization": st.sampled_from(["4bit", "3bit"]), "gpu_memory": st.sampled_from(["1GiB", "lots"])},
    ),
}
assert set(VALID) | {"unload"} == set(REQUEST_TYPES)


def _over(field_name: str) -> str:
    return "x" * (FIELD_LIMITS[field_name].chars + 1)


#: Values over the comm's limits, built once (hypothesis draws which).
HUGE: dict[str, Any] = {
    "request_id": "r" * 201,
    "type": "t" * 5000,
    "prefix": _over("prefix"),
    "system": _over("system"),
    "stop": [_over("stop")],
    "cells": [{"cell_type": "code", "source": "x"}] * (FIELD_LIMITS["cells"].items + 1),
    "messages": [{"role": "user", "content": "hi"}] * (FIELD_LIMITS["messages"].items + 1),
    "model": "m" * 5000,
}
bad_ids = st.sampled_from([None, "", 7, ["id"], {"id": 1}, HUGE["request_id"]])


@st.composite
def mutated(draw) -> Any:
    """A valid request with one thing wrong."""
    message = dict(draw(st.sampled_from(list(VALID.values())).flatmap(lambda s: s)))
    how = draw(st.sampled_from(["drop", "retype", "huge", "unknown_type", "bad_id"]))
    if how == "drop":
        del message[draw(st.sampled_from(sorted(message)))]
    elif how == "retype":
        message[draw(st.sampled_from(sorted(message)))] = draw(json_values)
    elif how == "huge":
        name = draw(st.sampled_from(sorted(HUGE)))
        message[name] = HUGE[name]
    elif how == "unknown_type":
        message["type"] = draw(st.text(max_size=12).filter(lambda t: t not in REQUEST_TYPES))
    else:
        message["request_id"] = draw(bad_ids)
    return message


def message_strategy():
    valid = st.sampled_from(list(VALID.values())).flatmap(lambda s: s)
    junk = st.lists(scalars, max_size=3) | scalars | st.dictionaries(st.text(max_size=10), json_values, max_size=5)
    # Drawn by a uniform pick rather than ``one_of``, which leans towards its simplest branch.
    kinds = {"valid": valid, "mutated": mutated(), "junk": junk}
    return st.sampled_from(["valid"] * 6 + ["mutated"] * 3 + ["junk"]).flatmap(kinds.__getitem__)


def batch_strategy(min_size: int = 5, max_size: int = 25):
    """(say hello first?, messages) for one comm."""
    return st.tuples(st.booleans(), st.lists(message_strategy(), min_size=min_size, max_size=max_size))


@dataclass
class FuzzRun:
    """Sends batches to a real kernel and keeps count; raises AssertionError on a broken promise."""

    kernel: KernelComm
    timeout: float = 180.0
    sent: int = 0
    by_type: Counter = field(default_factory=Counter)
    endings: Counter = field(default_factory=Counter)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _checked: list[tuple[str, str, Any]] = field(default_factory=list)

    def run_batch(self, hello_first: bool, batch: list[Any]) -> None:
        comm = self.kernel.open_comm()
        sent_ids: list[tuple[str, Any]] = []  # (request id, request type)
        anonymous = 0
        if hello_first:
            batch = [{"type": "hello", "request_id": NEW_ID, "protocol_version": PROTOCOL_VERSION}, *batch]
        for message in batch:
            message = self._resolve(_tame(message), sent_ids)
            self.kernel.send(comm, message)
            self.sent += 1
            kind = message.get("type") if isinstance(message, dict) else None
            kind = kind if isinstance(kind, str) and kind in REQUEST_TYPES else "(invalid)"
            self.by_type[kind] += 1
            request_id = message.get("request_id") if isinstance(message, dict) else None
            if isinstance(request_id, str) and request_id.startswith("f-"):
                sent_ids.append((request_id, kind))
            else:
                anonymous += 1
        self.kernel.wait_all(comm, [r for r, _ in sent_ids], self.timeout)
        self._wait_anonymous(comm, anonymous)
        self._checked += [(comm, r, k) for r, k in sent_ids]
        self.check(comm, sent_ids, anonymous)
        self.kernel.close_comm(comm)

    def check(self, comm: str, sent_ids: list[tuple[str, Any]], anonymous: int) -> None:
        for request_id, kind in sent_ids:
            ends = self.kernel.terminal(comm, request_id)
            assert len(ends) == 1, f"{request_id} ({kind}) ended {len(ends)} times: {ends}"
            allowed = ENDINGS.get(kind, {"done", "error"})
            assert ends[0]["type"] in allowed, f"{request_id} ({kind}) ended with {ends[0]}"
            # "internal" is a bug on the kernel's side, never the answer to bad input.
            assert ends[0].get("code") != "internal", f"{request_id} ({kind}) ended with {ends[0]}"
            self.endings[ends[0].get("code", ends[0]["type"])] += 1
        errors = self.kernel.terminal(comm, None)
        assert len(errors) == anonymous, f"{anonymous} requests without a valid id, {len(errors)} errors"
        self.endings["error without id"] += anonymous

    def recheck(self) -> None:
        """Once everything settled: still exactly one ending each (no late duplicate)."""
        for comm, request_id, kind in self._checked:
            assert len(self.kernel.terminal(comm, request_id)) == 1, f"{request_id} ({kind}) ended again"

    def _resolve(self, message: Any, sent_ids: list[tuple[str, Any]]) -> Any:
        if not isinstance(message, dict):
            return message
        message = dict(message)
        request_id = message.get("request_id")
        if isinstance(request_id, str) and 0 < len(request_id) <= 200:
            # Every usable id is a fresh one, so each reply is counted against one request.
            message["request_id"] = f"f-{next(self._ids)}"
        if message.get("target_id") in (LAST_ID, FIRST_ID):
            message["target_id"] = (
                sent_ids[-1 if message["target_id"] == LAST_ID else 0][0] if sent_ids else "no-such-id"
            )
        return message

    def _wait_anonymous(self, comm: str, expected: int) -> None:
        deadline = time.monotonic() + self.timeout
        while len(self.kernel.terminal(comm, None)) < expected and time.monotonic() < deadline:
            time.sleep(0.02)


def _tame(message: Any) -> Any:
    """Keep a mutated ``load`` from loading a real model (a drop or retype may have made it valid)."""
    if isinstance(message, dict) and message.get("type") in ("load", "unload"):
        model = message.get("model")
        if not (isinstance(model, str) and (model.startswith("zz-") or model == HUGE["model"])):
            return {**message, "type": "load", "model": "zz-tamed"}
    return message
