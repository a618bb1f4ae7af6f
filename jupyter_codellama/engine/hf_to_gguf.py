"""An HF Llama checkpoint (safetensors, fp16/bf16/fp32) → a 4-bit (or 8-bit) GGUF in the cache.

Done once per checkpoint and quantization, one tensor at a time (the model never sits in memory
in fp32), with gguf's own writer and quantizer; later loads map the cached file in seconds. The
file is an ordinary llama.cpp GGUF: q/k rows in llama.cpp's rotary order, llama.* metadata. The
tokenizer stays the checkpoint's own (recorded next to the file).

    hf_to_gguf(source, "Q4_0")   → Path of the cached GGUF
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .loading import ModelLoadError, ModelNotAvailableError, _not_available_message

log = logging.getLogger(__name__)

_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def checkpoint_folder(source: str, *, local_files_only: bool) -> Path:
    """A local folder with the checkpoint's config, tokenizer and safetensors."""
    if os.path.isdir(source):
        return Path(source)
    from huggingface_hub import constants, snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer.model"]
    try:
        return Path(snapshot_download(source, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache: download, unless offline
        if local_files_only or constants.HF_HUB_OFFLINE:
            raise ModelNotAvailableError(_not_available_message(source)) from None
    try:
        return Path(snapshot_download(source, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - one clear message for any hub failure
        raise ModelNotAvailableError(f"{_not_available_message(source)}\n({exc})") from exc


def gguf_name(hf_name: str) -> str | None:
    """The llama.cpp tensor name of an HF Llama weight (None for what GGUF does not keep)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if len(parts) >= 5 and parts[:2] == ["model", "layers"] and parts[-1] == "weight":
        part = _NAMES.get(".".join(parts[3:-1]))
        if part:
            return f"blk.{parts[2]}.{part}.weight"
    return None


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's q/k rows (rotary halves) → llama.cpp's (rotary pairs), as llama.cpp's converter."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _fingerprint(folder: Path, kind: str) -> str:
    h = hashlib.sha256(kind.encode())
    for f in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _tensors(folder: Path) -> dict[str, Path]:
    from safetensors import safe_open

    where = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                where[name] = f
    if not where:
        raise ModelLoadError(f"{folder} has no .safetensors weights to quantize for the CPU kernel.")
    return where


def _load(path: Path, name: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as st:
        return st.get_tensor(name).float().numpy()


def _quantized(name: str, w: np.ndarray, kind: str, cfg: dict):
    from gguf import GGMLQuantizationType, quants

    if name.endswith(("attn_q.weight", "attn_k.weight")):
        heads = (
            cfg["num_attention_heads"]
            if "attn_q" in name
            else cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        )
        w = permute_rotary(w, heads)
    if w.ndim == 1 or w.shape[-1] % 32:
        return w.astype(np.float32), None
    qtype = GGMLQuantizationType[kind]
    return quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype), qtype


def _add_metadata(writer, cfg: dict, kind: str) -> None:
    from gguf import LlamaFileType

    heads = cfg["num_attention_heads"]
    writer.add_context_length(int(cfg.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads", heads)))
    writer.add_rope_dimension_count(int(cfg["hidden_size"]) // int(heads))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    writer.add_rope_freq_base(rope_theta(cfg))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_file_type({"Q4_0": LlamaFileType.MOSTLY_Q4_0, "Q8_0": LlamaFileType.MOSTLY_Q8_0}[kind])


def rope_theta(cfg: dict) -> float:
    """RoPE's base: top-level ``rope_theta`` (the released checkpoints) or transformers 5's
    ``rope_parameters``."""
    params = cfg.get("rope_parameters") or {}
    return float(params.get("rope_theta") or cfg.get("rope_theta") or 10000.0)


def _check_config(cfg: dict, folder: Path) -> None:
    if cfg.get("model_type") != "llama":
        raise ModelLoadError(f"{folder}: model_type {cfg.get('model_type')!r}; the CPU kernel runs Llama models.")
    rope_type = (cfg.get("rope_parameters") or {}).get("rope_type", "default")
    if cfg.get("rope_scaling") or rope_type != "default" or cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ModelLoadError(f"{folder}: RoPE scaling or biases are not supported by the CPU kernel.")
    head_dim = cfg.get("head_dim")
    if head_dim and head_dim * cfg["num_attention_heads"] != cfg["hidden_size"]:
        raise ModelLoadError(f"{folder}: head_dim × heads ≠ hidden size; not supported by the CPU kernel.")


def write_gguf(folder: Path, target: Path, kind: str, progress: Callable[[float], None]) -> None:
    """Quantize the checkpoint in ``folder`` to ``target`` (``kind``: 'Q4_0' or 'Q8_0')."""
    import gguf

    cfg = json.loads((folder / "config.json").read_text())
    _check_config(cfg, folder)
    where = _tensors(folder)
    names = {n: gguf_name(n) for n in where}
    if "lm_head.weight" not in where:  # tied embeddings: llama.cpp reads token_embd for both
        names.pop("lm_head.weight", None)
    todo = [(hf, g) for hf, g in names.items() if g]
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        _add_metadata(writer, cfg, kind)
        shapes = _shapes(where, todo, kind, cfg)
        for (_hf, g), (shape, dtype, nbytes, qtype) in zip(todo, shapes, strict=True):
            writer.add_tensor_info(g, shape, dtype, nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (hf, g) in enumerate(todo):
            data, _ = _quantized(g, _load(where[hf], hf), kind, cfg)
            writer.write_tensor_data(data)
            progress((i + 1) / len(todo))
        writer.close()
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _shapes(where, todo, kind: str, cfg: dict):
    """(shape, dtype, nbytes, raw type) of every output tensor, from the safetensors headers."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from safetensors import safe_open

    out = []
    for hf, _g in todo:
        with safe_open(str(where[hf]), "pt") as st:
            shape = tuple(st.get_slice(hf).get_shape())
        if len(shape) == 1 or shape[-1] % 32:
            out.append((shape, np.float32, int(np.prod(shape)) * 4, None))
            continue
        qtype = GGMLQuantizationType[kind]
        elems, nbytes = GGML_QUANT_SIZES[qtype]
        byte_shape = (*shape[:-1], shape[-1] // elems * nbytes)
        out.append((byte_shape, np.uint8, int(np.prod(byte_shape)), qtype))
    return out


def hf_to_gguf(
    source: str,
    kind: str,
    *,
    cache_root: Path,
    local_files_only: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> Path:
    """The cached GGUF of checkpoint ``source`` quantized to ``kind`` (made on first use)."""
    report = progress or (lambda _s, _f: None)
    folder = checkpoint_folder(source, local_files_only=local_files_only)
    name = Path(source).name if os.path.isdir(source) else source.replace("/", "--")
    target = cache_root / "gguf" / f"{name}-{kind}-{_fingerprint(folder, kind)}.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        report(f"quantizing {name} to {kind} for the CPU kernel (first use only)", 0.05)
        write_gguf(folder, target, kind, lambda f: report(f"quantizing to {kind} (first use only)", 0.05 + 0.3 * f))
    target.with_suffix(".source").write_text(str(folder))
    return target
