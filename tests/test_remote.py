"""The remote backend against a tiny fake OpenAI server: streaming, cancel, limits, each failure."""

import json
import logging
import threading
import time

import pytest

from jupyter_codellama.config import CodeLlama
from jupyter_codellama.engine.engine import Engine
from jupyter_codellama.engine.generation import GenerationRequest
from jupyter_codellama.engine.loading import ModelLoadError, embedded_model_dir
from jupyter_codellama.engine.remote import RemoteModel, RemoteSettings, check_endpoint, prompt_text, read_api_key
from jupyter_codellama.testing.openai_server import FakeOpenAIServer

KEY = "sk-test-4f9c2a7e"


@pytest.fixture(scope="module")
def model_dir():
    return str(embedded_model_dir())


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def server(model_dir):
    with FakeOpenAIServer(model_dir) as fake:
        yield fake


def remote_for(server, *, key=None, model=None, read_timeout=10.0):
    return RemoteModel(RemoteSettings(server.url, model or server.model, api_key=key, read_timeout=read_timeout))


def ask(remote, tokenizer, *, cancel=None, chunks=None, **request):
    ids = tokenizer("def add(a, b):")["input_ids"]
    req = GenerationRequest(prompt_ids=ids, max_new_tokens=16, **request)
    return remote.generate_stream(
        None, tokenizer, req, cancel=cancel, on_text=(chunks.append if chunks is not None else None)
    )


def test_the_raw_prompt_streams_back_and_stop_strings_cut_it_as_in_the_kernel(server, tokenizer):
    server.reply = ["def f():", "\n    return 1", "\n# END", " junk"]
    chunks = []
    result = ask(remote_for(server), tokenizer, chunks=chunks, stop=("\n# END",))
    assert result.stop_reason == "stop" and result.error is None
    assert result.text == "def f():\n    return 1" == "".join(chunks)
    body = server.requests[-1]
    # Our prompt text, not a chat request: the server applies no template of its own.
    assert body["prompt"] == prompt_text(tokenizer, tokenizer("def add(a, b):")["input_ids"]) == "def add(a, b):"
    assert body["stream"] is True and body["model"] == server.model and "messages" not in body


def test_stop_reason_and_timings_come_from_the_stream(server, tokenizer):
    result = ask(remote_for(server), tokenizer)
    assert result.text == "Hello world" and result.stop_reason == "eos"
    assert result.prompt_tokens == 5  # the server's usage, not a local count
    assert {"first_token_s", "total_s", "round_trip_s"} <= set(result.timings)


def test_cancel_returns_at_once_and_closes_the_stream(server, tokenizer):
    server.mode, server.delay, server.reply = "slow", 1.0, ["a"] * 20
    cancel, chunks = threading.Event(), []

    def cancel_after_first_chunk():
        while not chunks:
            time.sleep(0.01)
        cancel.set()

    threading.Thread(target=cancel_after_first_chunk, daemon=True).start()
    result = ask(remote_for(server), tokenizer, cancel=cancel, chunks=chunks)
    # Returned within a poll of the cancel, not at the server's next piece (a second later).
    assert result.stop_reason == "cancelled" and result.timings["total_s"] < 0.9
    assert server.disconnected.wait(3), "the server kept streaming to a cancelled request"


def test_the_time_limit_ends_a_slow_stream(server, tokenizer):
    server.mode, server.delay, server.reply = "slow", 1.0, ["a"] * 20
    started = time.perf_counter()
    result = ask(remote_for(server), tokenizer, max_time=0.3)
    assert result.stop_reason == "time" and time.perf_counter() - started < 0.9


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong key", "refused the API key (HTTP 401)"),
        ("unknown model", "has no model 'no-such-model'"),
        ("429", "overloaded (HTTP 429); retry after 7 s"),
        ("malformed", "malformed stream"),
        ("die", "ended the stream before the answer was complete"),
        ("down", "Cannot reach the server at http://127.0.0.1:"),
        ("timeout", "sent nothing for 0.5 s (timed out)"),
    ],
)
def test_each_failure_is_one_clear_line_without_the_key(model_dir, tokenizer, case, expected):
    with FakeOpenAIServer(model_dir, api_key=KEY) as server:
        key, model = (
            ("wrong-key-0000" if case == "wrong key" else KEY),
            ("no-such-model" if case == "unknown model" else None),
        )
        server.mode = case if case in ("429", "malformed", "die") else "ok"
        server.reply, server.delay = ["a", "b", "c"], (3.0 if case == "timeout" else 0.0)
        remote = remote_for(server, key=key, model=model, read_timeout=0.5)
        if case == "down":
            server.stop()
        result = ask(remote, tokenizer)
    assert result.stop_reason == "error", result
    assert expected in result.error and "\n" not in result.error
    assert KEY not in result.error and "wrong-key-0000" not in result.error


