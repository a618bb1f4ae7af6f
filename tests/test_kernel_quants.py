"""The C kernel's F32/F16/Q4_0/Q4_1/Q8_0 code (kernels/quants.c), against gguf's own quantizer
and dequantizer, in both builds (avx2 where the CPU has it, generic always)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf.quants import dequantize, quantize

from jupyter_codellama.engine import kernels
from jupyter_codellama.engine.kernels import layout

SOURCES = ("quants.c", "kquants.c")
TYPES = {
    "F32": (GT.F32, layout.F32),
    "F16": (GT.F16, layout.F16),
    "Q4_0": (GT.Q4_0, layout.Q4_0),
    "Q4_1": (GT.Q4_1, layout.Q4_1),
    "Q8_0": (GT.Q8_0, layout.Q8_0),
}
SHAPES = [(7, 64), (262, 256), (4, 32), (1, 256)]
#: |kernel - float64 reference| <= RTOL * sum_k |w_k x_k| (float32 sums over at most 256 terms)
RTOL = 1e-5
VARIANTS = [
    "generic",
    pytest.param("avx2", marks=pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="this CPU has no AVX2/FMA/F16C")),
]

F32P = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernel-cache")
    return lambda variant: _bind(kernels.load_library(variant, cache_dir=cache, sources=SOURCES))


def _bind(lib):
    wp = ctypes.POINTER(layout.Wt)
    lib.jcl_dequant_row.argtypes = [wp, ctypes.c_int, F32P]
    lib.jcl_test_dot_rows.argtypes = [wp, F32P, F32P]
    lib.jcl_x_aux.argtypes = [F32P, ctypes.c_int, F32P]
    lib.jcl_dot_group4.argtypes = [wp, ctypes.c_int, F32P, F32P, F32P]
    lib.jcl_wt_size.restype = ctypes.c_int
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(F32P)


def _weight(name: str, N: int, K: int, seed: int):
    """(gguf bytes or floats, the kernel layout buffer, Wt, gguf's dequantized float32 [N, K])."""
    gtype, kind = TYPES[name]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.05
    w[0, :32] = 0.0  # an all-zero block (d = 0) and, below, a constant one (Q4_1: d = 0, m != 0)
    if N > 1:
        w[1, :32] = 0.25
    q = quantize(w, gtype)
    ref = dequantize(q, gtype).astype(np.float32).reshape(N, K)
    buf = layout.interleave(np.ascontiguousarray(q).view(np.uint8).reshape(N, -1), kind, K)
    return buf, layout.make_wt(buf, kind, N, K), ref


def test_wt_size_matches_layout(libs):
    for variant in ("generic", "avx2") if kernels.cpu_has_avx2() else ("generic",):
        assert libs(variant).jcl_wt_size() == ctypes.sizeof(layout.Wt)


def test_block_sizes_match_layout(libs):
    lib = libs("generic")
    for kind, (elems, nbytes) in layout.BLOCKS.items():
        assert (lib.jcl_block_elems(kind), lib.jcl_block_bytes(kind)) == (elems, nbytes)
    assert lib.jcl_block_elems(99) == 0 and lib.jcl_block_bytes(99) == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_x_aux_sums_runs_of_16(libs, variant):
    lib = libs(variant)
    x = np.random.default_rng(1).standard_normal(256).astype(np.float32)
    xs = np.full(256 // 16 + 8, np.nan, dtype=np.float32)
    lib.jcl_x_aux(_ptr(x), 256, _ptr(xs))
    want = x.astype(np.float64).reshape(16, 16).sum(1)
    np.testing.assert_allclose(xs[:16], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(TYPES))
def test_dequant_row_is_gguf_bit_for_bit(libs, variant, name):
    lib = libs(variant)
    for N, K in SHAPES:
        buf, wt, ref = _weight(name, N, K, seed=N * K)
        out = np.empty(K, dtype=np.float32)
        for r in range(N):
            lib.jcl_dequant_row(ctypes.byref(wt), r, _ptr(out))
            assert out.view(np.uint32).tolist() == ref[r].view(np.uint32).tolist(), (N, K, r)


def _dot_rows(lib, wt, x):
    y = np.full(wt.N, np.nan, dtype=np.float32)
    lib.jcl_test_dot_rows(ctypes.byref(wt), _ptr(x), _ptr(y))
    return y


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(TYPES))
def test_dot_rows_matches_float64_reference(libs, variant, name):
    lib = libs(variant)
    for N, K in SHAPES:
        buf, wt, ref = _weight(name, N, K, seed=N + K)
        x = np.random.default_rng(K).standard_normal(K).astype(np.float32)
        x[:32] += 3.0  # a block with a large sum: the offset terms (Q4_0 -8d, Q4_1 m) matter
        want = ref.astype(np.float64) @ x.astype(np.float64)
        scale = np.abs(ref.astype(np.float64) * x).sum(1)
        got = _dot_rows(lib, wt, x)
        err = np.abs(got - want)
        assert (err <= RTOL * scale + 1e-30).all(), (N, K, float((err / scale).max()))


@pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="this CPU has no AVX2/FMA/F16C")
@pytest.mark.parametrize("name", list(TYPES))
def test_avx2_agrees_with_generic(libs, name):
    fast, plain = libs("avx2"), libs("generic")
    for N, K in SHAPES:
        buf, wt, ref = _weight(name, N, K, seed=3 * N + K)
        x = np.random.default_rng(N).standard_normal(K).astype(np.float32)
        scale = np.abs(ref.astype(np.float64) * x).sum(1)
        a, b = _dot_rows(fast, wt, x), _dot_rows(plain, wt, x)
        assert (np.abs(a - b) <= RTOL * scale + 1e-30).all(), (N, K)


@pytest.mark.parametrize("variant", VARIANTS)
def test_f16_widening_is_exact_for_every_value(libs, variant):
    """All 65536 fp16 bit patterns (subnormals, infinities) widen as numpy does. NaNs stay NaN;
    their bits match too except that F16C quiets signaling NaNs (numpy keeps them signaling)."""
    lib = libs(variant)
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    wt = layout.make_wt(h, layout.F16, 1, 65536)
    out = np.empty(65536, dtype=np.float32)
    lib.jcl_dequant_row(ctypes.byref(wt), 0, _ptr(out))
    want = h.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert (np.isnan(out) == nan).all()
    assert out[~nan].view(np.uint32).tolist() == want[~nan].view(np.uint32).tolist()
    if variant == "generic":
        assert out[nan].view(np.uint32).tolist() == want[nan].view(np.uint32).tolist()


@pytest.mark.parametrize("variant", VARIANTS)
def test_plain_rows_past_n_are_not_read(libs, variant):
    """F32 rows are not padded: the last group's missing rows must neither be read nor matter."""
    lib = libs(variant)
    N, K = 5, 43  # K not a multiple of 8 or 16: the scalar tails
    w = np.random.default_rng(2).standard_normal((N, K)).astype(np.float32)
    buf = np.full((N + 8) * K, np.nan, dtype=np.float32)  # NaN after the weight would show
    buf[: N * K] = w.reshape(-1)
    wt = layout.make_wt(buf, layout.F32, N, K)
    x = np.random.default_rng(3).standard_normal(K).astype(np.float32)
    xs = np.zeros(K // 16 + 8, dtype=np.float32)
    out = np.full(4, np.nan, dtype=np.float32)
    lib.jcl_dot_group4(ctypes.byref(wt), 1, _ptr(x), _ptr(xs), _ptr(out))
    np.testing.assert_allclose(out[0], w[4].astype(np.float64) @ x, rtol=1e-5)
    assert np.isfinite(out).all()
