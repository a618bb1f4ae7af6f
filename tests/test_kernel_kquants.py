"""The C kernel's K-quants (kquants.c): dequantized rows bitwise equal to gguf's, dot products
close to a float64 reference, and the AVX2 and generic builds in agreement.

Mostly kquants.c is compiled alone (its two functions are exported), so these tests do not
depend on the rest of the kernel; one test goes through quants.c's dispatch when it exists.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize  # noqa: E402

from jupyter_codellama.engine import kernels  # noqa: E402
from jupyter_codellama.engine.kernels import KernelUnavailable, cpu_has_avx2, load_library  # noqa: E402
from jupyter_codellama.engine.kernels.layout import Q4_K, Q5_K, Q6_K, Wt, interleave, make_wt  # noqa: E402
from kquants_ref import quantize_q4_k, quantize_q5_k, quantize_q6_k  # noqa: E402

KERNELS = Path(kernels.__file__).resolve().parent
QUANT = {
    Q4_K: (quantize_q4_k, gguf.GGMLQuantizationType.Q4_K),
    Q5_K: (quantize_q5_k, gguf.GGMLQuantizationType.Q5_K),
    Q6_K: (quantize_q6_k, gguf.GGMLQuantizationType.Q6_K),
}
# Round-trip RMS error of the reference quantizers, as a fraction of the weights' std.
RT_RMS = {Q4_K: 0.12, Q5_K: 0.06, Q6_K: 0.03}
# |kernel - float64 reference| <= DOT_TOL * sum|w*x| (fp32 products and sums of K terms).
DOT_TOL = 1e-5
SHAPES = [(7, 256), (262, 512)]
VARIANTS = [
    "generic",
    pytest.param("avx2", marks=pytest.mark.skipif(not cpu_has_avx2(), reason="no AVX2/FMA/F16C on this CPU")),
]

f32p = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kquants")
    built = {}

    def get(variant):
        if variant not in built:
            try:
                lib = load_library(variant, cache_dir=cache, sources=("kquants.c",))
            except KernelUnavailable as exc:
                pytest.skip(str(exc))
            lib.jcl_kq_dot_group4.argtypes = [ctypes.POINTER(Wt), ctypes.c_int, f32p, f32p, f32p]
            lib.jcl_kq_dequant_row.argtypes = [ctypes.POINTER(Wt), ctypes.c_int, f32p]
            lib.jcl_kq_dot_group4.restype = lib.jcl_kq_dequant_row.restype = None
            built[variant] = lib
        return built[variant]

    return get


@pytest.fixture(scope="module")
def weights():
    """kind, (N, K) -> (GGUF blocks, gguf's dequantized fp32 weights, original floats)."""
    rng = np.random.default_rng(1234)
    cache = {}

    def get(kind, N, K):
        key = (kind, N, K)
        if key not in cache:
            # Rows of different magnitudes and offsets, so scales and mins vary across blocks.
            a = rng.standard_normal((N, K)).astype(np.float32)
            a *= rng.uniform(0.005, 0.05, (N, 1)).astype(np.float32)
            a += rng.uniform(-0.02, 0.02, (N, K // 32, 1)).repeat(32, 1).reshape(N, K).astype(np.float32) * (
                kind != Q6_K
            )
            quantize, qtype = QUANT[kind]
            blocks = quantize(a)
            cache[key] = (blocks, dequantize(blocks, qtype).astype(np.float32), a)
        return cache[key]

    return get


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(f32p)


def _x_aux(x: np.ndarray) -> np.ndarray:
    """xs[i] = sum of x[16i .. 16i+15] (the caller's x_aux), plus the slack JCL_AUX_FLOATS gives."""
    xs = x.reshape(-1, 16).sum(axis=1, dtype=np.float32)
    return np.concatenate([xs, np.zeros(8, np.float32)])


def _kernel_rows(lib, kind, blocks, N, K):
    packed = interleave(blocks, kind, K)
    wt = make_wt(packed, kind, N, K)
    out = np.empty((N, K), dtype=np.float32)
    for r in range(N):
        lib.jcl_kq_dequant_row(ctypes.byref(wt), r, _ptr(out[r]))
    return out


def _kernel_matvec(lib, kind, blocks, N, K, x):
    packed = interleave(blocks, kind, K)
    wt = make_wt(packed, kind, N, K)
    xs = _x_aux(x)
    groups = -(-N // 4)
    out = np.empty((groups, 4), dtype=np.float32)
    for g in range(groups):
        lib.jcl_kq_dot_group4(ctypes.byref(wt), g, _ptr(x), _ptr(xs), _ptr(out[g]))
    return out.reshape(-1)[:N]


@pytest.mark.parametrize("kind", [Q4_K, Q5_K, Q6_K], ids=["Q4_K", "Q5_K", "Q6_K"])
def test_reference_quantizer_round_trip(weights, kind):
    for N, K in SHAPES:
        blocks, deq, a = weights(kind, N, K)
        assert blocks.dtype == np.uint8 and blocks.shape == (N, K // 256 * {Q4_K: 144, Q5_K: 176, Q6_K: 210}[kind])
        rms = np.sqrt(np.mean((deq - a) ** 2))
        assert rms < RT_RMS[kind] * a.std(), (rms, a.std())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", [Q4_K, Q5_K, Q6_K], ids=["Q4_K", "Q5_K", "Q6_K"])
def test_dequant_row_bitwise(libs, weights, variant, kind):
    lib = libs(variant)
    for N, K in SHAPES:
        blocks, deq, _ = weights(kind, N, K)
        got = _kernel_rows(lib, kind, blocks, N, K)
        np.testing.assert_array_equal(got.view(np.uint32), deq.view(np.uint32))


def test_dequant_row_fp16_edge_cases(libs):
    """Subnormal, zero, negative and large fp16 scales convert exactly (the plain-C fp16 path)."""
    lib = libs("generic")
    blocks = quantize_q4_k(np.ones((4, 256), np.float32))
    for r, (d, dmin) in enumerate([(0x0001, 0x03FF), (0x8000, 0x0000), (0xBC00, 0x8001), (0x7BFF, 0x0400)]):
        blocks[r, 0:2] = np.frombuffer(np.uint16(d).tobytes(), np.uint8)
        blocks[r, 2:4] = np.frombuffer(np.uint16(dmin).tobytes(), np.uint8)
    blocks[:, 4:16] = np.arange(12, dtype=np.uint8) * 21  # every scale/min bit pattern differs
    want = dequantize(blocks, gguf.GGMLQuantizationType.Q4_K)
    got = _kernel_rows(lib, Q4_K, blocks, 4, 256)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", [Q4_K, Q5_K, Q6_K], ids=["Q4_K", "Q5_K", "Q6_K"])
def test_dot_group4_matches_float64(libs, weights, variant, kind):
    lib = libs(variant)
    rng = np.random.default_rng(kind)
    for N, K in SHAPES:
        blocks, deq, _ = weights(kind, N, K)
        x = rng.standard_normal(K).astype(np.float32)
        x[rng.integers(0, K, 4)] *= 30  # a few outliers, as activations have
        got = _kernel_matvec(lib, kind, blocks, N, K, x)
        w64, x64 = deq.astype(np.float64), x.astype(np.float64)
        want = w64 @ x64
        scale = np.abs(w64) @ np.abs(x64)
        err = np.abs(got - want) / scale
        assert err.max() <= DOT_TOL, (N, K, err.max())


@pytest.mark.skipif(not cpu_has_avx2(), reason="no AVX2/FMA/F16C on this CPU")
@pytest.mark.parametrize("kind", [Q4_K, Q5_K, Q6_K], ids=["Q4_K", "Q5_K", "Q6_K"])
def test_avx2_agrees_with_generic(libs, weights, kind):
    avx2, generic = libs("avx2"), libs("generic")
    rng = np.random.default_rng(100 + kind)
    N, K = 262, 512
    blocks, deq, _ = weights(kind, N, K)
    x = rng.standard_normal(K).astype(np.float32)
    a = _kernel_matvec(avx2, kind, blocks, N, K, x)
    b = _kernel_matvec(generic, kind, blocks, N, K, x)
    scale = np.abs(deq.astype(np.float64)) @ np.abs(x.astype(np.float64))
    assert (np.abs(a.astype(np.float64) - b) / scale).max() <= 2 * DOT_TOL


@pytest.mark.skipif(not (KERNELS / "quants.c").is_file(), reason="quants.c not written yet")
@pytest.mark.parametrize("variant", VARIANTS)
def test_through_quants_c_dispatch(tmp_path_factory, weights, variant):
    """jcl_dequant_row and jcl_test_dot_rows of quants.c (its x_aux, its dispatch) reach these
    K-quant kernels with the same results."""
    lib = load_library(variant, cache_dir=tmp_path_factory.mktemp("kq_full"), sources=("quants.c", "kquants.c"))
    lib.jcl_dequant_row.argtypes = [ctypes.POINTER(Wt), ctypes.c_int, f32p]
    lib.jcl_test_dot_rows.argtypes = [ctypes.POINTER(Wt), f32p, f32p]
    rng = np.random.default_rng(7)
    N, K = 262, 512
    for kind in (Q4_K, Q5_K, Q6_K):
        blocks, deq, _ = weights(kind, N, K)
        packed = interleave(blocks, kind, K)
        wt = make_wt(packed, kind, N, K)
        rows = np.empty((N, K), dtype=np.float32)
        for r in range(N):
            lib.jcl_dequant_row(ctypes.byref(wt), r, _ptr(rows[r]))
        np.testing.assert_array_equal(rows.view(np.uint32), deq.view(np.uint32))
        x = rng.standard_normal(K).astype(np.float32)
        y = np.empty(N, dtype=np.float32)
        lib.jcl_test_dot_rows(ctypes.byref(wt), _ptr(x), _ptr(y))
        w64, x64 = deq.astype(np.float64), x.astype(np.float64)
        assert (np.abs(y - w64 @ x64) / (np.abs(w64) @ np.abs(x64))).max() <= DOT_TOL


# ---- int8 activations (kquants_q8.c through q8.c's jcl_test_q8_rows) ----

Q8_SOURCES = ("quants.c", "kquants.c", "q8.c", "kquants_q8.c")
Q8_KINDS = [Q4_K, Q5_K, Q6_K]
Q8_IDS = ["Q4_K", "Q5_K", "Q6_K"]
Q8_TOKENS = (1, 2, 3, 5)


@pytest.fixture(scope="module")
def q8_libs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kq_q8")
    built = {}

    def get(variant):
        if variant not in built:
            try:
                lib = load_library(variant, cache_dir=cache, sources=Q8_SOURCES)
            except KernelUnavailable as exc:
                pytest.skip(str(exc))
            lib.jcl_test_q8_rows.argtypes = [ctypes.POINTER(Wt), f32p, ctypes.c_int, f32p]
            lib.jcl_test_q8_rows.restype = ctypes.c_int
            lib.jcl_q8_supported.argtypes = lib.jcl_kq_q8_supported.argtypes = [ctypes.c_int]
            built[variant] = lib
        return built[variant]

    return get


def _q8_rows(lib, kind, blocks, N, K, x):
    """y [n, N] = W . x~_t through the int8 kernels (x [n, K])."""
    packed = interleave(blocks, kind, K)
    wt = make_wt(packed, kind, N, K)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty((x.shape[0], N), dtype=np.float32)
    assert lib.jcl_test_q8_rows(ctypes.byref(wt), _ptr(x), x.shape[0], _ptr(y)) == 0
    return y


def _activations(rng, n, K):
    x = rng.standard_normal((n, K)).astype(np.float32)
    x[:, rng.integers(0, K, 4)] *= 30  # a few outliers, as activations have
    return x


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", Q8_KINDS, ids=Q8_IDS)
def test_q8_rows_match_float64(q8_libs, weights, variant, kind):
    """Every token of a chunk: W (as gguf dequantizes it) @ x~ (round_q8) in float64, and the
    same as that token alone (token tiles change nothing beyond float order)."""
    torch = pytest.importorskip("torch")
    from jupyter_codellama.testing.gguf_model import round_q8

    lib = q8_libs(variant)
    assert lib.jcl_kq_q8_supported(kind) == 1 and lib.jcl_q8_supported(kind) == 1
    rng = np.random.default_rng(300 + kind)
    for N, K in SHAPES:
        blocks, deq, _ = weights(kind, N, K)
        w64 = deq.astype(np.float64)
        for n in Q8_TOKENS:
            x = _activations(rng, n, K)
            got = _q8_rows(lib, kind, blocks, N, K, x)
            xt = round_q8(torch.from_numpy(x)).numpy()
            want, scale = xt @ w64.T, np.abs(xt) @ np.abs(w64).T
            err = np.abs(got - want) / scale
            assert err.max() <= DOT_TOL, (N, K, n, err.max())
            alone = np.stack([_q8_rows(lib, kind, blocks, N, K, x[t : t + 1])[0] for t in range(n)])
            assert (np.abs(got - alone) / scale).max() <= 1e-6, (N, K, n)


@pytest.mark.skipif(not cpu_has_avx2(), reason="no AVX2/FMA/F16C on this CPU")
@pytest.mark.parametrize("kind", Q8_KINDS, ids=Q8_IDS)
def test_q8_avx2_agrees_with_generic(q8_libs, weights, kind):
    avx2, generic = q8_libs("avx2"), q8_libs("generic")
    rng = np.random.default_rng(400 + kind)
    N, K = 262, 512
    blocks, deq, _ = weights(kind, N, K)
    x = _activations(rng, 3, K)
    a = _q8_rows(avx2, kind, blocks, N, K, x)
    b = _q8_rows(generic, kind, blocks, N, K, x)
    scale = np.abs(x.astype(np.float64)) @ np.abs(deq.astype(np.float64)).T
    assert (np.abs(a.astype(np.float64) - b) / scale).max() <= 2e-6


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", Q8_KINDS, ids=Q8_IDS)
def test_q8_rows_extreme_blocks(q8_libs, variant, kind):
    """Every bit pattern of quants and scales, rows of all-ones bytes (the largest q and scales)
    against activations of one magnitude (every q8 at +-127): the kernels' int16 sums stay exact."""
    torch = pytest.importorskip("torch")
    from jupyter_codellama.testing.gguf_model import round_q8

    lib = q8_libs(variant)
    rng = np.random.default_rng(500 + kind)
    N, K = 8, 512
    bb = {Q4_K: 144, Q5_K: 176, Q6_K: 210}[kind]
    blocks = rng.integers(0, 256, (N, K // 256, bb), dtype=np.uint8)
    blocks[:3] = 0xFF
    half = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    for off in [208] if kind == Q6_K else [0, 2]:
        blocks[:, :, off : off + 2] = half
    blocks = blocks.reshape(N, -1)
    deq = dequantize(blocks, QUANT[kind][1]).astype(np.float64)
    x = np.stack([np.ones(K), -np.ones(K), rng.choice([-1.0, 1.0], K), rng.standard_normal(K), np.zeros(K)]).astype(
        np.float32
    )
    got = _q8_rows(lib, kind, blocks, N, K, x)
    xt = round_q8(torch.from_numpy(x)).numpy()
    want, scale = xt @ deq.T, np.abs(xt) @ np.abs(deq).T
    assert np.all(got[-1] == 0)
    assert (np.abs(got - want)[:-1] / scale[:-1]).max() <= DOT_TOL