def test_the_key_comes_from_a_file_or_a_variable_never_from_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVER_KEY", KEY)
    assert read_api_key(CodeLlama(api_key_env="MY_SERVER_KEY")) == KEY
    (tmp_path / "key").write_text(KEY + "\n")
    assert read_api_key(CodeLlama(api_key_file=str(tmp_path / "key"), api_key_env="")) == KEY
    with pytest.raises(ModelLoadError, match="Cannot read the API key file"):
        read_api_key(CodeLlama(api_key_file=str(tmp_path / "missing")))


@pytest.mark.parametrize("url", ["ftp://host/v1", "host:8000", "http://user:secret@host/v1", ""])
def test_endpoint_urls_are_checked_before_anything_is_unloaded(url):
    with pytest.raises(ValueError):
        check_endpoint(url)


# -- through the engine ------------------------------------------------------------------------


@pytest.fixture
def keyed_engine(model_dir, tmp_path):
    (tmp_path / "key").write_text(KEY)
    with FakeOpenAIServer(model_dir, api_key=KEY) as server:
        # The engine's own settings, not the shell's: the key file is named only here.
        engine = Engine(CodeLlama(api_key_file=str(tmp_path / "key"), temperature=0.0))
        try:
            engine.load(model_dir, endpoint=server.url).wait(60)
            yield engine, server
        finally:
            engine.shutdown()


def test_a_keyed_server_answers_and_the_key_shows_nowhere(keyed_engine, caplog):
    engine, server = keyed_engine
    caplog.set_level(logging.DEBUG)
    chunks = []
    result = engine.generate(
        messages=[{"role": "user", "content": "hi"}], kind="chat", max_new_tokens=8, on_chunk=chunks.append
    )
    assert "".join(chunks) == result.text == "Hello world"
    assert server.headers_seen[-1]["Authorization"] == f"Bearer {KEY}"
    status = engine.status()
    assert status["backend"] == "remote" and status["endpoint"] == server.url.rsplit("/v1", 1)[0]
    assert status["latency_ms"] > 0 and status["served_model"] == server.model
    assert KEY not in json.dumps(status) and KEY not in caplog.text


def test_completions_never_queue_behind_a_dead_server(keyed_engine):
    engine, server = keyed_engine
    server.mode, server.delay, server.reply = "slow", 1.0, ["a"] * 20
    first = engine.submit("completion", "x = ", max_new_tokens=8)
    time.sleep(0.2)
    second = engine.submit("completion", "x = 1", max_new_tokens=8)
    assert first.wait(1).stop_reason == "cancelled"  # superseded at once, not after the server's next piece
    second.cancel()
    second.wait(1)
    server.stop()
    started = time.perf_counter()
    dead = engine.submit("completion", "y = ", max_new_tokens=8).wait(5)
    assert dead.stop_reason == "error" and "Cannot reach" in dead.error
    assert time.perf_counter() - started < 2


def test_a_wrong_model_name_or_url_fails_the_load_up_front_and_keeps_the_loaded_model(keyed_engine):
    engine, server = keyed_engine
    with pytest.raises(ModelLoadError, match="has no model 'codellama/CodeLlama-34b-Instruct-hf'; it serves: "):
        engine.load("codellama/CodeLlama-34b-Instruct-hf", endpoint=server.url)
    with pytest.raises(ValueError, match="Not an endpoint URL"):
        engine.load(server.model, endpoint="localhost:8000")
    status = engine.status()
    assert status["state"] == "ready" and status["served_model"] == server.model
    assert engine.generate("x = ", max_new_tokens=4).text == "Hello world"


