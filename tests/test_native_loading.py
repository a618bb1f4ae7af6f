"""Loading for the CPU kernel: checkpoints quantized once to a cached GGUF, GGUF paths, hub names."""

from __future__ import annotations

import time

import numpy as np
import pytest

from jupyter_codellama.engine.generation import GenerationRequest, generate_stream
from jupyter_codellama.engine.loading import KernelOptions, LoadOptions, ModelNotAvailableError, load_model
from jupyter_codellama.models import UnknownModelError, resolve_model
from jupyter_codellama.testing.gguf_model import TinyShape, agreement, reference_greedy, rounding_of

pytestmark = pytest.mark.slow


def _weights_of(gguf_path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """What the GGUF's blocks dequantize to, per tensor (GGUF row order)."""
    from gguf import GGUFReader, quants

    reader = GGUFReader(str(gguf_path))
    out = {}
    for t in reader.tensors:
        w = quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        out[t.name] = w.reshape([int(n) for n in reversed(t.shape)] if len(t.shape) > 1 else -1)
    return out, {t.name: t.tensor_type.name for t in reader.tensors}


def _greedy(loaded, ids, n=24):
    r = generate_stream(
        loaded.model, loaded.tokenizer, GenerationRequest(list(ids), max_new_tokens=n), eos_token_ids=()
    )
    return r.tokens


def test_a_checkpoint_is_quantized_once_to_a_cached_4bit_gguf(shaped_model_dir, cache_dir):
    from transformers import AutoConfig

    options = LoadOptions(model=str(shaped_model_dir), quantization="4bit", cache_dir=str(cache_dir))
    loaded = load_model(options)
    assert loaded.backend == "kernel" and loaded.quantization.startswith("Q4_0")
    gguf_path = loaded.model.info.path
    assert gguf_path.is_file() and gguf_path.parent == cache_dir / "gguf"
    weights, kinds = _weights_of(gguf_path)
    assert kinds["blk.0.attn_q.weight"] == kinds["blk.1.ffn_up.weight"] == "Q4_0"

    # The tokens are a float64 forward's on exactly those 4-bit weights.
    cfg = AutoConfig.from_pretrained(shaped_model_dir)
    shape = TinyShape(
        dim=cfg.hidden_size,
        n_layers=cfg.num_hidden_layers,
        n_heads=cfg.num_attention_heads,
        n_kv=cfg.num_key_value_heads,
        hidden=cfg.intermediate_size,
        vocab=cfg.vocab_size,
        rope_theta=cfg.rope_parameters["rope_theta"],
        eps=cfg.rms_norm_eps,
    )
    ids = loaded.tokenizer("def fibonacci(n):\n")["input_ids"]
    tokens = _greedy(loaded, ids)
    exact = load_model(options, kernel=KernelOptions(activations="fp32", kv_cache="fp32"))
    assert _greedy(exact, ids) == reference_greedy(weights, shape, ids, 24)
    # int8 activations (the default) round where the reference is told to; near ties aside, the
    # reference's greedy tokens are the kernel's own choices
    assert agreement(loaded.model, ids, reference_greedy(weights, shape, ids, 24, rounding_of(kinds))) >= 0.9

    # A second load maps the cached file: no second quantization, the same tokens.
    stamp = gguf_path.stat().st_mtime_ns
    started = time.perf_counter()
    again = load_model(options)
    assert time.perf_counter() - started < 20  # no quantization (that takes far longer on big models)
    assert again.model.info.path == gguf_path and gguf_path.stat().st_mtime_ns == stamp
    assert _greedy(again, ids) == tokens
    # The checkpoint's own tokenizer (FIM pieces and all) comes along.
    assert again.spec.supports_infill and again.tokenizer("Hello world")["input_ids"] == [1, 15043, 3186]


def test_8bit_on_a_cpu_is_q8_0_for_the_kernel(shaped_model_dir, cache_dir):
    loaded = load_model(LoadOptions(model=str(shaped_model_dir), quantization="8bit", cache_dir=str(cache_dir)))
    assert loaded.backend == "kernel" and loaded.quantization.startswith("Q8_0")
    assert len(_greedy(loaded, [1, 822, 285], n=4)) == 4


def test_a_gguf_path_loads_with_its_own_tokenizer(tmp_path, cache_dir):
    """The embedded model's GGUF, named by path: the tokenizer and chat template come from the file."""
    from jupyter_codellama.engine.loading import find_embedded_gguf

    loaded = load_model(LoadOptions(model=str(find_embedded_gguf()), cache_dir=str(cache_dir)))
    assert loaded.backend == "kernel" and loaded.spec.family == "custom"
    assert loaded.spec.chat_format == "template" and loaded.spec.supports_infill is False
    assert loaded.tokenizer.eos_token_id in loaded.eos_token_ids
    assert "im_start" in loaded.tokenizer.chat_template


def test_a_hub_gguf_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="cannot be downloaded"):
        load_model(LoadOptions(model="TheBloke/CodeLlama-7B-GGUF/codellama-7b.Q4_K_M.gguf", cache_dir=str(tmp_path)))
    assert time.perf_counter() - started < 2


def test_gguf_names_resolve_or_say_what_is_expected(tmp_path):
    f = tmp_path / "model.Q4_0.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f)).repo_id == str(f)
    assert resolve_model("owner/repo/file.Q4_K_M.gguf").repo_id == "owner/repo/file.Q4_K_M.gguf"
    with pytest.raises(UnknownModelError, match="No GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_a_codellama_gguf_carries_its_tokenizer_and_infilling_ids(tmp_path, cache_dir):
    """A GGUF with the real Code Llama tokenizer in it: the FIM prompt's ids are exactly
    transformers' reference ids for CodeLlama-7b, and <EOT> ends an answer."""
    from jupyter_codellama.prompts import infill_ids
    from jupyter_codellama.testing.gguf_model import TinyShape, write_tiny_gguf
    from jupyter_codellama.testing.gguf_tokenizer import add_codellama_tokenizer

    path = tmp_path / "tiny-codellama.Q4_0.gguf"
    write_tiny_gguf(
        path,
        "Q4_0",
        shape=TinyShape(n_layers=1, vocab=32016),
        add_tokenizer=lambda w: add_codellama_tokenizer(w, cache_dir / "test-assets"),
    )
    loaded = load_model(LoadOptions(model=str(path), cache_dir=str(tmp_path)))
    assert loaded.backend == "kernel" and loaded.spec.supports_infill
    tok = loaded.tokenizer
    prefix, suffix = 'def remove_non_ascii(s: str) -> str:\n    """ ', "\n    return result\n"
    assert infill_ids(tok, prefix, suffix) == [
        1, 32007, 822, 3349, 29918, 5464, 29918, 294, 18869, 29898, 29879, 29901, 851, 29897, 1599, 851,
        29901, 13, 1678, 9995, 29871, 32008, 13, 1678, 736, 1121, 13, 32009]  # fmt: skip
    assert 32010 in loaded.eos_token_ids
    ids = infill_ids(tok, prefix, suffix)
    result = generate_stream(
        loaded.model, tok, GenerationRequest(ids, max_new_tokens=8), eos_token_ids=loaded.eos_token_ids
    )
    assert result.stop_reason in ("length", "eos") and result.tokens
