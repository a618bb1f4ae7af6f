"""The fast CPU decode path (engine/fast.py): same greedy tokens as the eager path, clean fallback.

No timing asserts here: speed is measured by benchmarks/decode.py.
"""
from __future__ import annotations

import pytest
import torch

from jupyter_codellama.engine import fast
from jupyter_codellama.engine.generation import GenerationRequest, PrefixCache, generate_stream

pytestmark = pytest.mark.skipif(not fast.cpu_supports_avx2(), reason="the fast kernel needs AVX2/FMA/F16C")

PROMPTS = [
    "def quicksort(items):\n    \"\"\"Sort a list.\"\"\"\n",
    "<|im_start|>user\nWhat is a Python decorator? Answer briefly.<|im_end|>\n<|im_start|>assistant\n",
    "import numpy as np\n\n# compute the mean of each column of a matrix\ndef column_means(",
]


@pytest.fixture(scope="module")
def loaded(embedded_engine):
    return embedded_engine.loaded


@pytest.fixture(scope="module")
def decoder(loaded, cache_dir):
    from jupyter_codellama.engine.loading import find_embedded_gguf

    return fast.prepare_fast_decoder(loaded.model, gguf_path=find_embedded_gguf(), cache_dir=cache_dir)


def run(loaded, ids, *, decoder=None, prefix_cache=None, n=40, **kw):
    chunks = []
    result = generate_stream(loaded.model, loaded.tokenizer,
                             GenerationRequest(list(ids), max_new_tokens=n, **kw),
                             eos_token_ids=(), prefix_cache=prefix_cache, prefill_chunk=128,
                             on_text=chunks.append, fast_decoder=decoder)
    assert "".join(chunks) == result.text
    return result


def test_packed_weights_reproduce_the_eager_weights_exactly(loaded, decoder):
    model = loaded.model
    kinds = list(decoder.packed_types.values())
    # Every linear layer is Q4_1 in the GGUF, the tied embedding / lm_head Q8_0.
    assert kinds.count(fast.T_Q4_1) == 7 * model.config.num_hidden_layers
    assert decoder.packed_types.get("lm_head.weight") == fast.T_Q8_0
    assert len(decoder.packed) == len(kinds)
    for name, (kind, quants, d, m) in decoder.packed.items():
        # The layout the kernel reads (quants, fp32 scales and minimums) is the eager weight.
        ref = fast._weight(model, name)
        assert torch.equal(fast.dequantize_repacked(kind, quants, d, m, ref.shape[0]), ref.detach()), name


@pytest.mark.parametrize("prompt", PROMPTS)
def test_fast_decode_gives_the_eager_tokens(loaded, decoder, prompt):
    ids = loaded.tokenizer(prompt)["input_ids"]
    eager = run(loaded, ids)
    quick = run(loaded, ids, decoder=decoder)
    assert quick.tokens == eager.tokens
    assert quick.text == eager.text
    assert quick.stop_reason == eager.stop_reason == "length"


def test_reused_prefix_gives_the_eager_tokens(loaded, decoder):
    tok = loaded.tokenizer
    base = tok(PROMPTS[0] * 3)["input_ids"]
    short = base + tok("    pivot", add_special_tokens=False)["input_ids"]  # kernel prefill
    long = base + tok("    # choose the middle element as the pivot, then split the list into the items "
                      "that are smaller, equal and larger, and sort the two outer parts\n",
                      add_special_tokens=False)["input_ids"]  # torch prefill of the tail
    assert len(short) - len(base) <= fast.FAST_PREFILL_MAX < len(long) - len(base)
    cache = PrefixCache(256 << 20)
    first = run(loaded, base, decoder=decoder, prefix_cache=cache, n=8)
    assert first.tokens == run(loaded, base, n=8).tokens
    for ids in (short, long, short):
        reused = run(loaded, ids, decoder=decoder, prefix_cache=cache, n=24)
        assert reused.cached_tokens >= len(base)
        assert reused.tokens == run(loaded, ids, n=24).tokens
    # The stored cache covers prompt + generated tokens, so the answer itself is reused next.
    follow = short + reused.tokens + tok("\n", add_special_tokens=False)["input_ids"]
    again = run(loaded, follow, decoder=decoder, prefix_cache=cache, n=16)
    assert again.cached_tokens >= len(short) + len(reused.tokens) - 1
    assert again.tokens == run(loaded, follow, n=16).tokens


TAIL_TEXT = ("    # choose the middle element as the pivot, then split the list into smaller, equal "
             "and larger items and sort both outer parts recursively\n    pivot = items[len(items) // 2]\n")


