"""int8 activations (kernels/q8.c, quants.h): the rounding itself, bit for bit against the
reference's float32 rounding, and every weight type's product with a rounded vector, through its
int8 kernel or its fp32 kernel on x~, against a float64 product on gguf's dequantized weights."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as GT
from gguf.quants import dequantize, quantize

from jupyter_codellama.engine import kernels
from jupyter_codellama.engine.kernels import layout
from jupyter_codellama.testing.gguf_model import round_q8

VARIANTS = [
    "generic",
    pytest.param("avx2", marks=pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="this CPU has no AVX2/FMA/F16C")),
]
#: |kernel - float64 reference| <= RTOL * sum_k |w_k x~_k|
RTOL = 1e-5
VP = ctypes.c_void_p


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cache = tmp_path_factory.mktemp("q8-kernel-cache")
    built = {}

    def get(variant):
        if variant not in built:
            built[variant] = kernels.load_library(variant, cache_dir=cache)
            built[variant].jcl_matvec.argtypes = [ctypes.POINTER(layout.Wt), VP, VP, ctypes.c_int, ctypes.c_int]
            built[variant].jcl_test_q8_rows.argtypes = [ctypes.POINTER(layout.Wt), VP, ctypes.c_int, VP]
        return built[variant]

    return get


def _x(K: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(K).astype(np.float32)
    x[:32] = 0.0  # a block of zeros: scale 0, all q 0
    x[40] = 37.0  # an outlier: its block's other values round coarsely
    if K >= 96:  # scale exactly 1 and halves: exact ties, which both sides round to even
        x[64:96] = np.arange(32, dtype=np.float32) - np.float32(15.5)
        x[64] = 127.0
    return x


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_rounding_is_the_references_bit_for_bit(lib, variant):
    K = 256
    x = _x(K)
    q, d = np.empty(K, np.int8), np.empty(K // 32, np.float32)
    s16, xt = np.empty(K // 16, np.int16), np.empty(K, np.float32)
    lib(variant).jcl_x_q8(
        VP(x.ctypes.data), K, VP(q.ctypes.data), VP(d.ctypes.data), VP(s16.ctypes.data), VP(xt.ctypes.data)
    )
    ref = round_q8(torch.from_numpy(x)).float().numpy()
    assert np.array_equal(xt, ref)
    np.testing.assert_array_equal(d, np.abs(x.reshape(-1, 32)).max(1) / np.float32(127))
    assert np.array_equal(q.astype(np.float32) * np.repeat(d, 32), xt)
    assert np.array_equal(s16, q.reshape(-1, 16).astype(np.int32).sum(1))
    assert not q[:32].any() and q.max() <= 127 and q.min() >= -127


def _weight(kind: str, N: int, K: int):
    gtype = GT[kind]
    w = np.random.default_rng(0).standard_normal((N, K)).astype(np.float32) * 0.05
    blocks = quantize(w, gtype)
    deq = dequantize(blocks, gtype).astype(np.float64).reshape(N, K)
    code = getattr(layout, kind)
    buf = layout.interleave(np.ascontiguousarray(blocks).view(np.uint8).reshape(N, -1), code, K)
    return buf, layout.make_wt(buf, code, N, K), deq


def _check(y: np.ndarray, deq: np.ndarray, xt: np.ndarray) -> None:
    ref = deq @ xt
    bound = RTOL * (np.abs(deq) @ np.abs(xt)) + 1e-12
    assert (np.abs(y - ref) <= bound).all(), np.abs(y - ref).max()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0", "F16"])
@pytest.mark.parametrize("shape", [(7, 64), (262, 512)])  # noqa: PT006
def test_a_matvec_multiplies_the_rounded_vector(lib, variant, kind, shape):
    """Quantized weights multiply x~ (int8 kernel or fp32 kernel on x~); F16 keeps x unrounded."""
    N, K = shape
    buf, wt, deq = _weight(kind, N, K)
    x = _x(K)
    y = np.empty(N, np.float32)
    lib(variant).jcl_matvec(ctypes.byref(wt), VP(x.ctypes.data), VP(y.ctypes.data), 1, 1)
    rounded = kind != "F16"
    _check(y.astype(np.float64), deq, round_q8(torch.from_numpy(x)).numpy() if rounded else x.astype(np.float64))
    lib(variant).jcl_matvec(ctypes.byref(wt), VP(x.ctypes.data), VP(y.ctypes.data), 1, 0)
    _check(y.astype(np.float64), deq, x.astype(np.float64))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_the_q4_0_int8_kernel_takes_tokens_in_tiles_without_changing_them(lib, variant, n):
    N, K = 262, 512
    buf, wt, deq = _weight("Q4_0", N, K)
    X = np.stack([_x(K, seed) for seed in range(n)])
    Y = np.empty((n, N), np.float32)
    assert lib(variant).jcl_test_q8_rows(ctypes.byref(wt), VP(X.ctypes.data), n, VP(Y.ctypes.data)) == 0
    one = np.empty(N, np.float32)
    for t in range(n):
        _check(Y[t].astype(np.float64), deq, round_q8(torch.from_numpy(X[t])).numpy())
        lib(variant).jcl_test_q8_rows(ctypes.byref(wt), VP(X[t].ctypes.data), 1, VP(one.ctypes.data))
        assert np.array_equal(Y[t], one)


def test_types_without_an_int8_kernel_say_so(lib):
    buf, wt, _ = _weight("Q8_0", 4, 64)
    x, y = _x(64), np.empty(4, np.float32)
    assert lib("generic").jcl_test_q8_rows(ctypes.byref(wt), VP(x.ctypes.data), 1, VP(y.ctypes.data)) == -1
    assert lib("generic").jcl_q8_supported(layout.Q4_0) == 1
