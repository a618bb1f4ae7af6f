"""Small Llama GGUF files with random weights, and a float64 reference forward pass on them.

For tests and benchmarks of the CPU kernel: a model of Code Llama's head size (128) with GQA,
written with gguf's own writer in the quantization types under test, plus the exact fp32 weights
those blocks dequantize to (gguf's dequantize), so a float64 forward on them is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class TinyShape:
    dim: int = 512
    n_layers: int = 2
    n_heads: int = 4
    n_kv: int = 2
    hidden: int = 768
    vocab: int = 1024
    rope_theta: float = 10000.0
    eps: float = 1e-5
    context: int = 2048

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


Quantizer = Callable[[np.ndarray, str], np.ndarray]


def gguf_quantize(a: np.ndarray, kind: str) -> np.ndarray:
    """gguf's own quantizer (F32, F16, Q4_0, Q4_1, Q8_0, …)."""
    from gguf import GGMLQuantizationType, quants

    if kind == "F32":
        return a.astype(np.float32)
    return quants.quantize(a.astype(np.float32), GGMLQuantizationType[kind])


def _dequantize(blocks: np.ndarray, kind: str) -> np.ndarray:
    from gguf import GGMLQuantizationType, quants

    if kind == "F32":
        return blocks.astype(np.float32)
    return quants.dequantize(blocks, GGMLQuantizationType[kind]).astype(np.float32)


