"""The generation loop drives any decoder through one interface (prefill, step, close).

A scripted decoder (no model), the PyTorch decoder of a tiny random Llama and the CPU kernel's
decoder of a tiny random GGUF go through the same ``generate_stream`` and must end for the same
reasons: eos, stop string, length, time, cancel.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from jupyter_codellama.engine.generation import Cancelled, GenerationRequest, PrefixCache, generate_stream

VOCAB = 64
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n"
assert len(ALPHABET) == VOCAB


class CharTokenizer:
    """One character per id: the text of a run is easy to predict."""

    def decode(self, ids, **_kw) -> str:
        return "".join(ALPHABET[i] for i in ids)


class ScriptedCache:
    """The ids run so far; crops and copies as DynamicCache does (what PrefixCache needs)."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def get_seq_length(self) -> int:
        return len(self.ids)

    def crop(self, max_length: int) -> None:
        self.ids = self.ids[:max_length] if max_length >= 0 else self.ids[: len(self.ids) + max_length]

    @property
    def nbytes(self) -> int:
        return 8 * len(self.ids)


class ScriptedDecoder:
    """The next token is a fixed function of the last one; every call is recorded."""

    def __init__(self, cache: ScriptedCache, calls: list, *, chunk: int, should_stop) -> None:
        self.cache, self.calls, self.chunk, self.should_stop = cache, calls, chunk, should_stop

    def _logits(self) -> torch.Tensor:
        logits = torch.zeros(VOCAB)
        logits[(self.cache.ids[-1] * 7 + 3) % VOCAB] = 1.0
        return logits

    def prefill(self, ids):
        self.calls.append(("prefill", list(ids)))
        for start in range(0, len(ids), self.chunk):
            if start and self.should_stop():
                raise Cancelled
            self.cache.ids.extend(ids[start : start + self.chunk])
        return self._logits()

    def step(self, token: int):
        self.calls.append(("step", token))
        self.cache.ids.append(token)
        return self._logits()

    def close(self) -> None:
        self.calls.append(("close",))


class ScriptedBackend:
    def __init__(self) -> None:
        self.calls: list = []

    def new_cache(self) -> ScriptedCache:
        return ScriptedCache()

    def decoder(self, cache, *, chunk: int, should_stop) -> ScriptedDecoder:
        return ScriptedDecoder(cache, self.calls, chunk=chunk, should_stop=should_stop)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval()


def _tiny_kernel_model(folder, cache_dir):
    """A one-layer F32 GGUF served by the CPU kernel (its pack file in ``folder``)."""
    from jupyter_codellama.engine.native import NativeModel, open_pack
    from jupyter_codellama.testing.gguf_model import TinyShape, write_tiny_gguf

    path = folder / "tiny.gguf"
    shape = TinyShape(dim=128, n_layers=1, n_heads=1, n_kv=1, hidden=128, vocab=VOCAB, context=256)
    write_tiny_gguf(path, "F32", shape=shape)
    info, pack = open_pack(path, folder)
    return NativeModel(info, pack, n_threads=1, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def kernel_model(tmp_path_factory, cache_dir):
    return _tiny_kernel_model(tmp_path_factory.mktemp("loop-gguf"), cache_dir)


@pytest.fixture(params=["scripted", "torch", "kernel"])
def model(request):
    if request.param == "kernel":
        return request.getfixturevalue("kernel_model")
    return ScriptedBackend() if request.param == "scripted" else _tiny_llama()


PROMPT = [5, 9, 12, 3, 40, 41, 7, 8]


def _generate(model, *, eos=(), prefill_chunk=256, **fields):
    fields.setdefault("use_prefix_cache", False)
    kwargs = {k: fields.pop(k) for k in ("cancel", "on_text", "prefix_cache") if k in fields}
    request = GenerationRequest(prompt_ids=fields.pop("prompt_ids", PROMPT), **fields)
    return generate_stream(model, CharTokenizer(), request, eos_token_ids=eos, prefill_chunk=prefill_chunk, **kwargs)


def _first_at(items, value) -> int:
    return list(items).index(value)


def test_length(model):
    probe = _generate(model, max_new_tokens=6)
    assert probe.stop_reason == "length"
    assert len(probe.tokens) == 6
    assert probe.text == CharTokenizer().decode(probe.tokens)


def test_eos_ends_before_the_token_is_shown(model):
    probe = _generate(model, max_new_tokens=6)
    eos = probe.tokens[2]
    end = _first_at(probe.tokens, eos)
    result = _generate(model, max_new_tokens=6, eos=(eos,))
    assert result.stop_reason == "eos"
    assert result.tokens == probe.tokens[: end + 1]
    assert result.text == probe.text[:end]


def test_a_stop_string_cuts_the_text(model):
    probe = _generate(model, max_new_tokens=6)
    stop = probe.text[2:4]
    result = _generate(model, max_new_tokens=6, stop=(stop,))
    assert result.stop_reason == "stop"
    assert result.text == probe.text[: probe.text.index(stop)]


def test_the_time_limit_ends_after_the_first_token(model):
    result = _generate(model, max_new_tokens=6, max_time=1e-9)
    assert (result.stop_reason, len(result.tokens)) == ("time", 1)


def test_a_cancel_during_decoding_stops_after_the_shown_token(model):
    cancel = threading.Event()
    shown: list[str] = []

    def on_text(text: str) -> None:
        shown.append(text)
        cancel.set()

    result = _generate(model, max_new_tokens=6, cancel=cancel, on_text=on_text)
    assert result.stop_reason == "cancelled"
    assert len(result.tokens) == 1
    assert "".join(shown) == result.text


def test_a_cancel_during_prefill_stops_between_chunks(model):
    cancel = threading.Event()
    cancel.set()
    result = _generate(model, max_new_tokens=6, cancel=cancel, prefill_chunk=3)
    assert (result.stop_reason, result.tokens, result.text) == ("cancelled", [], "")


def test_the_prefix_cache_gives_the_same_tokens_and_prefills_only_the_new_tail(model):
    cache = PrefixCache(max_bytes=1 << 30)
    first = _generate(model, max_new_tokens=4, use_prefix_cache=True, prefix_cache=cache)
    longer = PROMPT + [20, 21]
    fresh = _generate(model, max_new_tokens=4, prompt_ids=longer)
    reused = _generate(model, max_new_tokens=4, prompt_ids=longer, use_prefix_cache=True, prefix_cache=cache)
    assert first.cached_tokens == 0
    assert reused.cached_tokens == len(PROMPT)
    assert reused.tokens == fresh.tokens
    if isinstance(model, ScriptedBackend):
        assert model.calls[-1] == ("close",)
        prefills = [c[1] for c in model.calls if c[0] == "prefill"]
        assert prefills[-1] == [20, 21]


def test_the_decoder_is_closed_on_every_exit():
    backend = ScriptedBackend()
    cancel = threading.Event()
    cancel.set()
    for kwargs in ({"max_new_tokens": 2}, {"max_new_tokens": 2, "cancel": cancel, "prefill_chunk": 2}):
        backend.calls.clear()
        _generate(backend, **copy.copy(kwargs))
        assert backend.calls.count(("close",)) == 1
        assert backend.calls[-1] == ("close",)
