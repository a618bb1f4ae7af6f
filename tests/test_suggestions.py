"""Suggestions answered without the model: typed through, and prefetched after an acceptance."""

import time

import pytest

from jupyter_codellama.comm import CommSession
from jupyter_codellama.suggestions import PrefetchStore, request_key, typed_through
from test_comm import Recorder
from test_comm_hardening import StubEngine, terminal

CELLS = [{"cell_type": "code", "source": "import math"}, {"cell_type": "code", "source": "r = 2\nx = "}]
REQUEST = {
    "prefix": "r = 2\nx = ",
    "suffix": "",
    "multiline": False,
    "max_new_tokens": 16,
    "temperature": 0,
    "variables": False,
    "cells": CELLS,
    "current": 1,
}


# -- the key ------------------------------------------------------------------------------------


def test_the_key_is_what_shapes_the_answer_and_nothing_else():
    key = request_key(REQUEST)
    same = {
        "type": "complete",
        "request_id": "other",
        "prefetch": True,
        "stream": False,
        **dict(reversed(list(REQUEST.items()))),
    }
    assert request_key(same) == key
    for field, value in [
        ("prefix", "r = 2\nx ="),
        ("suffix", "\n"),
        ("multiline", True),
        ("max_new_tokens", 17),
        ("variables", True),
        ("current", 0),
        ("cells", [CELLS[0], {"cell_type": "code", "source": "r = 3\nx = "}]),
    ]:
        assert request_key({**REQUEST, field: value}) != key, field


# -- the store ----------------------------------------------------------------------------------


def test_the_store_keeps_a_few_entries_and_drops_the_least_recently_used():
    store = PrefetchStore(max_entries=2)
    store.put("a", "one")
    store.put("b", "two")
    assert store.get("a") == "one"  # "a" is now the most recent
    store.put("c", "three")
    assert (store.get("a"), store.get("b"), store.get("c")) == ("one", None, "three")
    assert len(store) == 2


def test_the_store_caps_its_text_in_bytes():
    store = PrefetchStore(max_entries=10, max_bytes=10)
    assert store.put("a", "12345") and store.put("b", "é" * 2)  # 4 bytes in UTF-8
    store.put("c", "1234")  # 13 bytes: the oldest goes
    assert store.get("a") is None and store.get("b") == "éé" and store.bytes <= 10
    assert not store.put("big", "x" * 11) and store.get("big") is None


def test_an_entry_expires_the_namespace_may_have_changed():
    now = [100.0]
    store = PrefetchStore(max_age_s=30, clock=lambda: now[0])
    store.put("a", "text")
    now[0] += 29
    assert store.get("a") == "text"
    now[0] += 2
    assert store.get("a") is None and len(store) == 0


def test_typed_through_is_the_rest_of_what_was_shown():
    shown = ("x = ", "\n", "math.pi * r")
    assert typed_through(shown, "x = math.", "\n") == "pi * r"
    assert typed_through(shown, "x = math.pi * r", "\n") is None  # nothing left
    assert typed_through(shown, "x = mat", "") is None  # the text after the cursor changed
    assert typed_through(shown, "x = max", "\n") is None


# -- the protocol, on a stub engine (deterministic order) ---------------------------------------


@pytest.fixture
def stub():
    sent = []
    engine = StubEngine()
    return CommSession(sent.append, engine=engine), engine, sent


def complete(session, request_id, **fields):
    session.handle({"type": "complete", "request_id": request_id, **REQUEST, **fields})


def test_a_prefetch_generates_quietly_and_the_next_request_is_answered_from_it(stub):
    session, engine, sent = stub
    complete(session, "p1", prefetch=True)
    job = engine.jobs[-1]
    assert job.background and not job.record_latency
    job.on_chunk("math.pi")
    assert [m for m in sent if m["type"] == "chunk"] == [], "a prefetch does not stream"
    engine.finish(job, "math.pi * r ** 2\n", "stop")
    complete(session, "k1")
    reply = terminal(sent, "k1")[0]
    assert reply["text"] == "math.pi * r ** 2" and reply["from_suggestion"] and reply["prefetched"]
    assert reply["generated_tokens"] == 0 and len(engine.jobs) == 1, "no model call"
    # It is the suggestion shown now: typing it through needs no model either.
    complete(session, "k2", prefix=REQUEST["prefix"] + "math.")
    assert terminal(sent, "k2")[0]["text"] == "pi * r ** 2" and len(engine.jobs) == 1


def test_a_request_that_comes_while_its_prefetch_runs_gets_its_text_so_far_then_the_rest(stub):
    session, engine, sent = stub
    complete(session, "p1", prefetch=True)
    engine.jobs[0].on_chunk("math")
    complete(session, "k1")
    assert len(engine.jobs) == 1 and not engine.jobs[0].cancelled, "the prefetch was neither replaced nor stopped"
    assert terminal(sent, "k1") == []
    engine.jobs[0].on_chunk(".pi")
    assert [m["text"] for m in sent if m["request_id"] == "k1" and m["type"] == "chunk"] == ["math", ".pi"]
    engine.finish(engine.jobs[0], "math.pi", "eos")
    reply = terminal(sent, "k1")[0]
    assert reply["text"] == "math.pi" and reply["prefetched"] and reply["generated_tokens"] == 0
    assert terminal(sent, "p1")[0]["text"] == "math.pi"


