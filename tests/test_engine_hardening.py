"""The engine's promises under faults: every job ends, the engine never stays stuck, the
tokenizer is never used from two threads at once (real embedded model)."""

import threading
import time

import pytest

from jupyter_codellama.comm import CommSession
from jupyter_codellama.config import CodeLlama
from jupyter_codellama.engine.engine import Engine

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Explain Python generators at length, with examples."}]


@pytest.fixture(scope="module")
def own_engine():
    """An engine of its own: these tests unload it."""
    engine = Engine(CodeLlama(model="embedded", prefill_chunk_tokens=128))
    engine.load().wait(timeout=300)
    yield engine
    engine.shutdown()


def ensure_loaded(engine):
    if engine.status()["state"] != "ready":
        engine.load("embedded").wait(timeout=300)


def wait_for_chunks(chunks, timeout=60):
    deadline = time.monotonic() + timeout
    while not chunks:
        assert time.monotonic() < deadline, "no text arrived"
        time.sleep(0.01)


class Abort(BaseException):
    """Like a KeyboardInterrupt or SystemExit raised inside generation."""


def test_a_base_exception_in_generation_ends_the_job_and_frees_the_engine(own_engine, monkeypatch):
    ensure_loaded(own_engine)

    def abort(job, queue_s):
        raise Abort("stopped from the inside")

    monkeypatch.setattr(own_engine, "_generate", abort)
    job = own_engine.submit("chat", messages=CHAT, max_new_tokens=4)
    result = job.wait(timeout=10)
    assert result.stop_reason == "error" and job.error_code == "generation_failed"
    assert "Abort" in result.error
    monkeypatch.undo()
    assert own_engine.status()["busy"] is False
    completion = own_engine.submit("completion", "x = ", max_new_tokens=2)
    assert completion.wait(timeout=60).stop_reason in ("length", "eos", "stop"), completion.error_code


def test_unload_during_generation_cancels_it_then_a_load_works_again(own_engine):
    ensure_loaded(own_engine)
    chunks = []
    job = own_engine.submit("chat", messages=CHAT, max_new_tokens=400, on_chunk=chunks.append)
    wait_for_chunks(chunks)
    own_engine.unload(timeout=30)
    assert job.wait(timeout=1).stop_reason == "cancelled", "the answer must stop with the model"
    assert own_engine.status()["state"] == "unloaded" and own_engine.loaded is None
    own_engine.load("embedded").wait(timeout=300)
    assert own_engine.generate("x = ", max_new_tokens=2).stop_reason in ("length", "eos")


def test_unload_waits_with_a_timeout_when_the_engine_is_stuck(own_engine):
    ensure_loaded(own_engine)
    release = threading.Event()
    started = threading.Event()

    def stuck_builder(loaded):
        started.set()
        release.wait(30)  # a builder that does not look at the cancel flag
        return [1, 2, 3]

    job = own_engine.submit("generate", stuck_builder, max_new_tokens=1)
    assert started.wait(30)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="unload"):
        own_engine.unload(timeout=0.5)
    assert time.monotonic() - t0 < 5
    release.set()
    job.wait(timeout=30)
    deadline = time.monotonic() + 30
    while own_engine.status()["state"] != "unloaded":  # the queued unload still happens
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_preview_beside_engine_work_always_has_the_right_token_ids(embedded_engine):
    """``context-preview`` tokenizes while the engine thread encodes other prompts: with the
    embedded model's tokenizer, special tokens then came out as wrong ids now and then."""
    from jupyter_codellama.prompts import build_chat_prompt
    from jupyter_codellama.prompts.encoding import prompt_encoder

    sent = []
    session = CommSession(sent.append, engine=embedded_engine)
    # Content that spells special tokens: it must stay text, while the template's own are ids.
    cells = [{"cell_type": "code", "source": f"x_{i} = '</s><|im_end|>' * {i}\n"} for i in range(8)]
    messages = [{"role": "user", "content": "What does <|im_start|> mean here?"}]
    request = {
        "type": "context-preview",
        "for": "chat",
        "cells": cells,
        "current": 7,
        "variables": False,
        "messages": messages,
    }
    session.handle({**request, "request_id": "reference"})
    reference = _wait_reply(sent, "reference")["preview"]["ids"]
    stop = threading.Event()

    def build(loaded):
        # The engine thread's own encoding: content (special tokens split) and a template (not).
        encoder = prompt_encoder(loaded.tokenizer)
        for _ in range(20):
            encoder.encode(cells[-1]["source"] * 20)
            prompt = build_chat_prompt(loaded.tokenizer, loaded.spec, messages, max_new_tokens=16)
        return prompt

    def engine_work():
        while not stop.is_set():
            embedded_engine.submit("generate", build, max_new_tokens=1).wait(timeout=60)

    worker = threading.Thread(target=engine_work)
    worker.start()
    try:
        deadline, wrong, n = time.monotonic() + 3, 0, 0
        while time.monotonic() < deadline:
            n += 1
            session.handle({**request, "request_id": f"p{n}"})
            reply = _wait_reply(sent, f"p{n}")
            assert reply["type"] == "done", reply
            wrong += reply["preview"]["ids"] != reference
    finally:
        stop.set()
        worker.join(60)
    assert n > 3 and wrong == 0, f"{wrong} of {n} previews had other ids than the same preview alone"


def _wait_reply(sent, request_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        for m in list(sent):
            if m.get("request_id") == request_id and m["type"] in ("done", "error"):
                return m
        assert time.monotonic() < deadline, f"no reply to {request_id}"
        time.sleep(0.005)


def test_the_python_apis_messages_and_raw_text_lose_the_kernels_secrets(embedded_engine, monkeypatch):
    """``engine.submit("chat", messages=...)`` and a raw text prompt are redacted with the
    kernel's namespace, as the magics and the lab are."""
    from types import SimpleNamespace

    import IPython

    from jupyter_codellama.engine.engine import Job, prepare

    secret = "Zq9-very-private-Value"
    # The kernel's shell as get_ipython() gives it (the global test shell is test_magics.py's).
    shell = SimpleNamespace(user_ns={"db_pass": secret}, user_ns_hidden={})
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)

    def prompt_texts(loaded):
        chat = Job.of("chat", messages=[{"role": "user", "content": f"log in with {secret}"}])
        raw = Job.of("generate", f"here it is: {secret}")
        return [loaded.tokenizer.decode(prepare(job, loaded).prompt_ids) for job in (chat, raw)]

    texts = embedded_engine.run_with_model(prompt_texts).wait(timeout=60)
    assert "log in with" in texts[0] and "here it is" in texts[1]
    for text in texts:
        assert "private" not in text, text
