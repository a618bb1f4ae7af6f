"""The comm against bad input and odd endings, with a stub engine (no model: fast).

Every request must end with exactly one terminal reply, whatever it held, and no reply may echo
a huge value back to the front end.
"""

import json
from types import SimpleNamespace

import pytest

from jupyter_codellama.comm import FIELD_LIMITS, CommSession
from jupyter_codellama.config import CodeLlama
from jupyter_codellama.engine.engine import Job
from jupyter_codellama.engine.generation import GenerationResult

CHAT = [{"role": "user", "content": "hi"}]
MB = 1 << 20


class StubEngine:
    """Takes jobs without running them; the test ends them with :meth:`finish`."""

    def __init__(self):
        self.config = CodeLlama(model="embedded", max_time=42.0)
        self.jobs: list[Job] = []
        self.loaded = None

    def status(self):
        return {"state": "ready", "busy": False}

    def on_status(self, callback):
        return lambda: None

    def submit(self, kind, prompt=None, **kwargs):
        job = Job.of(kind, prompt, **kwargs)
        self.jobs.append(job)
        return job

    def cancel(self, request_id):
        for job in self.jobs:
            if job.request_id == request_id:
                job.cancel()
                return True
        return False

    def finish(self, job, text, stop_reason):
        job._finish(GenerationResult(text=text, stop_reason=stop_reason, prompt_tokens=5))


@pytest.fixture
def stub():
    sent = []
    engine = StubEngine()
    session = CommSession(sent.append, engine=engine)
    return session, engine, sent


def terminal(sent, request_id):
    return [m for m in sent if m.get("request_id") == request_id and m["type"] in ("done", "error")]


def over(field: str) -> str:
    """A text one character longer than ``field`` may hold."""
    return "x" * (FIELD_LIMITS[field].chars + 1)


@pytest.mark.parametrize(
    "field, make",
    [
        ("prefix", lambda: over("prefix")),
        ("suffix", lambda: over("suffix")),
        ("cells", lambda: [{"cell_type": "code", "source": over("cells")}]),
        ("cells", lambda: [{"cell_type": "code", "source": "x"}] * (FIELD_LIMITS["cells"].items + 1)),
        ("stop", lambda: [over("stop")]),
        ("stop", lambda: ["s"] * (FIELD_LIMITS["stop"].items + 1)),
        ("extra", lambda: [{"label": "a", "text": over("extra")}]),
    ],
)
def test_an_oversized_completion_field_is_a_bad_request_that_does_not_echo_it(stub, field, make):
    session, engine, sent = stub
    session.handle({"type": "complete", "request_id": "k", "prefix": "x = ", field: make()})
    replies = terminal(sent, "k")
    assert [r["code"] for r in replies] == ["bad_request"], replies
    assert field in replies[0]["message"] and "too large" in replies[0]["message"]
    assert len(json.dumps(sent)) < 2000, "the reply must not carry the huge value back"
    assert engine.jobs == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: [{"role": "user", "content": over("messages")}],
        lambda: [{"role": "user", "content": "hi"}] * (FIELD_LIMITS["messages"].items + 1),
    ],
)
def test_an_oversized_chat_is_a_bad_request(stub, make):
    session, engine, sent = stub
    session.handle({"type": "chat", "request_id": "c", "messages": make()})
    assert [r["code"] for r in terminal(sent, "c")] == ["bad_request"]
    assert len(json.dumps(sent)) < 2000 and engine.jobs == []


def test_a_deeply_nested_field_is_refused_not_a_crash(stub):
    session, _engine, sent = stub
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    session.handle({"type": "complete", "request_id": "n", "prefix": "x", "cells": nested})
    assert [r["code"] for r in terminal(sent, "n")] == ["bad_request"]


def test_a_huge_request_id_is_refused_without_being_echoed(stub):
    session, _engine, sent = stub
    session.handle({"type": "status", "request_id": "r" * MB})
    assert len(sent) == 1 and sent[0]["type"] == "error" and sent[0]["code"] == "bad_request"
    assert sent[0]["request_id"] is None and len(json.dumps(sent)) < 2000


def test_a_huge_unknown_type_is_not_echoed(stub):
    session, _engine, sent = stub
    session.handle({"type": "t" * MB, "request_id": "u"})
    assert sent[0]["code"] == "bad_request" and len(json.dumps(sent)) < 2000


@pytest.mark.parametrize("field", ["max_time_ms", "max_new_tokens", "temperature"])
def test_huge_integers_are_bad_requests_not_internal_errors(stub, field):
    session, _engine, sent = stub
    session.handle({"type": "chat", "request_id": "c", "messages": CHAT, field: 10**400})
    assert [r["code"] for r in terminal(sent, "c")] == ["bad_request"]


