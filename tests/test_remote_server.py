"""The remote backend against a REAL `transformers serve` (continuous batching, the embedded model
from its local folder, 127.0.0.1), started by the fixture: magics, the comm, and failures.

Answers are kept to a few tokens: a CPU server with continuous batching is slow here.
"""

import re
import time

import pytest
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from jupyter_codellama.comm import PROTOCOL_VERSION, CommSession
from jupyter_codellama.config import CodeLlama
from jupyter_codellama.engine.engine import Engine
from jupyter_codellama.engine.loading import embedded_model_dir
from jupyter_codellama.testing.serve import TransformersServe, free_port
from test_comm import Recorder  # the comm tests' recording `send`

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    serve = TransformersServe(embedded_model_dir(), continuous_batching=True).wait_ready()
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def engine(server):
    engine = Engine()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def ip(engine):
    # start_ipython() gives the shell to its first caller only (test_magics.py may be first).
    from IPython.core.interactiveshell import InteractiveShell

    shell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_codellama")
    shell.magics_manager.registry["CodeLlamaMagics"]._engine = engine
    yield shell
    shell.run_line_magic("unload_ext", "jupyter_codellama")


@pytest.fixture
def session(engine):
    sent = Recorder()
    s = CommSession(sent, engine=engine, namespace=lambda: {})
    s.sent = sent
    yield s
    s.close()


def run(ip, source):
    with capture_output() as out:
        result = ip.run_cell(source, store_history=True)
    return out.stdout, result


def test_only_the_load_line_changes_and_status_shows_the_backend(ip, server):
    out, result = run(ip, f"%codellama load --endpoint {server.url} {server.model}")
    assert result.success, result.error_in_exec
    assert f"ready (served by http://127.0.0.1:{server.port})" in out, out
    _, result = run(ip, "%codellama status")
    table = result.result.data
    assert "remote" in table and f"http://127.0.0.1:{server.port}" in table and "latency_ms" in table


def test_a_chat_answer_streams_into_the_cell(ip, engine, monkeypatch):
    chunks = []
    submit = engine.submit

    def spy(kind, prompt=None, *, on_chunk=None, **kwargs):
        def both(text):
            chunks.append(text)
            on_chunk(text)

        return submit(kind, prompt, on_chunk=both if on_chunk else None, **kwargs)

    monkeypatch.setattr(engine, "submit", spy)
    out, result = run(
        ip,
        "%%codellama --format markdown --max-new-tokens 6 --temperature 0 --context none "
        "-o note\nWrite a Python function that adds two numbers.",
    )
    assert result.success, result.error_in_exec
    assert len(chunks) >= 2, "the answer arrived in one piece, not streamed"
    assert "".join(chunks).strip() and "".join(chunks) in out
    assert ip.user_ns["note"].strip() and "stop: length" in out


def test_a_completion_gives_ghost_text_and_a_superseding_one_cancels_the_first(session, engine):
    prefix = "def add(a, b):\n    return "
    session.handle({"type": "complete", "request_id": "k1", "prefix": prefix, "suffix": "\n", "max_new_tokens": 40})
    deadline = time.monotonic() + 10
    while not engine.status()["busy"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    session.handle(
        {"type": "complete", "request_id": "k2", "prefix": prefix + "a", "suffix": "\n", "max_new_tokens": 4}
    )
    first = session.sent.wait_for("k1", timeout=5)
    assert first["type"] == "done" and first["stop_reason"] == "cancelled", first
    second = session.sent.wait_for("k2", timeout=60)
    assert second["type"] == "done" and second["text"].strip(), second


def test_an_unknown_model_is_one_line_and_the_loaded_one_stays(ip, server):
    with pytest.raises(UsageError) as error:
        ip.run_line_magic("codellama", f"load --endpoint {server.url} no-such-model")
    message = str(error.value)
    assert "has no model 'no-such-model'" in message and "\n" not in message
    assert ip.run_cell("1 + 1").result == 2
    _, result = run(ip, "%codellama status")
    assert "ready" in result.result.data


def _hello_models(config, pick: bool = False) -> list[dict]:
    """The picker's models from the hello; with ``pick``, then loads the first one as its Load
    button does and returns the load's status as the last entry."""
    engine = Engine(config)
    sent = Recorder()
    session = CommSession(sent, engine=engine, namespace=lambda: {})
    try:
        session.handle({"type": "hello", "request_id": "h", "protocol_version": PROTOCOL_VERSION})
        models = sent.wait_for("h", types=("hello",), timeout=30)["capabilities"]["models"]
        if pick:
            session.handle({"type": "load", "request_id": "l", "model": models[0]["name"]})
            models.append(sent.wait_for("l", timeout=120))
        return models
    finally:
        session.close()
        engine.shutdown()


def test_with_an_endpoint_configured_the_sidebars_picker_lists_the_servers_models(server):
    *models, loaded = _hello_models(CodeLlama(endpoint=server.url, model=server.model), pick=True)
    assert [m["name"] for m in models] == [server.model]
    assert models[0]["description"] == f"served by http://127.0.0.1:{server.port}"
    assert loaded["type"] == "done" and loaded["status"]["backend"] == "remote", loaded
    # a server that is down leaves the configured model, quickly
    started = time.monotonic()
    down = _hello_models(CodeLlama(endpoint=f"http://127.0.0.1:{free_port()}/v1", model="team-model"))
    assert [m["name"] for m in down] == ["team-model"] and time.monotonic() - started < 10


def test_stopping_the_server_mid_answer_is_one_line_and_the_kernel_keeps_working(ip, session, server):
    """Last in this module: it stops the server."""
    session.handle(
        {
            "type": "chat",
            "request_id": "c1",
            "max_new_tokens": 60,
            "messages": [{"role": "user", "content": "Explain Python generators."}],
        }
    )
    deadline = time.monotonic() + 60
    while not any(m["type"] == "chunk" for m in session.sent.of("c1")):
        assert time.monotonic() < deadline, session.sent.of("c1")
        time.sleep(0.02)
    server.stop()
    reply = session.sent.wait_for("c1", timeout=10)
    assert reply["type"] == "error", reply
    assert re.search(r"closed the connection|ended the stream", reply["message"]) and "\n" not in reply["message"]
    assert ip.run_cell("2 + 2").result == 4
    started = time.monotonic()
    session.handle({"type": "complete", "request_id": "k3", "prefix": "x = ", "suffix": "", "max_new_tokens": 4})
    dead = session.sent.wait_for("k3", timeout=10)
    assert dead["type"] == "error" and "Cannot reach the server" in dead["message"]
    assert time.monotonic() - started < 3