def test_code_llama_chat_and_infill_go_out_as_metas_text_without_the_bos(codellama_tokenizer):
    """The server tokenizes the text again and adds its own BOS: the text must be the in-kernel
    prompt in Meta's notation, minus that BOS."""
    from jupyter_codellama.models import resolve_model
    from jupyter_codellama.prompts import build_chat_prompt, build_infill_prompt

    spec = resolve_model("7b-instruct")
    infill = build_infill_prompt(codellama_tokenizer, spec, "def f(x):\n    ", "\n    return y\n")
    chat = build_chat_prompt(codellama_tokenizer, spec, [{"role": "user", "content": "Hi there"}])
    for prompt in (infill, chat):
        assert prompt.text.startswith("<s>")
        assert prompt_text(codellama_tokenizer, prompt.ids) == prompt.text[len("<s>") :]
    assert prompt_text(codellama_tokenizer, infill.ids) == "<PRE> def f(x):\n     <SUF>\n    return y\n <MID>"


def test_the_indentation_cut_off_for_token_healing_goes_back_into_the_prompt(server, tokenizer):
    """The server cannot steer the first tokens through it: it gets the whole text, and the
    ghost text starts after the indentation, as in the kernel."""
    result = ask(remote_for(server), tokenizer, lead="\n    ")
    assert server.requests[-1]["prompt"] == "def add(a, b):\n    " and result.text == "Hello world"


def test_tls_is_verified_unless_the_configured_ca_signed_the_certificate(model_dir, tmp_path):
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeOpenAIServer(model_dir, ssl_context=context) as server:
        assert server.url.startswith("https://")
        untrusted = RemoteModel(RemoteSettings(server.url, server.model))
        with pytest.raises(ModelLoadError, match="TLS certificate of https://127.0.0.1:.* could not be verified"):
            untrusted.list_models()
        trusted = RemoteModel(RemoteSettings(server.url, server.model, verify=str(cert)))
        assert trusted.list_models() == [server.model]


def test_configuration_alone_selects_the_remote_backend(server, model_dir):
    engine = Engine(CodeLlama(endpoint=server.url, model=model_dir))
    try:
        # The first request loads the configured model, as in the kernel: here, from the server.
        result = engine.generate(messages=[{"role": "user", "content": "hi"}], kind="chat", max_new_tokens=4)
        assert result.text == "Hello world" and engine.status()["backend"] == "remote"
    finally:
        engine.shutdown()


def test_a_served_name_that_names_no_tokenizer_asks_for_endpoint_tokenizer_up_front(model_dir, keyed_engine):
    engine, _ = keyed_engine
    with FakeOpenAIServer("default") as server:  # llama-server's name without --alias
        with pytest.raises(ModelLoadError, match="set CodeLlama.endpoint_tokenizer"):
            engine.load("default", endpoint=server.url)
        assert engine.status()["state"] == "ready"  # the loaded model stays
        other = Engine(CodeLlama(endpoint_tokenizer=model_dir))
        try:
            other.load("default", endpoint=server.url).wait(30)
            assert other.generate("x = ", max_new_tokens=4).text == "Hello world"
        finally:
            other.shutdown()


def test_what_text_cannot_carry_goes_as_token_ids_and_as_text_where_only_text_is_taken(server, codellama_tokenizer):
    """In the kernel, content never becomes control ids, and infilling uses the FIM ids. The
    server tokenizes text again: '<PRE>' in text is no FIM token, and a cell's literal '</s>'
    would end the prompt. Such prompts go as our token ids, unless the server takes text only."""
    from jupyter_codellama.models import resolve_model
    from jupyter_codellama.prompts import build_chat_prompt, build_infill_prompt

    tok, spec = codellama_tokenizer, resolve_model("7b-instruct")
    remote = remote_for(server)
    ask_with = lambda prompt: remote.generate_stream(  # noqa: E731
        None, tok, GenerationRequest(prompt_ids=prompt.ids, max_new_tokens=4)
    )
    chat = build_chat_prompt(tok, spec, [{"role": "user", "content": "Hi there"}])
    infill = build_infill_prompt(tok, spec, 'end = "</s>"  # <s>\n', "\nprint(end)\n")
    ask_with(chat)
    assert server.requests[-1]["prompt"] == chat.text[len("<s>") :]  # text reads back exactly
    ask_with(infill)
    assert server.requests[-1]["prompt"] == infill.ids
    server.text_only = True
    assert ask_with(infill).text == "Hello world"
    assert isinstance(server.requests[-1]["prompt"], str)
    ask_with(infill)  # remembered: no second try with ids
    assert isinstance(server.requests[-2]["prompt"], str) and isinstance(server.requests[-1]["prompt"], str)
