"""The comm protocol, kernel side: a CommSession with a recording `send` and the real engine."""

import threading
import time

import pytest

from jupyter_codellama.comm import PROTOCOL_VERSION, CommSession

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    def __call__(self, message):
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def wait_for(self, request_id, types=("done", "error"), timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if m.get("request_id") == request_id and m["type"] in types:
                        return m
                left = deadline - time.monotonic()
                assert left > 0, f"no {types} for {request_id}: {self.messages[-5:]}"
                self.cond.wait(left)

    def of(self, request_id):
        return [m for m in self.messages if m.get("request_id") == request_id]


@pytest.fixture
def session(embedded_engine):
    sent = Recorder()
    namespace = {"df_rows": 3, "api_key": "sk-very-secret-value"}
    s = CommSession(sent, engine=embedded_engine, namespace=lambda: namespace)
    s.sent = sent
    yield s
    s.close()


def test_hello_reports_version_status_and_catalogue(session):
    session.handle({"type": "hello", "request_id": "h1", "protocol_version": PROTOCOL_VERSION})
    reply = session.sent.wait_for("h1", types=("hello",))
    assert reply["protocol_version"] == PROTOCOL_VERSION
    assert reply["status"]["state"] == "ready"
    assert any(m["repo_id"] == "codellama/CodeLlama-7b-Instruct-hf" for m in reply["capabilities"]["models"])


def test_protocol_mismatch_is_an_error_that_names_both_versions(session):
    session.handle({"type": "hello", "request_id": "h2", "protocol_version": 99})
    reply = session.sent.wait_for("h2")
    assert reply["code"] == "protocol_version" and "99" in reply["message"]


@pytest.mark.parametrize(
    "message, code",
    [
        ("not a dict", "bad_request"),
        ({"type": "chat"}, "bad_request"),
        ({"type": "chat", "request_id": ""}, "bad_request"),
        ({"type": "dance", "request_id": "x"}, "unknown_type"),
        ({"type": "chat", "request_id": "x", "messages": []}, "bad_request"),
        ({"type": "chat", "request_id": "x", "messages": [{"role": "robot", "content": "hi"}]}, "bad_request"),
        (
            {"type": "chat", "request_id": "x", "messages": [{"role": "user", "content": "hi"}], "max_new_tokens": -5},
            "bad_request",
        ),
        (
            {"type": "chat", "request_id": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
            "bad_request",
        ),
        ({"type": "complete", "request_id": "x"}, "bad_request"),
        ({"type": "complete", "request_id": "x", "prefix": "a", "extra": [1, 2]}, "bad_request"),
        ({"type": "cancel", "request_id": "x"}, "bad_request"),
        ({"type": "load", "request_id": "x", "gpu_memory": "lots"}, "bad_request"),
        ({"type": "context-preview", "request_id": "x", "for": "poem"}, "bad_request"),
    ],
)
def test_malformed_messages_get_an_error_reply_and_nothing_raises(session, message, code):
    session.handle(message)
    errors = [m for m in session.sent.messages if m["type"] == "error"]
    assert errors and errors[-1]["code"] == code and errors[-1]["message"]


def test_chat_streams_chunks_then_done_with_timings(session):
    session.handle(
        {
            "type": "chat",
            "request_id": "c1",
            "max_new_tokens": 32,
            "messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
        }
    )
    done = session.sent.wait_for("c1")
    assert done["type"] == "done", done
    chunks = [m["text"] for m in session.sent.of("c1") if m["type"] == "chunk"]
    assert chunks and "".join(chunks) == done["text"]
    assert done["stop_reason"] in ("eos", "length", "stop")
    assert done["timings"]["first_token_s"] > 0 and done["prompt_tokens"] > 0


def test_chat_with_notebook_context_sees_variables_but_never_secrets(session):
    cells = [
        {"cell_type": "code", "source": "df_rows = 3", "outputs": []},
        {"cell_type": "code", "source": "", "outputs": []},
    ]
    session.handle(
        {
            "type": "context-preview",
            "request_id": "p1",
            "for": "chat",
            "cells": cells,
            "current": 1,
            "messages": [{"role": "user", "content": "What is df_rows?"}],
        }
    )
    reply = session.sent.wait_for("p1")
    assert reply["type"] == "done", reply
    text = reply["preview"]["text"]
    assert "df_rows" in text and "sk-very-secret-value" not in text and "api_key" not in text
    assert reply["preview"]["tokens"] == len(reply["preview"]["ids"])


def test_namespace_secrets_are_redacted_with_variables_off_and_without_cells(embedded_engine):
    sent = Recorder()
    token = "Zq8vLx3pRt7wNs2kMm4"  # as getpass() would put it there: no literal, no known shape
    session = CommSession(sent, engine=embedded_engine, namespace=lambda: {"df_rows": 3, "api_token": token})
    cells = [
        {
            "cell_type": "code",
            "source": "print(api_token)",
            "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": token + "\n"}],
        }
    ]
    session.handle(
        {
            "type": "context-preview",
            "request_id": "p2",
            "for": "chat",
            "cells": cells,
            "variables": False,
            "messages": [{"role": "user", "content": "What did it print?"}],
        }
    )
    session.handle(
        {
            "type": "context-preview",
            "request_id": "p3",
            "for": "chat",
            "messages": [{"role": "user", "content": f"Is {token} a good token?"}],
        }
    )
    with_cells, without = (sent.wait_for(r)["preview"]["text"] for r in ("p2", "p3"))
    session.close()
    assert "print(api_token)" in with_cells and "df_rows" not in with_cells  # no variable summaries
    assert "Zq8vLx3p" not in with_cells + without
    assert "# <redacted>" in with_cells and "Is <redacted> a good token?" in without


