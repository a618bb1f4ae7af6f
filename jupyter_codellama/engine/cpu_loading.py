"""Loading a model for the CPU kernel: find or make its GGUF, map it, load its tokenizer.

load_native
  ├─ gguf_source          the embedded model's GGUF · a .gguf path · a hub GGUF file ·
  │                       an HF checkpoint quantized once into a cached GGUF (hf_to_gguf)
  ├─ NativeModel.open     pack once into the kernel's layout, then memory-map
  └─ gguf_tokenizer       the tokenizer, chat template and special tokens from the file
                          (converted once and cached; later loads read the cache)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import default_cache_dir
from ..models import ModelSpec
from .loading import (
    FIM_TOKENS,
    KernelOptions,
    LoadedModel,
    LoadOptions,
    ModelLoadError,
    ModelNotAvailableError,
    ProgressCallback,
    _not_available_message,
    _quiet_transformers,
    check_hub_available,
    find_embedded_gguf,
    require_hub,
)

log = logging.getLogger(__name__)

#: quantization option → the GGUF type an HF checkpoint is quantized to for the kernel
HF_QUANT = {"auto": "Q4_0", "4bit": "Q4_0", "8bit": "Q8_0"}


def _cache_root(options: LoadOptions) -> Path:
    return Path(options.cache_dir) if options.cache_dir else Path(default_cache_dir())


# ---------------------------------------------------------------------------------------------
# Where the GGUF comes from


def split_hub_file(name: str) -> tuple[str, str] | None:
    """'owner/repo/file.gguf' → ('owner/repo', 'file.gguf'); None for anything else."""
    parts = name.strip().split("/")
    if len(parts) == 3 and parts[2].lower().endswith(".gguf") and not name.startswith((".", "/", "~")):
        return f"{parts[0]}/{parts[1]}", parts[2]
    return None


def hub_gguf(repo_id: str, filename: str, *, local_files_only: bool) -> Path:
    """A GGUF file from the Hugging Face hub (the local cache first; a clear error offline)."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    if local_files_only or constants.HF_HUB_OFFLINE:
        raise ModelNotAvailableError(_not_available_message(f"{repo_id}/{filename}"))
    require_hub(f"{repo_id}/{filename}")
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear message
        raise ModelNotAvailableError(f"{_not_available_message(f'{repo_id}/{filename}')}\n({exc})") from exc


def gguf_source(spec: ModelSpec, options: LoadOptions, report: ProgressCallback) -> Path:
    """The GGUF file the kernel will map for ``spec``."""
    if spec.family == "embedded":
        return find_embedded_gguf()
    if spec.repo_id.lower().endswith(".gguf"):
        hub = split_hub_file(spec.repo_id)
        if hub and not os.path.isfile(spec.repo_id):
            return hub_gguf(*hub, local_files_only=options.local_files_only)
        path = Path(spec.repo_id).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"No GGUF file at {path}.")
        return path
    from .hf_to_gguf import hf_to_gguf

    if not os.path.isdir(spec.repo_id):  # a hub id: fail at once when it can be neither read nor fetched
        check_hub_available(spec.repo_id, local_files_only=options.local_files_only)
    kind = HF_QUANT[(options.quantization or "auto").lower()]
    return hf_to_gguf(
        spec.repo_id, kind, cache_root=_cache_root(options), local_files_only=options.local_files_only, progress=report
    )


# ---------------------------------------------------------------------------------------------
# Tokenizer


def gguf_tokenizer(gguf: Path, cache_root: Path, tokenizer_source: str | None = None):
    """The tokenizer for ``gguf``: from the checkpoint it was made from when known, else from the
    file's own vocabulary (converted by transformers once, then loaded from the cache)."""
    from transformers import AutoTokenizer

    if tokenizer_source:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=True)
    st = gguf.stat()
    target = cache_root / "tokenizers" / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"
    if (target / ".complete").is_file():
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(target)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=target.parent))
    try:
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"from {gguf}\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError:
        log.debug("could not cache the tokenizer of %s", gguf, exc_info=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def _eos_ids(tokenizer, info) -> tuple[int, ...]:
    ids = {i for i in (tokenizer.eos_token_id,) if isinstance(i, int)}
    eot = tokenizer.convert_tokens_to_ids("▁<EOT>") if "▁<EOT>" in tokenizer.get_vocab() else None
    if isinstance(eot, int):
        ids.add(eot)
    return tuple(sorted(ids))


def _capabilities(spec: ModelSpec, tokenizer, context_length: int) -> ModelSpec:
    if spec.family != "custom":
        return spec
    vocab = tokenizer.get_vocab()
    return dataclasses.replace(
        spec,
        supports_infill=all(t in vocab for t in FIM_TOKENS),
        chat_format="template" if getattr(tokenizer, "chat_template", None) else None,
        context_length=context_length,
    )


# ---------------------------------------------------------------------------------------------
# The load


def load_native(
    options: LoadOptions,
    spec: ModelSpec,
    report: ProgressCallback,
    *,
    kernel: KernelOptions,
) -> LoadedModel:
    """Load ``spec`` for the CPU kernel; raise :class:`ModelLoadError` with advice."""
    from .kernels import KernelUnavailable
    from .native import NativeModel, UnsupportedModelError

    started = time.perf_counter()
    gguf = gguf_source(spec, options, report)
    report("preparing the weights for the CPU kernel", 0.4)
    try:
        model = NativeModel.open(
            gguf,
            n_threads=kernel.n_threads,
            activations=kernel.activations,
            kv_cache=kernel.kv_cache,
            cache_dir=options.cache_dir or None,
            progress=lambda f: report("packing the weights (first use only)", 0.4 + 0.4 * f),
        )
    except (UnsupportedModelError, KernelUnavailable) as exc:
        raise ModelLoadError(str(exc)) from exc
    report("loading the tokenizer", 0.85)
    tokenizer = gguf_tokenizer(gguf, _cache_root(options), _tokenizer_source_for(gguf))
    _repair(tokenizer)
    spec = _capabilities(spec, tokenizer, model.max_positions)
    report("ready", 1.0)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        quantization=model.weight_summary,
        dtype="float32",
        device="cpu",
        device_map_summary=f"cpu (mapped: {gguf.name})",
        eos_token_ids=_eos_ids(tokenizer, model.info),
        load_seconds=time.perf_counter() - started,
        backend="kernel",
    )


def _tokenizer_source_for(gguf: Path) -> str | None:
    """An HF checkpoint folder recorded next to a GGUF that hf_to_gguf made."""
    marker = gguf.with_suffix(".source")
    if marker.is_file():
        folder = marker.read_text().strip()
        if os.path.isdir(folder):
            return folder
    return None


def _repair(tokenizer) -> None:
    from .loading import _repair_codellama_tokenizer

    _repair_codellama_tokenizer(tokenizer)


def describe(loaded: LoadedModel) -> dict[str, Any]:
    model = loaded.model
    return {"kernel": model.description, "file_gb": round(model.file_bytes / 1e9, 2)}