@pytest.mark.parametrize("n_tail", [1, 3, 6, 16])
def test_batched_tail_prefill_gives_the_eager_tokens(loaded, decoder, n_tail, monkeypatch):
    """A reused prefix + a typed tail of n tokens: the tail runs in one fl_forward_batch call."""
    tok = loaded.tokenizer
    base = tok(PROMPTS[0] * 3)["input_ids"]
    tail = tok(TAIL_TEXT, add_special_tokens=False)["input_ids"][:n_tail]
    assert len(tail) == n_tail <= fast.FAST_PREFILL_MAX
    ids = base + tail
    calls = []
    original = fast.FastSession.prefill

    def spy(self, tokens, **kw):
        calls.append(len(tokens))
        return original(self, tokens, **kw)

    monkeypatch.setattr(fast.FastSession, "prefill", spy)
    cache = PrefixCache(256 << 20)
    run(loaded, base, decoder=decoder, prefix_cache=cache, n=4)
    reused = run(loaded, ids, decoder=decoder, prefix_cache=cache, n=24)
    assert reused.cached_tokens >= len(base)
    assert calls and calls[-1] == len(ids) - reused.cached_tokens  # the whole tail in one call
    assert reused.tokens == run(loaded, ids, n=24).tokens
    # The KV the batch wrote went back into the cache: the answer is reused next, still exact.
    follow = ids + reused.tokens
    again = run(loaded, follow, decoder=decoder, prefix_cache=cache, n=8)
    assert again.cached_tokens == len(follow) - 1
    assert again.tokens == run(loaded, follow, n=8).tokens