def test_cancelling_a_request_that_waits_stops_the_prefetch(stub):
    session, engine, sent = stub
    complete(session, "p1", prefetch=True)
    complete(session, "k1")
    session.handle({"type": "cancel", "request_id": "c", "target_id": "k1"})
    assert terminal(sent, "c")[0]["cancelled"] is True and engine.jobs[0].cancelled
    engine.finish(engine.jobs[0], "", "cancelled")
    assert terminal(sent, "k1")[0]["stop_reason"] == "cancelled"


@pytest.mark.parametrize("stop_reason", ["cancelled", "time"])
def test_a_partial_prefetch_is_not_kept(stub, stop_reason):
    session, engine, sent = stub
    complete(session, "p1", prefetch=True)
    engine.finish(engine.jobs[-1], "math.p", stop_reason)
    complete(session, "k1")
    assert terminal(sent, "k1") == [] and len(engine.jobs) == 2, "the model is asked"


def test_a_request_at_another_position_asks_the_model(stub):
    session, engine, sent = stub
    complete(session, "p1", prefetch=True)
    engine.finish(engine.jobs[-1], "math.pi", "stop")
    complete(session, "k1", prefix=REQUEST["prefix"] + "m")
    complete(session, "k2", multiline=True)
    assert len(engine.jobs) == 3 and terminal(sent, "k1") == terminal(sent, "k2") == []


def test_every_reply_a_prefetch_answers_says_multiline_and_follows_the_schema(stub):
    from test_protocol import reply_errors

    session, engine, sent = stub
    engine.status = lambda: {"state": "ready", "busy": False, "queued": 0}  # as Engine.status()
    complete(session, "p1", prefetch=True, multiline=True)
    engine.jobs[0].on_chunk("math")
    complete(session, "k1", multiline=True)  # joins the prefetch: its text so far, then the rest
    engine.jobs[0].on_chunk(".pi")
    engine.finish(engine.jobs[0], "math.pi\nprint(x)", "stop")
    complete(session, "k2", prefix=REQUEST["prefix"] + "math.", multiline=True)  # typed through
    session.suggestions.show("x", "", "")  # nothing shown: the next one comes from the store
    complete(session, "k3", multiline=True)
    replies = [m for m in sent if m["request_id"] in ("k1", "k2", "k3")]
    assert [m["type"] for m in replies] == ["chunk", "chunk", "done", "done", "done"]
    assert [m.get("multiline") for m in replies] == [True] * 5
    assert [m.get("prefetched") for m in replies if m["type"] == "done"] == [True, False, True]
    for message in sent:
        assert reply_errors(message, "complete") == [], message


# -- the engine's rule: a real completion wins --------------------------------------------------

slow = pytest.mark.slow


@slow
def test_a_prefetch_never_replaces_a_completion_someone_waits_for(embedded_engine):
    real = embedded_engine.submit("completion", "def fib(n):", max_new_tokens=24)
    prefetch = embedded_engine.submit("completion", "def fib(n):\n", max_new_tokens=24, background=True)
    assert prefetch.wait(5).stop_reason == "cancelled"
    assert real.wait(60).stop_reason in ("eos", "length", "stop")
    prefetch = embedded_engine.submit("completion", "import os", max_new_tokens=64, background=True)
    real = embedded_engine.submit("completion", "import sys", max_new_tokens=4)
    assert prefetch.wait(60).stop_reason == "cancelled" and real.wait(60).stop_reason != "cancelled"


# -- end to end, with the embedded model --------------------------------------------------------

SOURCE = "import math\n\n\ndef circle_area(radius):\n    return math.pi * radius ** 2\n\n\n"


def fields(prefix):
    cells = [{"cell_type": "code", "source": prefix}]
    return {
        "prefix": prefix,
        "suffix": "",
        "multiline": True,
        "max_new_tokens": 24,
        "temperature": 0,
        "variables": False,
        "cells": cells,
        "current": 0,
    }


@slow
def test_the_suggestion_after_an_accepted_one_is_prefetched(embedded_engine):
    sent = Recorder()
    session = CommSession(sent, engine=embedded_engine)
    try:
        session.handle({"type": "complete", "request_id": "a", **fields(SOURCE + "def square_area(side):\n    ")})
        first = sent.wait_for("a")
        assert first["type"] == "done" and first["text"].strip(), first
        # Accepted (Tab): the cell now ends with the suggestion, and the front end prefetches.
        accepted = SOURCE + "def square_area(side):\n    " + first["text"] + "\n\n\n"
        session.handle({"type": "complete", "request_id": "p", "prefetch": True, **fields(accepted)})
        prefetch = sent.wait_for("p")
        assert prefetch["type"] == "done" and prefetch["text"].strip(), prefetch
        assert [m for m in sent.of("p") if m["type"] == "chunk"] == [], "a prefetch does not stream"

        cache = embedded_engine.status()["prefix_cache"]
        started = time.perf_counter()
        session.handle({"type": "complete", "request_id": "n", **fields(accepted)})
        served = sent.wait_for("n", timeout=1)
        elapsed = time.perf_counter() - started
        assert served["from_suggestion"] is True and served["prefetched"] is True
        assert served["generated_tokens"] == 0 and embedded_engine.status()["prefix_cache"] == cache
        assert elapsed < 0.5
    finally:
        session.close()

    # The same text a fresh connection (nothing prefetched) gets from the model at temperature 0.
    fresh_sent = Recorder()
    fresh = CommSession(fresh_sent, engine=embedded_engine)
    try:
        fresh.handle({"type": "complete", "request_id": "f", **fields(accepted)})
        again = fresh_sent.wait_for("f")
    finally:
        fresh.close()
    assert again["generated_tokens"] > 0 and again["text"] == served["text"]
