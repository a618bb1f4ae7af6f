"""The CPU engine (engine/native.py + engine/kernels/*.c) on memory-mapped GGUF blocks.

Small Llama models of Code Llama's head size (128) with GQA and random weights, in every weight
type the kernel reads, against a float64 forward on the weights the blocks dequantize to.
No timing asserts: speed is measured by benchmarks/decode.py.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from jupyter_codellama.engine import kernels
from jupyter_codellama.engine.generation import GenerationRequest, PrefixCache, generate_stream
from jupyter_codellama.engine.native import NativeModel, UnsupportedModelError
from jupyter_codellama.testing.gguf_model import (
    TinyShape,
    agreement,
    reference_greedy,
    reference_logits,
    write_tiny_gguf,
)

SHAPE = TinyShape()
IDS = [1, 5, 900, 33, 47, 2, 600, 7, 8, 9, 10, 11, 512, 3]
#: |kernel - float64 reference| / max |reference| for the last position's logits
LOGIT_TOLERANCE = 1e-5
#: the same with int8 activations: where an activation lies within float rounding of a rounding
#: boundary, the kernel's fp32 and the reference's float64 activations can round to neighbouring
#: int8 values; one such step moved these tiny random models' logits by up to 0.6%
Q8_LOGIT_TOLERANCE = 2e-2
#: the least share of the reference's greedy tokens the int8 kernel must agree with, teacher-forced
Q8_AGREEMENT = 0.9
VARIANTS = ["generic"] + (["avx2"] if kernels.cpu_has_avx2() else [])
DEFAULT_VARIANT = VARIANTS[-1]
BASIC = ["F32", "F16", "Q4_0", "Q4_1", "Q8_0"]
K_TYPES = ["Q4_K", "Q5_K", "Q6_K"]


def _kquantize(a: np.ndarray, kind: str) -> np.ndarray:
    """gguf has no K-quant quantizer: ours (checked against gguf's dequantizer in its tests)."""
    from jupyter_codellama.testing.gguf_model import gguf_quantize
    from kquants_ref import quantize_q4_k, quantize_q5_k, quantize_q6_k

    fn = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}.get(kind)
    return fn(a.astype(np.float32)) if fn else gguf_quantize(a, kind)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{kind: (gguf path, weights)}, written once for the module."""
    folder = tmp_path_factory.mktemp("tiny-gguf")
    made = {}

    def get(kind: str):
        if kind not in made:
            path = folder / f"tiny-{kind}.gguf"
            quantize = _kquantize if kind in K_TYPES else None
            kwargs: dict[str, Any] = {"quantize": quantize} if quantize else {}
            # K-quant files mix types as llama.cpp's Q4_K_M does (Q6_K output head).
            head = "Q6_K" if kind in K_TYPES else None
            made[kind] = (path, write_tiny_gguf(path, kind, shape=SHAPE, head_kind=head, **kwargs))
        return made[kind]

    get.folder = folder
    return get


def _open(path, folder, variant=DEFAULT_VARIANT, threads=2, activations="int8", kv_cache="fp16"):
    return NativeModel.open(
        path, n_threads=threads, variant=variant, cache_dir=folder, activations=activations, kv_cache=kv_cache
    )


def _kv(activations: str) -> str:
    """The exact mode keeps the KV cache fp32 too; the default one (int8) has the default fp16."""
    return "fp32" if activations == "fp32" else "fp16"


def _rounding(kind: str, activations: str = "int8"):
    """Which weights' inputs the kernel rounds to int8 blocks in a tiny file of ``kind``: every
    quantized one (the K-quant files' Q6_K head too; the embedding is a lookup, not a product)."""
    if activations == "fp32":
        return None
    head_quantized = kind in K_TYPES or kind not in ("F32", "F16")
    return lambda name: (
        (name == "output.weight" and head_quantized)
        or (name not in ("output.weight", "token_embd.weight") and kind not in ("F32", "F16"))
    )


def _greedy(model: NativeModel, ids, n: int) -> list[int]:
    dec = model.decoder(model.new_cache(), chunk=5)
    logits, out = dec.prefill(ids), []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = dec.step(out[-1])
    return out


@pytest.mark.parametrize("activations", ["int8", "fp32"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", BASIC + K_TYPES)
def test_every_weight_type_matches_a_float64_reference(tiny, kind, variant, activations):
    """The reference rounds the activations exactly where the kernel does (int8) and the keys and
    values to fp16 (the default cache), or nowhere (the exact mode)."""
    if kind in K_TYPES:
        pytest.importorskip("kquants_ref")
    path, weights = tiny(kind)
    model = _open(path, tiny.folder, variant, activations=activations, kv_cache=_kv(activations))
    rounded, half = _rounding(kind, activations), _kv(activations) == "fp16"
    ref = reference_logits(weights, SHAPE, IDS, rounded, half)[-1]
    # Prefill in chunks of 5 (the batched kernel) and one token at a time (the decode kernel).
    for chunk in (5, 1):
        logits = model.decoder(model.new_cache(), chunk=chunk).prefill(IDS).double()
        err = (logits - ref).abs().max().item() / ref.abs().max().item()
        assert err < (LOGIT_TOLERANCE if activations == "fp32" else Q8_LOGIT_TOLERANCE), (kind, variant, chunk, err)
    answer = reference_greedy(weights, SHAPE, IDS, 32, rounded, half)
    if activations == "fp32":
        assert _greedy(model, IDS, 32) == answer
    else:  # a boundary step can flip a near tie of these random logits: the rest must agree
        assert agreement(model, IDS, answer) >= Q8_AGREEMENT, (kind, variant)


@pytest.mark.parametrize("activations", ["int8", "fp32"])
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_K", "F16"])
def test_long_prompt_chunks_through_blas_match_the_reference(tiny, kind, activations):
    """Chunks of >= BLAS_MIN_TOKENS run the same forward with BLAS matmuls on dequantized blocks."""
    from jupyter_codellama.engine.native import BLAS_MIN_TOKENS

    if kind in K_TYPES:
        pytest.importorskip("kquants_ref")
    path, weights = tiny(kind)
    model = _open(path, tiny.folder, activations=activations, kv_cache=_kv(activations))
    ids = (IDS * 8)[: BLAS_MIN_TOKENS + 40]
    ref = reference_logits(weights, SHAPE, ids, _rounding(kind, activations), _kv(activations) == "fp16")[-1]
    tolerance = LOGIT_TOLERANCE if activations == "fp32" else Q8_LOGIT_TOLERANCE
    for chunk in (BLAS_MIN_TOKENS, len(ids)):  # two BLAS chunks + a kernel tail; one BLAS chunk
        logits = model.decoder(model.new_cache(), chunk=chunk).prefill(ids).double()
        assert (logits - ref).abs().max().item() / ref.abs().max().item() < tolerance


def test_a_long_chunk_split_into_many_blocks_over_workers_gives_the_same_logits(tiny, monkeypatch):
    """The BLAS path's row blocks go to whichever worker is free: tiny blocks, so that every
    matmul is shared out, give the logits of one block per matmul."""
    from jupyter_codellama.engine import native

    path, _ = tiny("Q4_0")
    ids = (IDS * 8)[: native.BLAS_MIN_TOKENS + 8]
    model = _open(path, tiny.folder, threads=2)
    whole = model.decoder(model.new_cache(), chunk=len(ids)).prefill(ids).clone()
    monkeypatch.setattr(native, "_BLOCK_FLOATS", 8 * SHAPE.dim)
    monkeypatch.setattr(native, "_WORKER_FLOATS_MIN", 4 * SHAPE.dim)
    blocks = []
    real = native.share_out
    monkeypatch.setattr(native, "share_out", lambda items, *a: (blocks.append(len(items)), real(items, *a)))
    split = model.decoder(model.new_cache(), chunk=len(ids)).prefill(ids)
    assert max(blocks) > 8
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def test_share_out_gives_each_item_once_and_more_to_the_faster_worker():
    from jupyter_codellama.engine.native import share_out

    done: list[tuple[int, str]] = []

    def work(item, who):
        if who == "slow":  # a worker whose core another process takes
            time.sleep(0.02)
        done.append((item, who))

    share_out(range(60), work, ["slow", "fast"])
    assert sorted(i for i, _ in done) == list(range(60))
    assert sum(who == "fast" for _, who in done) > 40

    def fail(item, who):
        if item == 3:
            raise RuntimeError("block 3 failed")

    with pytest.raises(RuntimeError, match="block 3"):
        share_out(range(50), fail, ["a", "b"])


def test_an_unknown_activation_or_kv_cache_mode_gets_a_clear_error(tiny):
    from traitlets import TraitError

    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.loading import KernelOptions

    path, _ = tiny("Q4_0")
    with pytest.raises(ValueError, match="'int8' or 'fp32'"):
        _open(path, tiny.folder, activations="int4")
    with pytest.raises(ValueError, match="'fp16' or 'fp32'"):
        _open(path, tiny.folder, kv_cache="int8")
    for setting in ("cpu_activations", "cpu_kv_cache"):
        with pytest.raises(TraitError):
            CodeLlama(**{setting: "int4"})
    assert KernelOptions.from_config(CodeLlama()) == KernelOptions(None, "int8", "fp16")
    assert KernelOptions.from_config(CodeLlama(cpu_kv_cache="FP32", cpu_threads=3)).kv_cache == "fp32"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_kernel_rounds_to_fp16_as_numpy_does(variant):
    """Nearest even, subnormals, the largest finite half and overflow to infinity."""
    lib = kernels.load_library(variant)
    rng = np.random.default_rng(0)
    halves = rng.integers(0, 0x7C00, 20_000, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = (halves + np.nextafter(halves, np.float32(np.inf)).astype(np.float16).astype(np.float32)) / 2
    edge = np.array([0.0, -0.0, 65504, 65519.99, 65520, -65520, 1e9, np.inf, -np.inf, 6e-8, 2.9e-8, 3e-8, 1e-30])
    x = np.concatenate([halves, ties, -ties, rng.normal(0, 1, 20_000) * 10.0 ** rng.integers(-9, 5, 20_000), edge])
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty(x.size, dtype=np.uint16)
    lib.jcl_f2h_rows(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p), x.size)
    with np.errstate(over="ignore"):  # numpy warns when it rounds to infinity, as asked
        np.testing.assert_array_equal(y, x.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_fp16_kv_cache_holds_the_fp32_keys_and_values_rounded(tiny, variant):
    """Layer 0's keys and values are the same numbers in both caches (the inputs are), so the fp16
    cache must hold exactly the fp32 one's, rounded: from the kernel's short chunks and decode
    steps, and from a long chunk's BLAS path."""
    from jupyter_codellama.engine.native import BLAS_MIN_TOKENS

    path, _ = tiny("Q8_0")
    ids = (IDS * 8)[: BLAS_MIN_TOKENS + 8]
    caches = {}
    for kv in ("fp16", "fp32"):
        model = _open(path, tiny.folder, variant, activations="fp32", kv_cache=kv)
        for chunk in (5, len(ids)):
            caches[kv, chunk] = model.new_cache()
            model.decoder(caches[kv, chunk], chunk=chunk).prefill(ids)
    for chunk in (5, len(ids)):
        half, full = caches["fp16", chunk], caches["fp32", chunk]
        assert half.k.dtype == torch.float16 and half.nbytes * 2 == full.nbytes
        n = len(ids)
        assert torch.equal(half.k[0, :, :n], full.k[0, :, :n].half())
        assert torch.equal(half.v[0, :, :n], full.v[0, :, :n].half())


def test_the_fp16_kv_cache_matches_a_reference_that_rounds_there(tiny):
    """With exact activations, the only difference from the float64 forward is the fp16 cache:
    the kernel stays as close to a reference that rounds keys and values there as in the exact
    mode, and well away from one that does not."""
    path, weights = tiny("Q8_0")
    model = _open(path, tiny.folder, activations="fp32", kv_cache="fp16")
    logits = model.decoder(model.new_cache(), chunk=5).prefill(IDS).double()
    for half, ok in ((True, True), (False, False)):
        ref = reference_logits(weights, SHAPE, IDS, None, half)[-1]
        err = (logits - ref).abs().max().item() / ref.abs().max().item()
        assert (err < LOGIT_TOLERANCE) == ok, (half, err)
    assert _greedy(model, IDS, 32) == reference_greedy(weights, SHAPE, IDS, 32, None, True)


def test_threads_follow_the_free_cores(monkeypatch, tmp_path):
    from jupyter_codellama.engine import native

    loadavg = tmp_path / "loadavg"
    real = native.Path
    monkeypatch.setattr(native, "Path", lambda p: loadavg if p == "/proc/loadavg" else real(p))
    for running, free in (("1", 4), ("2", 3), ("4", 1), ("9", 1)):
        loadavg.write_text(f"0.5 0.5 0.5 {running}/300 12345\n")
        assert native.free_cores(4) == free


def test_the_plain_c_build_gives_the_avx2_tokens(tiny):
    if not kernels.cpu_has_avx2():
        pytest.skip("no AVX2 here: only the plain C build runs")
    path, _ = tiny("Q4_0")
    exact = {"activations": "fp32", "kv_cache": "fp32"}
    fast, plain = _open(path, tiny.folder, "avx2", **exact), _open(path, tiny.folder, "generic", **exact)
    assert fast.lib is not plain.lib
    assert _greedy(fast, IDS, 32) == _greedy(plain, IDS, 32)
    # The defaults round activations and keys/values, where the builds' different orders of float
    # sums can tip a value across a boundary: teacher-forced, the tokens still agree.
    fast, plain = _open(path, tiny.folder, "avx2"), _open(path, tiny.folder, "generic")
    assert agreement(plain, IDS, _greedy(fast, IDS, 32)) >= Q8_AGREEMENT


def test_the_softmax_exp_is_within_2_ulp_of_expf():
    if not kernels.cpu_has_avx2():
        pytest.skip("the vectorized exp is in the AVX2 build")
    lib = kernels.load_library("avx2")
    x = torch.cat([torch.linspace(-87.0, 0.0, 200_003), torch.tensor([-1e-7, -0.5, -86.99, 0.0])])
    y = torch.empty_like(x)
    lib.jcl_exp(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), x.numel())
    ref = torch.exp(x.double())
    ulp = (ref.float().nextafter(torch.tensor(float("inf"))) - ref.float()).double()
    assert ((y.double() - ref).abs() / ulp).max() <= 2.0


def test_threads_do_not_change_the_answer(tiny):
    path, _ = tiny("Q4_0")
    one, two = _open(path, tiny.folder, threads=1), _open(path, tiny.folder, threads=2)
    assert _greedy(one, IDS, 24) == _greedy(two, IDS, 24)


def _run(model, tokenizer_free_ids, *, cache=None, n=16, **kw):
    return generate_stream(
        model,
        _NoTokenizer(),
        GenerationRequest(list(tokenizer_free_ids), max_new_tokens=n, **kw),
        eos_token_ids=(),
        prefix_cache=cache,
        prefill_chunk=8,
    )


class _NoTokenizer:
    """Enough of a tokenizer for generate_stream on token ids (the text is not checked here)."""

    all_special_ids = ()

    def decode(self, ids, **_kw):
        return "".join(chr(0x4E00 + (i % 2000)) for i in ids)

    def __len__(self):
        return SHAPE.vocab


def test_prefix_reuse_gives_identical_output(tiny):
    path, _ = tiny("Q4_1")
    model = _open(path, tiny.folder)
    cache = PrefixCache(64 << 20)
    base = IDS * 4
    first = _run(model, base, cache=cache)
    assert first.tokens == _run(model, base).tokens
    for tail in ([17, 18, 19], list(range(100, 140)), [20]):  # short tails, a long one
        ids = base + tail
        reused = _run(model, ids, cache=cache)
        assert reused.cached_tokens >= len(base)
        assert reused.tokens == _run(model, ids).tokens
    follow = base + [20] + reused.tokens  # the answer itself is in the cache too
    again = _run(model, follow, cache=cache, n=8)
    assert again.cached_tokens == len(follow) - 1
    assert again.tokens == _run(model, follow, n=8).tokens


def test_cancel_during_a_long_prefill_stops_between_chunks(tiny):
    path, _ = tiny("Q4_0")
    model = _open(path, tiny.folder)
    cancel = threading.Event()
    calls = []
    forward = model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            cancel.set()
        return forward(*args, **kwargs)

    model.forward = counting
    ids = (IDS * 40)[:400]  # 50 chunks of 8
    result = generate_stream(
        model,
        _NoTokenizer(),
        GenerationRequest(ids, max_new_tokens=8),
        eos_token_ids=(),
        prefill_chunk=8,
        cancel=cancel,
    )
    assert result.stop_reason == "cancelled" and not result.tokens
    assert len(calls) == 2  # the chunk running when cancelled finished; no other started


def test_cancel_inside_a_long_blas_chunk_stops_between_layers(tiny):
    from jupyter_codellama.engine.generation import Cancelled
    from jupyter_codellama.engine.native import BLAS_MIN_TOKENS

    path, _ = tiny("Q4_0")
    model = _open(path, tiny.folder)
    checks = []

    def stop_at_second_layer():
        checks.append(1)
        return True

    cache = model.new_cache()
    with pytest.raises(Cancelled):
        model.decoder(cache, chunk=4 * BLAS_MIN_TOKENS, should_stop=stop_at_second_layer).prefill(IDS * 10)
    assert checks == [1] and cache.length == 0  # asked once, before layer 2; nothing kept
    # The same cache then answers as a fresh one would.
    again = model.decoder(cache, chunk=8).prefill(IDS)
    torch.testing.assert_close(again, model.decoder(model.new_cache(), chunk=8).prefill(IDS))


def test_the_prefix_cache_holds_a_long_prompt_of_a_big_model():
    """A 7B's fp16 KV is 0.5 MB a token: the default 512 MB would keep no notebook-sized prompt."""
    from types import SimpleNamespace

    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.engine import MIN_CACHED_POSITIONS, _prefix_budget
    from jupyter_codellama.engine.native import Hyper

    hyper = Hyper(32, 4096, 11008, 32, 32, 128, 32016, 1e-5, 1e6, 16384)
    assert hyper.kv_bytes_per_token(4) == 1 << 20
    loaded = SimpleNamespace(backend="kernel", model=SimpleNamespace(kv_bytes_per_token=hyper.kv_bytes_per_token(2)))
    assert _prefix_budget(CodeLlama(prefix_cache_mb=512), loaded) == (1 << 19) * MIN_CACHED_POSITIONS
    assert _prefix_budget(CodeLlama(prefix_cache_mb=4096), loaded) == 4096 << 20
    assert _prefix_budget(CodeLlama(prefix_cache_mb=512), SimpleNamespace(backend="torch", model=None)) == 512 << 20


def test_the_cache_crops_copies_and_grows_like_dynamic_cache(tiny):
    import copy

    path, _ = tiny("Q8_0")
    model = _open(path, tiny.folder, activations="fp32", kv_cache="fp32")  # exact: any difference is the cache's
    cache = model.new_cache()
    model.decoder(cache).prefill(IDS)
    assert cache.get_seq_length() == len(IDS)
    twin = copy.deepcopy(cache)
    cache.crop(-4)
    assert cache.get_seq_length() == len(IDS) - 4 and twin.get_seq_length() == len(IDS)
    a = model.decoder(twin).prefill([7] * 300)  # grows past its capacity, keeping the prefix
    b = model.decoder(model.new_cache()).prefill(IDS + [7] * 300)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_reused_cache_takes_a_few_typed_tokens_and_a_completion_without_reallocating(tiny):
    """Inline completion on a kernel model: the prompt, its answer, then the same prompt plus a
    few typed tokens. Reallocating the KV there would copy a 7B model's gigabytes on a keystroke."""
    import copy

    path, _ = tiny("Q8_0")
    model = _open(path, tiny.folder)
    for cache in (model.new_cache(), copy.deepcopy(_prefilled(model, IDS))):
        dec = model.decoder(cache)
        logits = dec.prefill(IDS) if cache.length == 0 else dec.prefill([5])
        where = cache.k.data_ptr()
        for _ in range(64):  # a completion's answer
            logits = dec.step(int(logits.argmax()))
        cache.crop(len(IDS))
        model.decoder(cache).prefill([7] * 6)  # the prompt again, six tokens typed since
        assert cache.k.data_ptr() == where, "the KV cache was reallocated"


def _prefilled(model, ids):
    cache = model.new_cache()
    model.decoder(cache).prefill(ids)
    return cache


def test_unsupported_files_get_a_clear_error(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UnsupportedModelError, match="architecture 'gpt2'.*Llama"):
        NativeModel.open(path, cache_dir=tmp_path)
    iq = tmp_path / "q5_0.gguf"
    write_tiny_gguf(iq, "Q5_0", shape=TinyShape(n_layers=1, vocab=64))
    with pytest.raises(UnsupportedModelError, match="Q5_0.*re-quantize|Q5_0.*Re-quantize"):
        NativeModel.open(iq, cache_dir=tmp_path)


def test_no_compiler_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(kernels.shutil, "which", lambda _name: None)
    with pytest.raises(kernels.KernelUnavailable, match="No C compiler.*apt-get install gcc"):
        kernels.library_path("generic", tmp_path)


# -- the embedded model through the kernel ----------------------------------------------------

PROMPTS = [
    'def quicksort(items):\n    """Sort a list."""\n',
    "<|im_start|>user\nWhat is a Python decorator? Answer briefly.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.mark.slow
def test_the_embedded_model_gives_the_tokens_of_the_pytorch_path(embedded_engine, cache_dir):
    """With fp32 activations, token for token; with the default int8 ones, the PyTorch answer's
    tokens are the kernel's own choices nearly everywhere (teacher-forced)."""
    from jupyter_codellama.engine.loading import LoadOptions, find_embedded_gguf, load_model

    kernel = embedded_engine.loaded
    assert kernel.backend == "kernel" and embedded_engine.status()["backend"] == "kernel"
    assert kernel.model.act_q8
    exact = NativeModel.open(find_embedded_gguf(), cache_dir=str(cache_dir), activations="fp32", kv_cache="fp32")
    torch_path = load_model(LoadOptions(model="embedded", quantization="none", cache_dir=str(cache_dir)))
    assert torch_path.backend == "torch"
    for prompt in PROMPTS:
        ids = kernel.tokenizer(prompt)["input_ids"]
        assert ids == torch_path.tokenizer(prompt)["input_ids"]
        req = dict(eos_token_ids=(), prefix_cache=None)
        a = generate_stream(exact, kernel.tokenizer, GenerationRequest(ids, max_new_tokens=40), **req)
        b = generate_stream(torch_path.model, torch_path.tokenizer, GenerationRequest(ids, max_new_tokens=40), **req)
        assert a.tokens == b.tokens and a.text == b.text
        assert agreement(kernel.model, ids, b.tokens) >= 0.95


@pytest.mark.slow
def test_a_loaded_model_is_resident_at_about_its_file_size(cache_dir):
    """RSS after loading and answering: the mapped weights + KV + a stated margin, no fp32 copy."""
    code = f"""
import os, resource, torch, transformers
from jupyter_codellama.engine.native import NativeModel
from jupyter_codellama.engine.loading import find_embedded_gguf
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
NativeModel.open(find_embedded_gguf(), cache_dir={str(cache_dir)!r}).close()  # packed, kernel built
before = rss()
m = NativeModel.open(find_embedded_gguf(), cache_dir={str(cache_dir)!r}, n_threads=1)
d = m.decoder(m.new_cache()); logits = d.prefill(list(range(1, 200)))
for _ in range(50): logits = d.step(int(logits.argmax()))
print(rss() - before, m.pack_file.stat().st_size, d.cache.nbytes)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    grown, pack, kv = map(int, out.stdout.split()[-3:])
    margin = 32 << 20  # tokenizer-free: rope tables, scratch, allocator slack
    assert grown <= pack + kv + margin, f"grew {grown >> 20} MiB for a {pack >> 20} MiB pack + {kv >> 20} MiB KV"


CGROUP = "/sys/fs/cgroup/memory"


@pytest.mark.slow
@pytest.mark.skipif(not os.access(CGROUP, os.W_OK), reason="needs a writable cgroup-v1 memory controller (root)")
def test_a_model_larger_than_its_memory_limit_still_runs(tmp_path):
    """The weights are pages of a mapped file: under a memory limit below the pack's size they are
    read back from the file as needed (slowly), and the answer is the same."""
    shape = TinyShape(dim=1024, n_layers=8, n_heads=8, n_kv=8, hidden=2816, vocab=32000)
    path = tmp_path / "bigger.Q8_0.gguf"
    write_tiny_gguf(path, "Q8_0", shape=shape)
    model = NativeModel.open(path, n_threads=1, cache_dir=tmp_path)  # packs it, outside the limit
    expected = _greedy(model, IDS, 8)
    pack = model.pack_file.stat().st_size
    model.close()
    group = f"{CGROUP}/jcl-test-{os.getpid()}"
    os.mkdir(group)
    code = f"""
import os, sys, torch
from jupyter_codellama.engine.native import NativeModel
group = {group!r}
open(group + "/cgroup.procs", "w").write(str(os.getpid()))
used = int(open(group + "/memory.usage_in_bytes").read())
limit = used + {pack // 2}  # room for half the weights
open(group + "/memory.limit_in_bytes", "w").write(str(limit))
m = NativeModel.open({str(path)!r}, n_threads=1, cache_dir={str(tmp_path)!r})
d = m.decoder(m.new_cache(), chunk=5)
logits, out = d.prefill({IDS!r}), []
for _ in range(8):
    out.append(int(logits.argmax())); logits = d.step(out[-1])
print("TOKENS", out, "LIMIT", limit, "PEAK", int(open(group + "/memory.max_usage_in_bytes").read()))
"""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    finally:
        os.rmdir(group)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("TOKENS"))
    assert line.split("LIMIT")[0].strip() == f"TOKENS {expected}"