def test_batched_forward_matches_single_steps_and_torch(loaded, decoder):
    """fl_forward_batch vs n fl_forward calls vs torch: same KV and logits up to fp32 rounding."""
    import copy

    from jupyter_codellama.engine.generation import _new_cache, prefill

    tok = loaded.tokenizer
    base = tok(PROMPTS[1])["input_ids"]
    tail = tok(TAIL_TEXT, add_special_tokens=False)["input_ids"][:12]
    cache = _new_cache(loaded.model)
    prefill(loaded.model, base, cache, chunk=128, should_stop=lambda: False)
    batched = decoder.session(copy.deepcopy(cache), max_new=len(tail))
    stepped = decoder.session(copy.deepcopy(cache), max_new=len(tail))
    lb = batched.prefill(tail).clone()
    for i, t in enumerate(tail):
        ls = stepped.step(t, want_logits=i == len(tail) - 1)
    eager = prefill(loaded.model, tail, copy.deepcopy(cache), chunk=128, should_stop=lambda: False)
    assert batched.n == stepped.n == len(tail)
    torch.testing.assert_close(batched.kvB[..., : len(tail), :], stepped.kvB[..., : len(tail), :],
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lb, ls, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(lb, eager, rtol=1e-4, atol=1e-3)
    assert int(lb.argmax()) == int(eager.argmax())
    with pytest.raises(fast.FastPathUnavailable):  # past the session's room: refused, nothing written
        batched.prefill(tail * (batched.room // len(tail) + 1))
    assert batched.n == len(tail)


def test_sampling_and_stop_strings_work_on_the_fast_path(loaded, decoder):
    ids = loaded.tokenizer(PROMPTS[1])["input_ids"]
    a = run(loaded, ids, decoder=decoder, temperature=0.8, top_p=0.9, seed=7)
    b = run(loaded, ids, decoder=decoder, temperature=0.8, top_p=0.9, seed=7)
    assert a.tokens == b.tokens and len(a.tokens) == 40
    eager = run(loaded, ids, n=40)
    stop = eager.text[10:14]
    quick = run(loaded, ids, decoder=decoder, n=40, stop=(stop,))
    assert quick.stop_reason == "stop" and quick.text == run(loaded, ids, n=40, stop=(stop,)).text


def test_a_kernel_failure_mid_answer_goes_on_eagerly(loaded, decoder, monkeypatch):
    ids = loaded.tokenizer(PROMPTS[2])["input_ids"]
    eager = run(loaded, ids, n=24)
    original = fast.FastSession.step
    calls = {"n": 0}

    def flaky(self, token, **kw):
        calls["n"] += 1
        if calls["n"] == 10:
            raise fast.FastPathUnavailable("simulated")
        return original(self, token, **kw)

    monkeypatch.setattr(fast.FastSession, "step", flaky)
    cache = PrefixCache(64 << 20)
    quick = run(loaded, ids, decoder=decoder, prefix_cache=cache, n=24)
    assert calls["n"] == 10
    assert quick.tokens == eager.tokens
    # The KV written by the kernel before the failure was handed back to the cache intact.
    monkeypatch.setattr(fast.FastSession, "step", original)
    follow = ids + quick.tokens
    again = run(loaded, follow, decoder=decoder, prefix_cache=cache, n=8)
    assert again.cached_tokens == len(follow) - 1
    assert again.tokens == run(loaded, follow, n=8).tokens


def test_no_compiler_falls_back_cleanly(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(fast, "_lib", None)
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.raises(fast.FastPathUnavailable):
        fast.load_kernel(tmp_path)
    bg = fast.BackgroundFastPath(loaded.model, cache_dir=tmp_path)
    assert bg.wait(120) is None
    assert bg.state == "failed" and "compil" in bg.reason
    assert bg.info()["state"] == "failed"
    # The engine's generate path with no decoder is the plain eager one.
    ids = loaded.tokenizer(PROMPTS[0])["input_ids"]
    assert run(loaded, ids, decoder=bg.decoder, n=4).tokens == run(loaded, ids, n=4).tokens


def _tiny_llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{**dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256), **overrides})
    return LlamaForCausalLM(config).eval()


def test_unsupported_models_are_refused():
    with pytest.raises(fast.FastPathUnavailable, match="bias"):
        fast.check_model_supported(_tiny_llama(attention_bias=True))
    with pytest.raises(fast.FastPathUnavailable, match="fp32"):
        fast.check_model_supported(_tiny_llama().to(torch.bfloat16))


def test_fp32_weights_without_a_gguf_give_the_eager_tokens(loaded):
    """'on' mode for other fp32 Llama models: no packed blocks, the kernel reads fp32 weights."""
    model = _tiny_llama()
    decoder = fast.prepare_fast_decoder(model)
    assert not decoder.packed
    tiny = type(loaded)(**{**loaded.__dict__, "model": model})
    ids = [1, 17, 42, 99, 3, 250, 7]
    assert run(tiny, ids, decoder=decoder, n=30).tokens == run(tiny, ids, n=30).tokens
    # A reused prefix + a 5-token tail: the batched kernel on fp32 weights.
    from jupyter_codellama.engine.generation import PrefixCache

    cache = PrefixCache(16 << 20)
    run(tiny, ids, decoder=decoder, prefix_cache=cache, n=2)
    longer = ids + [11, 12, 13, 14, 15]
    reused = run(tiny, longer, decoder=decoder, prefix_cache=cache, n=20)
    assert reused.cached_tokens >= len(ids)
    assert reused.tokens == run(tiny, longer, n=20).tokens


def _quantize_q4_1(w: torch.Tensor) -> torch.Tensor:
    """GGUF Q4_1 blocks [N, K/32*20] of w (as llama.cpp's quantize_row_q4_1 does)."""
    N, K = w.shape
    b = w.reshape(N, K // 32, 32)
    lo, hi = b.amin(-1, keepdim=True), b.amax(-1, keepdim=True)
    d = ((hi - lo) / 15).half()
    m = lo.half()
    q = ((b - m.float()) / d.float().clamp_min(1e-8)).round().clamp(0, 15).to(torch.uint8)
    qs = q[..., :16] | (q[..., 16:] << 4)
    return torch.cat([d.view(torch.uint8), m.view(torch.uint8), qs], -1).reshape(N, -1).contiguous()


def _quantize_q8_0(w: torch.Tensor) -> torch.Tensor:
    N, K = w.shape
    b = w.reshape(N, K // 32, 32)
    d = (b.abs().amax(-1, keepdim=True) / 127).half()
    q = (b / d.float().clamp_min(1e-8)).round().clamp(-127, 127).to(torch.int8)
    return torch.cat([d.view(torch.uint8), q.view(torch.uint8)], -1).reshape(N, -1).contiguous()


def test_kv_is_appended_in_place_with_cat_semantics():
    from types import SimpleNamespace

    layer = SimpleNamespace()
    a, b, c = (torch.randn(1, 3, n, 8) for n in (5, 2, 4))
    keys = fast._append_kv(layer, "keys", a, fresh=True)
    assert torch.equal(keys, a)
    layer.keys = keys
    grown = fast._append_kv(layer, "keys", b)
    assert torch.equal(grown, torch.cat([a, b], -2))
    assert grown.data_ptr() == keys.data_ptr()  # no copy of the prompt's KV
    layer.keys = grown[:, :, :4]  # DynamicCache.crop: a view of the same buffer
    regrown = fast._append_kv(layer, "keys", c)
    assert torch.equal(regrown, torch.cat([a[:, :, :4], c], -2)) and regrown.data_ptr() == keys.data_ptr()
    layer.keys = torch.cat([regrown, b], -2)  # the eager path's update: a new tensor
    moved = fast._append_kv(layer, "keys", c)
    assert torch.equal(moved, torch.cat([a[:, :, :4], c, b, c], -2))
    big = torch.randn(1, 3, 400, 8)  # past the spare room: a bigger buffer
    layer.keys = moved
    assert torch.equal(fast._append_kv(layer, "keys", big), torch.cat([moved, big], -2))


def test_the_kernels_exp_is_within_2_ulp_of_expf():
    lib = fast.load_kernel()
    x = torch.cat([torch.linspace(-87.0, 0.0, 200_003), torch.tensor([-1e-7, -0.5, -86.99, 0.0])])
    y = torch.empty_like(x)
    lib.fl_exp(x.data_ptr(), y.data_ptr(), x.numel())
    ref = torch.exp(x.double())
    ulp = (ref.float().nextafter(torch.tensor(float("inf"))) - ref.float()).double()
    assert ((y.double() - ref).abs() / ulp).max() <= 2.0


@pytest.mark.parametrize("kind", [fast.T_Q4_1, fast.T_Q8_0])
def test_repacking_keeps_every_weight_for_any_row_count(kind):
    torch.manual_seed(1)
    w = torch.randn(7, 96)  # 7 rows: the last group of 4 is padded
    blocks = (_quantize_q4_1 if kind == fast.T_Q4_1 else _quantize_q8_0)(w)
    quants, d, m = fast.repack_blocks(kind, blocks, 96)
    assert quants.shape[:3] == (2, 3, 4) and d.shape == (2, 3, 4)
    assert torch.equal(fast.dequantize_repacked(kind, quants, d, m, 7), fast.dequantize_blocks(kind, blocks, 96))


def test_quantized_weights_with_odd_row_counts_give_the_eager_tokens(loaded):
    """The packed (Q4_1 / Q8_0) kernel paths on other shapes, with an lm_head whose rows are not a
    multiple of 4 (the padded group): a tiny model whose weights are set to their dequantized
    blocks, so eager and fast see the same weights."""
    model = _tiny_llama(vocab_size=262, intermediate_size=96, num_key_value_heads=1,
                        tie_word_embeddings=False)
    packed = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2 or "embed_tokens" in name:
                continue
            kind = fast.T_Q8_0 if name == "lm_head.weight" else fast.T_Q4_1
            blocks = (_quantize_q8_0 if kind == fast.T_Q8_0 else _quantize_q4_1)(p.data)
            p.copy_(fast.dequantize_blocks(kind, blocks, p.shape[1]))
            packed[name] = (kind, blocks)
    decoder = fast.FastDecoder(model, packed=packed)
    assert len(decoder.packed) == 7 * 2 + 1
    assert model.lm_head.weight.shape[0] % 4 == 2  # padded group in the lm_head
    tiny = type(loaded)(**{**loaded.__dict__, "model": model})
    for ids in ([1, 17, 42, 99, 3, 250, 7], [5] * 3 + [200, 201]):
        assert run(tiny, ids, decoder=decoder, n=30).tokens == run(tiny, ids, n=30).tokens
    from jupyter_codellama.engine.generation import PrefixCache

    cache = PrefixCache(16 << 20)  # the batched kernel's dequantize-rows path
    ids = [1, 17, 42, 99, 3, 250, 7]
    run(tiny, ids, decoder=decoder, prefix_cache=cache, n=2)
    longer = ids + [11, 12, 13, 14, 15]
    reused = run(tiny, longer, decoder=decoder, prefix_cache=cache, n=20)
    assert reused.cached_tokens >= len(ids)
    assert reused.tokens == run(tiny, longer, n=20).tokens


def test_the_engine_prepares_the_fast_path_in_the_background(embedded_engine, loaded):
    bg = embedded_engine._fast
    assert bg is not None
    assert bg.wait(300) is not None, bg.reason
    assert embedded_engine.status()["fast_decode"]["state"] == "ready"
    prompt = PROMPTS[1]
    ids = loaded.tokenizer(prompt)["input_ids"]
    result = embedded_engine.generate(ids, max_new_tokens=32, temperature=0.0)
    assert result.tokens == run(loaded, ids, n=32).tokens[: len(result.tokens)]


def test_exiting_while_the_fast_path_is_prepared_is_a_clean_exit(tmp_path):
    # A kernel shut down right after loading a model: the preparation thread must not abort
    # the process ("terminate called without an active exception", status 134).
    import os
    import subprocess
    import sys

    code = ("from jupyter_codellama.engine.worker import Engine\n"
            "e = Engine(); e.load('embedded').wait(); print('loaded')\n")
    env = {**os.environ, "JUPYTER_CODELLAMA_FAST_DECODE": "auto"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr
