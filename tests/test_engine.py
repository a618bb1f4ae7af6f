"""The engine with real models: streaming, cancellation, reuse, scheduling, errors."""

import threading
import time

import pytest

from jupyter_codellama.config import CodeLlama
from jupyter_codellama.engine.engine import Engine, EngineError

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Write a Python function that returns the square of a number."}]


def long_prompt(engine, n_tokens: int) -> list[int]:
    tok = engine.loaded.tokenizer
    text = "".join(f"def function_{i}(x):\n    return x * {i}\n\n" for i in range(n_tokens // 10))
    return tok(text)["input_ids"][:n_tokens]


def test_embedded_model_streams_an_answer_that_ends_with_a_reason(embedded_engine):
    chunks = []
    result = embedded_engine.generate(messages=CHAT, max_new_tokens=48, on_chunk=chunks.append)
    assert result.stop_reason in ("eos", "length")
    assert len(chunks) > 3 and "".join(chunks) == result.text
    assert "def" in result.text or "return" in result.text
    for key in ("queue_s", "prefill_s", "first_token_s", "total_s", "tokens_per_s"):
        assert key in result.timings
    assert result.prompt_tokens > 10


def test_status_reports_the_loaded_model(embedded_engine):
    status = embedded_engine.status()
    assert status["state"] == "ready"
    assert status["model"] == "embedded" and status["device"] == "cpu"
    assert status["supports_infill"] is False and status["chat_format"] == "template"


def test_max_new_tokens_and_stop_strings_end_generation(embedded_engine):
    r = embedded_engine.generate("def add(a, b):\n", max_new_tokens=5, use_prefix_cache=False)
    assert r.stop_reason == "length" and len(r.tokens) == 5
    r = embedded_engine.generate("for i in range(3):\n    print(i)\n", max_new_tokens=60, stop=("\n",))
    assert r.stop_reason in ("stop", "eos") and "\n" not in r.text


def test_time_limit_ends_generation_with_reason_time(embedded_engine):
    r = embedded_engine.generate(
        long_prompt(embedded_engine, 100), max_new_tokens=500, max_time=0.5, use_prefix_cache=False
    )
    assert r.stop_reason == "time"
    assert len(r.tokens) < 500
    assert r.timings["total_s"] < 0.5 + 15  # loose: a loaded 2-core machine is slow per step


def test_cancel_during_decoding_stops_within_a_step_or_two(embedded_engine):
    chunks = []
    job = embedded_engine.submit("chat", messages=CHAT, max_new_tokens=400, on_chunk=chunks.append)
    while not chunks:
        time.sleep(0.01)
    cancelled_at = time.perf_counter()
    job.cancel()
    result = job.wait(timeout=10)
    assert result.stop_reason == "cancelled"
    assert time.perf_counter() - cancelled_at < 5  # one decode step: ≈40–80 ms on an idle machine
    assert result.text.startswith("".join(chunks[:1]))


def test_cancel_during_a_long_prefill_stops_between_chunks(embedded_engine):
    ids = long_prompt(embedded_engine, 3000)  # ≈24 chunks of 128 tokens
    chunks = len(range(0, len(ids), 128))
    calls: list[int] = []
    model = embedded_engine.loaded.model  # the CPU kernel's NativeModel
    forward = model.forward

    def counting(*args, **kwargs):
        # Count the kernel's chunk calls rather than time them: the machine may be loaded.
        calls.append(1)
        return forward(*args, **kwargs)

    model.forward = counting
    try:
        job = embedded_engine.submit("generate", ids, max_new_tokens=10, use_prefix_cache=False)
        while not calls:
            time.sleep(0.01)
        job.cancel()
        result = job.wait(timeout=120)
    finally:
        del model.forward
    assert result.stop_reason == "cancelled"
    assert "first_token_s" not in result.timings, "prefill should not have finished"
    # Cancelled during the first chunk: at most the chunk running then (and a racing next one).
    assert len(calls) <= 2 < chunks, f"{len(calls)} of {chunks} chunks ran after the cancel"


def test_prefix_reuse_gives_the_same_tokens_much_faster(embedded_engine):
    engine = embedded_engine
    engine.clear_prefix_cache()
    base = long_prompt(engine, 1200)
    first = engine.generate(base, max_new_tokens=24)
    assert first.cached_tokens == 0
    # The user types a few more characters: the prompt grows by a few tokens.
    longer = base + engine.loaded.tokenizer("    result = ", add_special_tokens=False)["input_ids"]
    reused = engine.generate(longer, max_new_tokens=24)
    fresh = engine.generate(longer, max_new_tokens=24, use_prefix_cache=False)
    assert reused.cached_tokens >= 1200 - 1
    assert reused.tokens == fresh.tokens
    assert reused.timings["first_token_s"] < fresh.timings["first_token_s"] / 3


def test_new_completion_supersedes_the_running_one(embedded_engine):
    ids = long_prompt(embedded_engine, 200)
    first = embedded_engine.submit("completion", ids, max_new_tokens=300, use_prefix_cache=False)
    time.sleep(0.2)
    second = embedded_engine.submit("completion", ids[:150], max_new_tokens=4)
    assert first.wait(timeout=30).stop_reason == "cancelled"
    assert second.wait(timeout=30).stop_reason in ("length", "eos")


def test_completion_is_refused_as_busy_while_a_chat_answer_runs(embedded_engine):
    chat = embedded_engine.submit("chat", messages=CHAT, max_new_tokens=60)
    completion = embedded_engine.submit("completion", "x = ", max_new_tokens=4)
    result = completion.wait(timeout=1)
    assert result.stop_reason == "error" and completion.error_code == "busy"
    assert chat.wait(timeout=60).stop_reason in ("eos", "length"), "chat must not be pre-empted"


def test_chat_jobs_queue_in_order_and_report_queue_wait(embedded_engine):
    jobs = [embedded_engine.submit("generate", f"# {i}\n", max_new_tokens=8) for i in range(3)]
    results = [j.wait(timeout=60) for j in jobs]
    assert all(r.stop_reason in ("eos", "length") for r in results)
    assert results[2].timings["queue_s"] > results[0].timings["queue_s"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_generation_arguments_are_errors_and_the_engine_keeps_working(embedded_engine, kwargs, message):
    with pytest.raises(EngineError, match=message) as info:
        embedded_engine.generate("x = 1", **kwargs)
    assert info.value.code == "bad_request"
    assert embedded_engine.generate("x = 1", max_new_tokens=2).stop_reason in ("length", "eos")


def test_out_of_vocabulary_token_ids_are_rejected(embedded_engine):
    with pytest.raises(EngineError, match="Token ids"):
        embedded_engine.generate([1, 2, 10**9], max_new_tokens=2)


def test_unknown_job_kind_and_missing_prompt_are_rejected(embedded_engine):
    with pytest.raises(ValueError, match="kind"):
        embedded_engine.submit("poem", "x")
    with pytest.raises(ValueError, match="prompt"):
        embedded_engine.submit("generate")


def test_a_broken_stream_consumer_does_not_end_the_generation(embedded_engine):
    def broken(_text):
        raise RuntimeError("the front end went away")

    result = embedded_engine.generate("def f():\n", max_new_tokens=6, on_chunk=broken)
    assert result.stop_reason in ("length", "eos") and result.text


def test_sampling_with_a_seed_is_reproducible(embedded_engine):
    a = embedded_engine.generate("import ", max_new_tokens=8, temperature=0.8, seed=3)
    b = embedded_engine.generate("import ", max_new_tokens=8, temperature=0.8, seed=3)
    assert a.tokens == b.tokens


# -- the Code Llama path: real tokenizer, Code Llama shapes, random weights --------------------


def test_codellama_shaped_model_loads_through_the_same_path_with_infilling(shaped_engine):
    status = shaped_engine.status()
    assert status["state"] == "ready" and status["supports_infill"] is True
    assert status["chat_format"] == "template"
    tok = shaped_engine.loaded.tokenizer
    assert tok("Hello world")["input_ids"] == [1, 15043, 3186]
    assert len(tok.get_vocab()) >= 32016
    assert shaped_engine.loaded.model.hyper.vocab == 32016
    assert status["backend"] == "kernel"  # a Llama checkpoint on a CPU: quantized once for the kernel


def test_codellama_shaped_model_streams_and_stops_at_eot(shaped_engine):
    eot = 32010
    prefix = shaped_engine.loaded.tokenizer("def f(x):\n    ", add_special_tokens=False)["input_ids"]
    ids = [1, 32007, *prefix, 32008, 13, 32009]
    chunks = []
    result = shaped_engine.generate(ids, max_new_tokens=16, stop_token_ids=(eot,), on_chunk=chunks.append)
    assert result.stop_reason in ("length", "eos") and len(result.tokens) <= 16
    assert "".join(chunks) == result.text


def test_codellama_shaped_model_loads_in_nf4_on_the_cpu_when_asked_by_name(shaped_model_dir):
    pytest.importorskip("bitsandbytes")
    engine = Engine(CodeLlama(model=str(shaped_model_dir)))
    try:
        status = engine.load(quantization="nf4").wait(timeout=300)
        assert status["backend"] == "torch"
        assert status["quantization"] == "4bit"
        assert type(engine.loaded.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
        result = engine.generate([1, 822, 285], max_new_tokens=4)
        assert result.stop_reason in ("length", "eos")
    finally:
        engine.shutdown()


# -- loading through the engine: progress, errors, survival -----------------------------------


def test_load_reports_progress_then_ready(shaped_model_dir):
    engine = Engine(CodeLlama())
    seen = []
    engine.on_status(lambda s: seen.append((s["state"], s.get("progress", {}).get("fraction"))))
    try:
        engine.load(str(shaped_model_dir)).wait(timeout=300)
    finally:
        engine.shutdown()
    states = [s for s, _ in seen]
    assert states[0] == "loading" and states[-1] == "ready"
    fractions = [f for s, f in seen if s == "loading" and f is not None]
    assert fractions == sorted(fractions) and len(fractions) >= 3


def test_failed_load_is_an_error_state_and_the_engine_recovers(shaped_model_dir, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    engine = Engine(CodeLlama())
    try:
        with pytest.raises(Exception, match="not in the Hugging Face cache"):
            engine.load("7b-instruct", device="cpu").wait(timeout=60)
        assert engine.status()["state"] == "error"
        assert "HF_HUB_OFFLINE" in engine.status()["error"]
        # A chat request while no model is loaded loads the configured default.
        engine.config.model = str(shaped_model_dir)
        assert engine.generate([1, 822], max_new_tokens=2).stop_reason in ("length", "eos")
        assert engine.status()["state"] == "ready"
    finally:
        engine.shutdown()


def test_completion_never_triggers_a_model_load():
    engine = Engine(CodeLlama())
    try:
        job = engine.submit("completion", "x = ", max_new_tokens=2)
        assert job.wait(timeout=1).stop_reason == "error" and job.error_code == "busy"
        assert engine.status()["state"] == "unloaded"
    finally:
        engine.shutdown()


def test_unload_frees_the_model(shaped_model_dir):
    engine = Engine(CodeLlama(model=str(shaped_model_dir)))
    try:
        engine.load().wait(timeout=300)
        engine.unload()
        assert engine.status()["state"] == "unloaded" and engine.loaded is None
    finally:
        engine.shutdown()


def test_ctrl_c_during_generate_cancels_the_job_and_the_engine_keeps_working(embedded_engine):
    import _thread

    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        embedded_engine.generate(messages=CHAT, max_new_tokens=400)
    assert time.perf_counter() - started < 5
    assert embedded_engine.status()["busy"] is False, "the interrupted job must have stopped"
    assert embedded_engine.generate("x = ", max_new_tokens=2).stop_reason in ("length", "eos")


def test_a_typo_in_load_keeps_the_current_model(embedded_engine):
    from jupyter_codellama.models import UnknownModelError

    with pytest.raises(UnknownModelError, match="7b-instruct"):
        embedded_engine.load("7b-instrukt")
    with pytest.raises(ValueError, match="quantization"):
        embedded_engine.load("embedded", quantization="3bit")
    with pytest.raises(ValueError, match="GiB"):
        embedded_engine.load("embedded", gpu_memory="lots")
    assert embedded_engine.status()["state"] == "ready"
