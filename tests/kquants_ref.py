"""Reference numpy quantizers for the K-quants (Q4_K, Q5_K, Q6_K), for tests.

Each takes float32 weights ``[N, K]`` (K a multiple of 256) and returns GGUF blocks, uint8
``[N, K // 256 * block_bytes]``, that ``gguf.quants.dequantize`` reads. Scales come from a plain
min/max per sub-block (not llama.cpp's search): valid blocks with a sensible reconstruction
error, which is all the kernel tests need.
"""

from __future__ import annotations

import numpy as np

QK = 256


def _blocks(a: np.ndarray, sub: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] % QK:
        raise ValueError(f"need [N, K] with K a multiple of {QK}, got {a.shape}")
    return a.reshape(-1, QK // sub, sub)  # [blocks, sub-blocks, elements]


def _f16(v: np.ndarray) -> np.ndarray:
    """fp16 values (as float32) and their bytes."""
    h = v.astype(np.float16)
    return h.astype(np.float32), h.view(np.uint8).reshape(-1, 2)


def _affine(a: np.ndarray, qmax: int):
    """Sub-block scales and mins for w = d*sc*q - dmin*m, q in 0..qmax, sc and m 6-bit."""
    b = _blocks(a, 32)
    lo = np.minimum(b.min(axis=-1), 0.0)
    hi = np.maximum(b.max(axis=-1), 0.0)
    scale = (hi - lo) / qmax  # [blocks, 8]
    dmin_ = -lo
    d, d_bytes = _f16(scale.max(axis=-1) / 63)
    dmin, dmin_bytes = _f16(dmin_.max(axis=-1) / 63)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(scale / d[:, None]), 0)
        m = np.where(dmin[:, None] > 0, np.rint(dmin_ / dmin[:, None]), 0)
    sc = np.clip(sc, 0, 63).astype(np.uint8)
    m = np.clip(m, 0, 63).astype(np.uint8)
    step = d[:, None] * sc.astype(np.float32)  # gguf's d*sc, fp32
    off = dmin[:, None] * m.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step[..., None] > 0, np.rint((b + off[..., None]) / step[..., None]), 0)
    q = np.clip(q, 0, qmax).astype(np.uint8)  # [blocks, 8, 32]
    return d_bytes, dmin_bytes, _pack_scale_min(sc, m), q


def _pack_scale_min(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """8 scales and 8 mins (6 bits) -> the 12 bytes gguf's get_scale_min unpacks."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    return out


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[blocks, 8, 32] values -> 128 bytes: sub-block 2c in the low nibbles of bytes 32c.., 2c+1
    in the high ones."""
    q = q.reshape(-1, 4, 2, 32)
    return ((q[:, :, 0] & 0x0F) | ((q[:, :, 1] & 0x0F) << 4)).reshape(-1, 128)


def quantize_q4_k(a: np.ndarray) -> np.ndarray:
    N = np.asarray(a).shape[0]
    d, dmin, scales, q = _affine(a, 15)
    return np.concatenate([d, dmin, scales, _nibbles(q)], axis=1).reshape(N, -1)


def quantize_q5_k(a: np.ndarray) -> np.ndarray:
    N = np.asarray(a).shape[0]
    d, dmin, scales, q = _affine(a, 31)
    bits = (q >> 4).astype(np.uint8)  # [blocks, 8, 32]: bit s of qh[l] is sub-block s's 5th bit
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for s in range(8):
        qh |= bits[:, s] << s
    return np.concatenate([d, dmin, scales, qh, _nibbles(q)], axis=1).reshape(N, -1)


def quantize_q6_k(a: np.ndarray) -> np.ndarray:
    N = np.asarray(a).shape[0]
    b = _blocks(a, 16)  # [blocks, 16, 16]
    # As llama.cpp does: the element of largest magnitude maps to q-32 = -32, so the scales'
    # signs follow the data's (negative scales occur in real files).
    vmax = np.take_along_axis(b, np.abs(b).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    scale = -vmax / 32
    d, d_bytes = _f16(np.abs(scale).max(axis=-1) / 127)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(scale / d[:, None]), 0)
    sc = np.clip(sc, -128, 127).astype(np.int8)
    step = d[:, None] * sc.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step[..., None] != 0, np.rint(b / step[..., None]), 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)  # [blocks, half, 4, 32]
    ql = np.concatenate(
        [(q[:, :, 0] & 0x0F) | ((q[:, :, 2] & 0x0F) << 4), (q[:, :, 1] & 0x0F) | ((q[:, :, 3] & 0x0F) << 4)], axis=-1
    )  # [., 2, 64]
    qh = (
        (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    )  # [., 2, 32]
    blocks = np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8), d_bytes], axis=1)
    return blocks.reshape(N, -1)