def test_complete_returns_cleaned_text_and_token_accounting(session):
    session.handle(
        {
            "type": "complete",
            "request_id": "k1",
            "prefix": "def add(a, b):\n    return ",
            "suffix": "\n",
            "max_new_tokens": 12,
        }
    )
    done = session.sent.wait_for("k1")
    assert done["type"] == "done", done
    assert "raw_text" in done and done["tokens_evaluated"] == done["prompt_tokens"] - done["cached_tokens"]
    assert done["stop_reason"] in ("eos", "length", "stop")


def test_cancel_stops_a_running_chat(session):
    session.handle(
        {
            "type": "chat",
            "request_id": "c2",
            "max_new_tokens": 400,
            "messages": [{"role": "user", "content": "Explain Python generators at length."}],
        }
    )
    deadline = time.monotonic() + 30
    while not any(m["type"] == "chunk" for m in session.sent.of("c2")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    session.handle({"type": "cancel", "request_id": "x2", "target_id": "c2"})
    assert session.sent.wait_for("x2")["cancelled"] is True
    assert session.sent.wait_for("c2")["stop_reason"] == "cancelled"


def test_status_requests_and_broadcasts(session):
    session.handle({"type": "status", "request_id": "s1"})
    assert session.sent.wait_for("s1", types=("status",))["status"]["state"] == "ready"


def test_a_closed_session_sends_nothing(session):
    session.close()
    session.handle({"type": "status", "request_id": "s2"})
    assert session.sent.of("s2") == []


@pytest.mark.parametrize(
    "prefix, multiline",
    [
        ("x = foo(", False),
        ("def f(x):", True),
        ("for i in range(3):\n    ", True),
        ("# load the data", True),
        ("import os\n", True),
        ("total = 0\ntotal +", False),
        ('d = {"a": 1, "b":', False),
        ("f = lambda x:", True),
        ('s = "a:" + b(c, "d:"', False),
    ],
)
def test_single_line_unless_a_block_can_start_here(prefix, multiline):
    from jupyter_codellama.comm import wants_multiline

    assert wants_multiline(prefix) is multiline


def test_typing_what_the_suggestion_shows_needs_no_model(session, embedded_engine):
    session.suggestions.show("total = ", "\n", "sum(values)")
    before = embedded_engine.status()["prefix_cache"]
    session.handle({"type": "complete", "request_id": "t1", "prefix": "total = su", "suffix": "\n"})
    reply = session.sent.wait_for("t1", timeout=1)
    assert reply["text"] == "m(values)" and reply["from_suggestion"] is True
    assert embedded_engine.status()["prefix_cache"] == before, "the model was not consulted"
    session.handle(
        {"type": "complete", "request_id": "t2", "prefix": "total = sx", "suffix": "\n", "max_new_tokens": 4}
    )
    assert "from_suggestion" not in session.sent.wait_for("t2"), "a different keystroke asks the model"


def test_a_suggestion_on_a_new_indented_line_is_code_not_a_blank_line(session):
    # The embedded model cannot fill in the middle: the prompt ends before "\n    " and the
    # answer is steered through it (without that, this model answered with empty lines).
    session.handle(
        {
            "type": "complete",
            "request_id": "n1",
            "max_new_tokens": 16,
            "prefix": "import math\n\n\ndef circle_area(radius):\n    ",
            "suffix": "",
        }
    )
    done = session.sent.wait_for("n1")
    assert done["type"] == "done", done
    assert done["text"].strip(), done
    assert not done["text"].startswith(("\n", " ")), repr(done["text"])
    # Each completion reply carries the status, so the front end shows the recent latency.
    assert done["status"]["completion_latency_ms"]["n"] >= 1


def test_prewarm_fills_the_cache_so_the_next_completion_reuses_it(session, embedded_engine):
    embedded_engine.clear_prefix_cache()
    latency_before = embedded_engine.status().get("completion_latency_ms", {}).get("n", 0)
    cells = [{"cell_type": "code", "source": f"def helper_{i}(x):\n    return x * {i}\n"} for i in range(20)]
    cells.append({"cell_type": "code", "source": "result = helper_3("})
    context = {"cells": cells, "current": 20, "variables": False}
    session.handle({"type": "prewarm", "request_id": "w1", "prefix": "result = helper_3(", "suffix": "", **context})
    warm = session.sent.wait_for("w1")
    assert warm["type"] == "done" and warm["prompt_tokens"] > 100
    # A prewarm is not a suggestion the user waited for: it is not in the latency figures.
    assert embedded_engine.status().get("completion_latency_ms", {}).get("n", 0) == latency_before
    session.handle(
        {
            "type": "complete",
            "request_id": "k2",
            "prefix": "result = helper_3(2",
            "suffix": "",
            "max_new_tokens": 4,
            **context,
        }
    )
    done = session.sent.wait_for("k2")
    assert done["cached_tokens"] >= warm["prompt_tokens"] - 8
    assert embedded_engine.status()["completion_latency_ms"]["n"] >= 1
