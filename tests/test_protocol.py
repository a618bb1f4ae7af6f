"""The protocol's one definition (``protocol.schema.json``): the kernel checks requests with it,
its replies follow it, the front end's types are generated from it, and the kernel alone
decides whether a suggestion may span several lines."""

from __future__ import annotations

import importlib.util
import json
import statistics
import time

import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator, validators

from jupyter_codellama import comm, protocol
from jupyter_codellama.comm import CommSession, wants_multiline
from jupyter_codellama.protocol import REQUEST_TYPES, SCHEMA, BadRequest, check_sizes, validate_request
from jupyter_codellama.testing.protocol_fuzz import message_strategy
from test_comm_hardening import CHAT, StubEngine, terminal

ROOT = protocol.SCHEMA_PATH.parents[1]


def _reference_validator(definition: str):
    """jsonschema, the reference implementation, with JSON's integers only (as the kernel)."""
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _c, v: isinstance(v, int) and not isinstance(v, bool)
    )
    cls = validators.extend(Draft202012Validator, type_checker=checker)
    return cls({"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]})


def reply_errors(reply: dict, request_type: str) -> list[str]:
    """What is wrong with a reply to a ``request_type`` request; a ``done`` also against the
    result that ``x-requests`` promises."""
    name = {
        "hello": "IHelloReply",
        "status": "IStatusReply",
        "chunk": "IChunkReply",
        "done": "IDoneReply",
        "error": "IErrorReply",
    }[reply["type"]]
    errors = [e.message for e in _reference_validator(name).iter_errors(reply)]
    if reply["type"] == "done":
        result = {k: v for k, v in reply.items() if k not in ("type", "request_id")}
        result_def = SCHEMA["x-requests"][request_type]["result"]
        errors += [f"{result_def}: {e.message}" for e in _reference_validator(result_def).iter_errors(result)]
    return errors


@pytest.fixture
def stub():
    sent: list[dict] = []
    engine = StubEngine()
    engine.status = lambda: {"state": "unloaded", "busy": False, "queued": 0}  # as Engine.status()
    return CommSession(sent.append, engine=engine), engine, sent


# -- the schema itself ------------------------------------------------------------------------


def test_the_schema_is_valid_draft_2020_12_and_names_every_type_and_code_the_comm_uses():
    Draft202012Validator.check_schema(SCHEMA)
    assert comm.REQUEST_TYPES == tuple(SCHEMA["$defs"]["RequestType"]["enum"]) == REQUEST_TYPES
    assert comm.ERROR_CODES == tuple(SCHEMA["$defs"]["KernelErrorCode"]["enum"])
    assert comm.PROTOCOL_VERSION == SCHEMA["x-protocol-version"]
    for kind in REQUEST_TYPES:
        assert hasattr(CommSession, "_on_" + kind.replace("-", "_")), f"no handler for {kind}"


# -- requests: checked before any work, errors name the field ---------------------------------


@pytest.mark.parametrize(
    "message, named",
    [
        ({"type": "chat", "messages": [{"role": "robot", "content": "hi"}]}, "'messages[0].role' must be"),
        ({"type": "chat", "messages": CHAT, "temperature": "hot"}, "'temperature' must be a number"),
        ({"type": "chat", "messages": CHAT, "max_new_tokens": 0}, "'max_new_tokens' is out of range: 1..8192"),
        ({"type": "chat", "messages": CHAT, "max_new_tokens": 2.0}, "'max_new_tokens' must be an integer"),
        ({"type": "chat", "messages": []}, "'messages' must hold at least 1 item"),
        ({"type": "complete", "prefix": "x", "extra": [{"label": "a"}]}, "'extra[0].text' is required"),
        ({"type": "complete", "prefix": "x", "cells": [{"source": 3}]}, "'cells[0].source' must be a string or a list"),
        ({"type": "complete", "prefix": "x", "mode": "xyz"}, "'mode' must be 'psm' or 'spm', not 'xyz'"),
        ({"type": "complete", "prefix": "x", "multiline": "yes"}, "'multiline' must be a boolean"),
        ({"type": "complete", "prefix": "x", "max_time_ms": 0}, "'max_time_ms' is out of range"),
        ({"type": "cancel"}, "'target_id' is required"),
        ({"type": "load", "model": 7}, "'model' must be a string"),
        ({"type": "context-preview", "for": "complete", "messages": CHAT}, "'prefix' is required"),
    ],
)
def test_a_request_against_the_schema_is_a_bad_request_that_names_the_field(stub, message, named):
    session, engine, sent = stub
    session.handle({**message, "request_id": "r"})
    replies = terminal(sent, "r")
    assert [r["code"] for r in replies] == ["bad_request"] and named in replies[0]["message"], replies
    assert engine.jobs == []


def test_the_schema_is_checked_before_any_work(stub):
    session, _engine, sent = stub  # no model loaded: the preview would answer not_loaded
    session.handle({"type": "context-preview", "request_id": "p", "for": "poem"})
    assert sent[0]["code"] == "bad_request" and "'for' must be 'chat' or 'complete'" in sent[0]["message"]


@pytest.mark.parametrize("value", ["v" * 4000, 10**4000, [[[[["deep"]]]]]])
def test_a_schema_error_never_repeats_a_large_value(stub, value):
    session, _engine, sent = stub
    session.handle({"type": "complete", "request_id": "k", "prefix": "x", "mode": value})
    assert sent[0]["code"] == "bad_request" and "'mode'" in sent[0]["message"]
    assert len(json.dumps(sent)) < 300


def test_a_list_nested_thousands_deep_where_the_schema_looks_is_refused_not_a_crash(stub):
    session, _engine, sent = stub
    nested: list = ["x"]
    for _ in range(50_000):
        nested = [nested]
    session.handle({"type": "chat", "request_id": "c", "messages": [nested]})
    assert [r["code"] for r in terminal(sent, "c")] == ["bad_request"]


def test_validating_a_completion_request_takes_well_under_a_millisecond():
    cells = [
        {"cell_type": "code", "source": f"x{i} = {i}\nprint(x{i})", "metadata": {}, "outputs": []} for i in range(30)
    ]
    message = {
        "type": "complete",
        "request_id": "k",
        "prefix": "import pandas as pd\ndf = pd.",
        "suffix": "\n",
        "max_new_tokens": 64,
        "max_time_ms": 3000,
        "temperature": 0,
        "variables": True,
        "cells": cells,
        "current": 3,
    }
    validate_request("complete", message)  # compiles once
    runs = []
    for _ in range(200):
        start = time.perf_counter()
        validate_request("complete", message)
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    print(f"\ncomplete request with 30 cells: validated in {median * 1e6:.0f} µs (median of 200)")
    assert median < 0.5e-3


def _schema_checked(message) -> bool:
    """A message that reaches the schema check: an object of a known type, within the size limits."""
    if not isinstance(message, dict) or message.get("type") not in REQUEST_TYPES:
        return False
    try:
        check_sizes(message)
    except BadRequest:
        return False
    return True


@settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(message=message_strategy().filter(_schema_checked))
def test_the_compiled_validator_agrees_with_the_reference_implementation(message):
    kind = message["type"]
    reference = next(iter(_reference_validator(SCHEMA["x-requests"][kind]["request"]).iter_errors(message)), None)
    try:
        validate_request(kind, message)
        verdict = None
    except BadRequest as exc:
        verdict = str(exc)
    assert (verdict is None) == (reference is None), (verdict, reference and reference.message)


# -- replies follow the schema ----------------------------------------------------------------


def test_the_replies_of_a_stub_engine_follow_the_schema(stub):
    session, engine, sent = stub
    kinds = {}
    for request_id, message in {
        "s": {"type": "status"},
        "c": {"type": "chat", "messages": CHAT},
        "k": {"type": "complete", "prefix": "total = ", "suffix": "\n"},
        "x": {"type": "cancel", "target_id": "c"},
        "b": {"type": "complete", "prefix": 3},
        "t": {"type": "complete", "prefix": "total = s", "suffix": "\n"},
    }.items():
        kinds[request_id] = message["type"]
        session.handle({**message, "request_id": request_id})
        if request_id == "k":
            engine.finish(engine.jobs[-1], "sum(values)", "stop")
    engine.finish(engine.jobs[0], "hello", "cancelled")
    session.handle("not even an object")
    assert {m["request_id"] for m in sent if m["type"] in ("done", "error", "status")} >= set(kinds)
    for message in sent:
        assert reply_errors(message, kinds.get(message["request_id"], "status")) == [], message


@pytest.mark.slow
def test_the_replies_of_a_real_model_follow_the_schema(embedded_engine):
    sent: list[dict] = []
    session = CommSession(sent.append, engine=embedded_engine)
    cells = [{"cell_type": "code", "source": "import math", "outputs": []}]
    requests = {
        "h": {"type": "hello", "protocol_version": protocol.PROTOCOL_VERSION},
        "c": {"type": "chat", "messages": CHAT, "max_new_tokens": 4},
        "k": {"type": "complete", "prefix": "def area(r):\n    ", "max_new_tokens": 4, "cells": cells, "current": 0},
        "p": {"type": "context-preview", "for": "complete", "prefix": "x = ", "cells": cells, "current": 0},
        "w": {"type": "prewarm", "prefix": "y = "},
    }
    for request_id, message in requests.items():
        session.handle({**message, "request_id": request_id})
        deadline = time.monotonic() + 120
        while not terminal(sent, request_id) and request_id != "h" and time.monotonic() < deadline:
            time.sleep(0.02)
    session.close()
    kinds = {request_id: message["type"] for request_id, message in requests.items()}
    assert [m["type"] for m in sent if m["request_id"] == "h"] == ["hello"]
    for request_id in kinds.keys() - {"h"}:
        assert [m["type"] for m in terminal(sent, request_id)] == ["done"], request_id
    for message in sent:
        assert reply_errors(message, kinds.get(message["request_id"], "status")) == [], message


# -- single- or multi-line: the kernel decides, and says so -----------------------------------


@pytest.mark.parametrize(
    "prefix, expected",
    [
        ("", True),
        ("import pandas as pd\n", True),
        ("def area(r):", True),
        ("# plot the sales by month", True),
        ("df = pd.read_", False),
        ('x = {"a": 1, "b":', False),
    ],
)
def test_the_kernel_decides_single_or_multi_line_from_the_prefix(prefix, expected):
    assert wants_multiline(prefix) is expected


@pytest.mark.parametrize(
    "prefix, asked, told, stop",
    [
        ("df = pd.read_", None, False, ("\n",)),
        ("def area(r):\n    ", None, True, comm.MULTILINE_STOPS),
        ("df = pd.read_", True, True, comm.MULTILINE_STOPS),  # the user's setting "always", or Alt+\
        ("def area(r):\n    ", False, False, ("\n",)),  # the user's setting "never"
    ],
)
def test_every_chunk_and_the_done_of_a_completion_say_what_the_kernel_decided(stub, prefix, asked, told, stop):
    session, engine, sent = stub
    request = {"type": "complete", "request_id": "k", "prefix": prefix}
    if asked is not None:
        request["multiline"] = asked
    session.handle(request)
    job = engine.jobs[-1]
    assert job.options.stop == stop
    job.on_chunk("x")
    engine.finish(job, "x", "stop")
    assert [(m["type"], m["multiline"]) for m in sent] == [("chunk", told), ("done", told)]


def test_a_typed_through_suggestion_says_it_too(stub):
    session, engine, sent = stub
    session.handle({"type": "complete", "request_id": "k1", "prefix": "def f():\n    ", "suffix": ""})
    engine.finish(engine.jobs[-1], "return 1\n    pass", "stop")
    session.handle({"type": "complete", "request_id": "k2", "prefix": "def f():\n    ret", "suffix": ""})
    reply = terminal(sent, "k2")[0]
    assert reply["from_suggestion"] is True and reply["multiline"] is False


# -- the TypeScript types are generated from the schema ---------------------------------------


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protocol_ts", ROOT / "scripts" / "gen_protocol_ts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_typescript_is_up_to_date():
    generator = _generator()
    expected = generator.generate(SCHEMA)
    current = generator.OUTPUT_FILE.read_text(encoding="utf-8")
    assert current == expected, "labextension/src/protocol.generated.ts is stale: run python scripts/gen_protocol_ts.py"


def test_the_generated_typescript_follows_a_change_of_the_schema():
    generator = _generator()
    changed = json.loads(json.dumps(SCHEMA))
    changed["$defs"]["ICancelRequest"]["properties"]["reason"] = {"type": "string", "description": "Why."}
    text = generator.generate(changed)
    assert "  /** Why. */\n  reason?: string;" in text and text != generator.generate(SCHEMA)
    assert "export const PROTOCOL_VERSION = 1;" in text
    assert "  'context-preview': IContextPreviewRequest;" in text