def test_a_huge_protocol_version_is_a_bad_request(stub):
    session, _engine, sent = stub
    session.handle({"type": "hello", "request_id": "h", "protocol_version": 10**5000})
    assert [m["code"] for m in sent] == ["bad_request"] and len(json.dumps(sent)) < 2000


@pytest.mark.parametrize("value", [-5, 0, 10**6])
def test_prewarm_checks_max_new_tokens(stub, value):
    session, engine, sent = stub
    session.handle({"type": "prewarm", "request_id": "w", "prefix": "x = ", "max_new_tokens": value})
    assert [r["code"] for r in terminal(sent, "w")] == ["bad_request"] and engine.jobs == []


def test_a_cancelled_partial_completion_is_never_replayed_as_a_suggestion(stub):
    session, engine, sent = stub
    session.handle({"type": "complete", "request_id": "k1", "prefix": "total = ", "suffix": "\n"})
    engine.finish(engine.jobs[-1], "sum(values) + ext", "cancelled")  # cut mid-word
    session.handle({"type": "complete", "request_id": "k2", "prefix": "total = s", "suffix": "\n"})
    reply = terminal(sent, "k2")
    assert reply == [], f"served from the cancelled answer: {reply}"
    assert len(engine.jobs) == 2, "the model must be asked again"


def test_a_finished_completion_is_still_typed_through(stub):
    session, engine, sent = stub
    session.handle({"type": "complete", "request_id": "k1", "prefix": "total = ", "suffix": "\n"})
    engine.finish(engine.jobs[-1], "sum(values)", "stop")
    session.handle({"type": "complete", "request_id": "k2", "prefix": "total = s", "suffix": "\n"})
    assert terminal(sent, "k2")[0]["text"] == "um(values)"


def test_a_failing_reply_still_ends_the_request_with_one_error(stub, monkeypatch):
    import jupyter_codellama.prompts as prompts

    def broken(*_args, **_kwargs):
        raise RuntimeError("post-processing bug")

    monkeypatch.setattr(prompts, "clean_completion", broken)
    session, engine, sent = stub
    session.handle({"type": "complete", "request_id": "k", "prefix": "x = "})
    engine.finish(engine.jobs[-1], "1", "stop")
    replies = terminal(sent, "k")
    assert [r["code"] for r in replies] == ["internal"] and "post-processing bug" in replies[0]["message"]


def test_closing_the_comm_cancels_its_running_and_queued_jobs(stub):
    session, engine, sent = stub
    session.handle({"type": "chat", "request_id": "c1", "messages": CHAT})
    session.handle({"type": "chat", "request_id": "c2", "messages": CHAT})
    engine.finish(engine.jobs[0], "done already", "eos")
    session.close()
    assert engine.jobs[1].cancelled, "the open chat must stop when its comm closes"


def test_a_cancel_stops_only_its_own_connections_request(stub):
    session, engine, sent = stub
    other = CommSession(sent.append, engine=engine)
    other.handle({"type": "chat", "request_id": "same-id", "messages": CHAT})
    session.handle({"type": "chat", "request_id": "same-id", "messages": CHAT})
    session.handle({"type": "cancel", "request_id": "x", "target_id": "same-id"})
    assert terminal(sent, "x")[0]["cancelled"] is True
    assert [job.cancelled for job in engine.jobs] == [False, True], "the other notebook's chat must go on"


def test_a_comm_chat_honours_the_configured_time_limit(stub):
    session, engine, _sent = stub
    session.handle({"type": "chat", "request_id": "c", "messages": CHAT})
    assert engine.jobs[-1].options.max_time == 42.0
    session.handle({"type": "chat", "request_id": "c2", "messages": CHAT, "max_time_ms": 500})
    assert engine.jobs[-1].options.max_time == 0.5


# -- the ipywidgets chat: the same promises ---------------------------------------------------


def test_the_widget_chat_honours_the_configured_time_limit():
    from jupyter_codellama.widgets import ChatWidget

    engine = StubEngine()
    ChatWidget(SimpleNamespace(user_ns={}), engine=engine).ask("hi")
    assert engine.jobs[-1].options.max_time == 42.0


def test_the_widget_chat_is_usable_again_after_its_answer_failed_to_show(monkeypatch):
    import jupyter_codellama.prompts as prompts
    from jupyter_codellama.widgets import ChatWidget

    def broken(_text):
        raise RuntimeError("rendering bug")

    monkeypatch.setattr(prompts, "extract_code", broken)
    engine = StubEngine()
    chat = ChatWidget(SimpleNamespace(user_ns={}), engine=engine)
    chat.ask("hi")
    engine.finish(engine.jobs[-1], "an answer", "eos")
    assert chat.send.disabled is False and chat.stop.disabled is True
    assert "rendering bug" in chat.status.value
    assert chat.ask("again") is not None, "a new question must be accepted"
