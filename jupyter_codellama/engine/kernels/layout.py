"""The weight layout the C kernel reads (see quants.h), built from GGUF tensors."""

from __future__ import annotations

import ctypes

import numpy as np

F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K = 0, 1, 2, 3, 8, 12, 13, 14

#: type -> (elements per block, bytes per block)
BLOCKS = {
    F32: (1, 4),
    F16: (1, 2),
    Q4_0: (32, 18),
    Q4_1: (32, 20),
    Q8_0: (32, 34),
    Q4_K: (256, 144),
    Q5_K: (256, 176),
    Q6_K: (256, 210),
}
NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q8_0: "Q8_0", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}


class Wt(ctypes.Structure):
    """Mirrors ``Wt`` in quants.h (its size is checked against the C side at load)."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("type", ctypes.c_int32),
        ("N", ctypes.c_int32),
        ("K", ctypes.c_int32),
        ("pad", ctypes.c_int32),
        ("row_bytes", ctypes.c_int64),
    ]


def is_quantized(kind: int) -> bool:
    return BLOCKS[kind][0] > 1


def row_bytes(kind: int, K: int) -> int:
    elems, nbytes = BLOCKS[kind]
    if K % elems:
        raise ValueError(f"{NAMES[kind]} rows need a multiple of {elems} columns, got {K}")
    return K // elems * nbytes


def packed_nbytes(kind: int, N: int, K: int) -> int:
    """Bytes of a weight in the kernel's layout (quantized rows padded to a multiple of 4)."""
    rows = -(-N // 4) * 4 if is_quantized(kind) else N
    return rows * row_bytes(kind, K)


def interleave(rows: np.ndarray, kind: int, K: int, out: np.ndarray | None = None) -> np.ndarray:
    """GGUF rows ``[N, row_bytes]`` (uint8) → the kernel's layout, flat uint8.

    Quantized types: padded to a multiple of 4 rows, each group of 4 rows' blocks interleaved.
    F32/F16: the rows as they are. ``out`` (a flat uint8 buffer of :func:`packed_nbytes`, e.g. a
    slice of a memory-mapped file) receives the result when given.
    """
    rows = np.ascontiguousarray(rows).view(np.uint8)
    N = rows.shape[0]
    rb = row_bytes(kind, K)
    rows = rows.reshape(N, rb)
    size = packed_nbytes(kind, N, K)
    if out is None:
        out = np.empty(size, dtype=np.uint8)
    elif out.shape != (size,):
        raise ValueError(f"output buffer holds {out.shape}, need {size} bytes")
    if not is_quantized(kind):
        out[:] = rows.reshape(-1)
        return out
    elems, bb = BLOCKS[kind]
    nb = K // elems
    groups = -(-N // 4)
    view = out.reshape(groups, nb, 4, bb)
    full = N // 4
    if full:
        view[:full] = rows[: full * 4].reshape(full, 4, nb, bb).transpose(0, 2, 1, 3)
    if N % 4:
        tail = np.zeros((4, nb, bb), dtype=np.uint8)
        tail[: N % 4] = rows[full * 4 :].reshape(-1, nb, bb)
        view[full] = tail.transpose(1, 0, 2)
    return out


def make_wt(buffer: np.ndarray, kind: int, N: int, K: int) -> Wt:
    """A ``Wt`` pointing at ``buffer`` (the caller keeps the buffer alive)."""
    return Wt(data=buffer.ctypes.data, type=kind, N=N, K=K, pad=0, row_bytes=row_bytes(kind, K))