def _random_weights(shape: TinyShape, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, kv = shape.n_heads * shape.head_dim, shape.n_kv * shape.head_dim

    def mat(n, k, std=None):
        return rng.normal(0.0, std or k**-0.5, (n, k)).astype(np.float32)

    w = {
        "token_embd.weight": mat(shape.vocab, shape.dim, 1.0),
        "output_norm.weight": (1.0 + 0.1 * rng.normal(size=shape.dim)).astype(np.float32),
        "output.weight": mat(shape.vocab, shape.dim),
    }
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = (1.0 + 0.1 * rng.normal(size=shape.dim)).astype(np.float32)
        w[p + "ffn_norm.weight"] = (1.0 + 0.1 * rng.normal(size=shape.dim)).astype(np.float32)
        w[p + "attn_q.weight"] = mat(q, shape.dim)
        w[p + "attn_k.weight"] = mat(kv, shape.dim)
        w[p + "attn_v.weight"] = mat(kv, shape.dim)
        w[p + "attn_output.weight"] = mat(shape.dim, q)
        w[p + "ffn_gate.weight"] = mat(shape.hidden, shape.dim)
        w[p + "ffn_up.weight"] = mat(shape.hidden, shape.dim)
        w[p + "ffn_down.weight"] = mat(shape.dim, shape.hidden)
    return w


def write_tiny_gguf(
    path: str | Path,
    kind: str,
    *,
    shape: TinyShape = TinyShape(),
    seed: int = 0,
    quantize: Quantizer = gguf_quantize,
    head_kind: str | None = None,
    embed_kind: str | None = None,
    add_tokenizer: Callable | None = None,
) -> dict[str, np.ndarray]:
    """Write a random Llama GGUF whose matrices are ``kind``; return the weights it holds
    (dequantized, fp32, in GGUF's row order: q/k rows in llama.cpp's rotary order)."""
    import gguf

    weights = _random_weights(shape, seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.dim)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.hidden)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(shape.eps)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_vocab_size(shape.vocab)
    if add_tokenizer is not None:
        add_tokenizer(writer)
    held = {}
    for name, w in weights.items():
        t = kind
        if w.ndim == 1:
            t = "F32"
        elif name == "output.weight" and head_kind:
            t = head_kind
        elif name == "token_embd.weight" and embed_kind:
            t = embed_kind
        blocks = quantize(w, t)
        raw = None if t in ("F32", "F16") else gguf.GGMLQuantizationType[t]
        writer.add_tensor(name, blocks, raw_dtype=raw)
        held[name] = _dequantize(blocks, t).reshape(w.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


# ---------------------------------------------------------------------------------------------
# The reference: a plain float64 Llama forward on those weights


def _rope_pairs(x, pos, theta):  # x: [T, H, hd], GGUF's adjacent-pair rotary order
    import torch

    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = pos[:, None].double() * inv[None, :]  # [T, hd/2]
    c, s = ang.cos()[:, None, :], ang.sin()[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = b * c + a * s
    return out


def _rms(x, w, eps):
    return w * (x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt())


def round_q8(x):
    """x~ of the kernel's int8 activations (quants.h): each run of 32 rounded to int8 with the
    scale max|x| / 127, in float32 with the kernel's very operations, returned as float64."""
    import torch

    blocks = x.float().reshape(*x.shape[:-1], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127.0
    q = torch.where(d == 0, torch.zeros_like(blocks), torch.round(blocks / d))
    return (q * d).reshape(x.shape).double()


def reference_logits(
    weights: dict[str, np.ndarray],
    shape: TinyShape,
    ids: Sequence[int],
    rounded: Callable[[str], bool] | None = None,
    kv_half: bool = False,
):
    """float64 logits [len(ids), vocab] of a causal forward over ``ids`` from position 0.

    ``rounded(name)``: whether the input of weight ``name`` is rounded to int8 blocks first
    (:func:`round_q8`), as the kernel does for quantized weights with int8 activations.
    ``kv_half``: keys (after rotation) and values rounded to fp16, from float32, as the kernel's
    fp16 KV cache stores them.
    """
    import torch

    W0 = {k: torch.from_numpy(v).double() for k, v in weights.items()}
    W = {k: _Weight(v, k, rounded) for k, v in W0.items()}
    T, hd = len(ids), shape.head_dim
    x = W0["token_embd.weight"][torch.tensor(list(ids))]
    pos = torch.arange(T)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        h = _rms(x, W0[p + "attn_norm.weight"], shape.eps)
        q = _rope_pairs((h @ W[p + "attn_q.weight"].T).view(T, shape.n_heads, hd), pos, shape.rope_theta)
        k = _rope_pairs((h @ W[p + "attn_k.weight"].T).view(T, shape.n_kv, hd), pos, shape.rope_theta)
        v = (h @ W[p + "attn_v.weight"].T).view(T, shape.n_kv, hd)
        if kv_half:
            k, v = k.float().half().double(), v.float().half().double()
        rep = shape.n_heads // shape.n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / hd**0.5 + mask
        o = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, -1)
        x = x + o @ W[p + "attn_output.weight"].T
        h = _rms(x, W0[p + "ffn_norm.weight"], shape.eps)
        g = h @ W[p + "ffn_gate.weight"].T
        x = x + (torch.nn.functional.silu(g) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    head = W.get("output.weight", W["token_embd.weight"])
    return _rms(x, W0["output_norm.weight"], shape.eps) @ head.T


class _Weight:
    """A weight matrix in the reference: ``x @ w.T`` rounds x first where the kernel would."""

    def __init__(self, w, name: str, rounded: Callable[[str], bool] | None) -> None:
        self.w, self.round = w, bool(rounded and rounded(name))

    @property
    def T(self) -> "_Weight":
        return self

    def __rmatmul__(self, x):
        return (round_q8(x) if self.round else x) @ self.w.T


def reference_greedy(
    weights,
    shape: TinyShape,
    ids: Sequence[int],
    n: int,
    rounded: Callable[[str], bool] | None = None,
    kv_half: bool = False,
) -> list[int]:
    """``n`` greedy tokens after ``ids`` by the float64 reference (full recompute each step)."""
    seq = list(ids)
    out = []
    for _ in range(n):
        tok = int(reference_logits(weights, shape, seq, rounded, kv_half)[-1].argmax())
        out.append(tok)
        seq.append(tok)
    return out


def rounding_of(kinds: dict[str, str]) -> Callable[[str], bool]:
    """The kernel's int8-activation rule for a file whose tensors have these GGML type names:
    the input of every quantized weight is rounded (for ``reference_logits(rounded=)``)."""
    return lambda name: kinds.get(name, "F32") not in ("F32", "F16")


def agreement(model, ids: Sequence[int], answer: Sequence[int]) -> float:
    """Teacher forcing: the share of ``answer``'s tokens that are ``model``'s argmax when fed the
    tokens before them. Quantization is judged this way: one early near tie that tips the other
    way would make every later greedy token differ."""
    dec = model.decoder(model.new_cache(), chunk=5)
    logits, same = dec.prefill(list(ids)), 0
    for tok in answer:
        same += int(logits.argmax()) == tok
        logits = dec.step(tok)
    return same / len(answer)
