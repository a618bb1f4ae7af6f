"""The CPU engine: a Llama model served by our C kernel from its GGUF blocks, memory-mapped.

No PyTorch copy of the weights exists: the GGUF's tensors are written once into a pack file in
the kernel's layout (the same blocks, rows interleaved by 4; see kernels/quants.h) under the
cache directory, and that file is memory-mapped. Resident memory is about the file's size plus
the KV cache, and a model larger than the memory given to it still runs (its pages come from the
file).

    NativeModel.open(path, n_threads=…)   map a GGUF (packing it first if needed)
    model.new_cache()                      a KVCache (grows as needed; crop / deepcopy like
                                           transformers' DynamicCache, so PrefixCache keeps it)
    model.decoder(cache)                   one request: prefill(ids) → logits, step(token) →
                                           logits, close()
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import PREFILL_CHUNK_TOKENS
from . import kernels
from .generation import Cancelled
from .kernels import layout

log = logging.getLogger(__name__)

PACK_VERSION = 1
_ALIGN = 64


class UnsupportedModelError(ValueError):
    """The GGUF holds a model the CPU kernel cannot run; the message says why."""


# ---------------------------------------------------------------------------------------------
# What the GGUF says


@dataclass
class Hyper:
    """A Llama model's dimensions, from the GGUF's metadata."""

    n_layers: int
    dim: int
    hidden: int
    n_heads: int
    n_kv: int
    head_dim: int
    vocab: int
    eps: float
    rope_theta: float
    context_length: int

    def kv_bytes_per_token(self, element_bytes: int = 4) -> int:
        return 2 * self.n_layers * self.n_kv * self.head_dim * element_bytes


@dataclass
class TensorInfo:
    name: str
    kind: int
    N: int
    K: int
    offset: int = 0  # in the pack file

    @property
    def nbytes(self) -> int:
        return layout.packed_nbytes(self.kind, self.N, self.K)


@dataclass
class GGUFInfo:
    path: Path
    hyper: Hyper
    tensors: dict[str, TensorInfo]
    metadata: dict = field(default_factory=dict)


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.contents()
    return value if value is not None else default


def _type_of(tensor) -> int:
    kind = int(tensor.tensor_type)
    if kind not in layout.BLOCKS:
        supported = ", ".join(layout.NAMES[k] for k in sorted(layout.BLOCKS))
        raise UnsupportedModelError(
            f"tensor {tensor.name} is {tensor.tensor_type.name}; the CPU kernel reads {supported}. "
            "Re-quantize the model to one of those (llama.cpp's llama-quantize), e.g. Q4_K_M or Q4_0."
        )
    return kind


def read_info(reader, path: Path) -> GGUFInfo:
    """Hyperparameters and tensor list of a Llama GGUF; refuses what the kernel cannot run."""
    arch = _field(reader, "general.architecture", "")
    if arch != "llama":
        raise UnsupportedModelError(f"{path.name}: architecture {arch!r}; the CPU kernel runs Llama models")
    a = "llama."
    n_heads = int(_field(reader, a + "attention.head_count"))
    dim = int(_field(reader, a + "embedding_length"))
    head_dim = dim // n_heads
    rope_dims = int(_field(reader, a + "rope.dimension_count", head_dim))
    scaling = _field(reader, a + "rope.scaling.type", "none")
    if rope_dims != head_dim or scaling not in ("none", "", None):
        raise UnsupportedModelError(f"{path.name}: partial or scaled RoPE is not supported by the CPU kernel")
    tensors = {}
    for t in reader.tensors:
        K, N = (int(t.shape[0]), int(t.shape[1]) if len(t.shape) > 1 else 1)
        tensors[t.name] = TensorInfo(t.name, _type_of(t), N, K)
    embd = tensors.get("token_embd.weight")
    if embd is None:
        raise UnsupportedModelError(f"{path.name}: no token_embd.weight")
    hyper = Hyper(
        n_layers=int(_field(reader, a + "block_count")),
        dim=dim,
        hidden=int(_field(reader, a + "feed_forward_length")),
        n_heads=n_heads,
        n_kv=int(_field(reader, a + "attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        vocab=embd.N,
        eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, a + "rope.freq_base", 10000.0)),
        context_length=int(_field(reader, a + "context_length", 4096)),
    )
    _check_tensors(hyper, tensors, path)
    return GGUFInfo(path, hyper, tensors)


def _layer_names(i: int) -> dict[str, str]:
    return {
        f: f"blk.{i}.{n}.weight"
        for f, n in (
            ("attn_norm", "attn_norm"),
            ("ffn_norm", "ffn_norm"),
            ("q", "attn_q"),
            ("k", "attn_k"),
            ("v", "attn_v"),
            ("o", "attn_output"),
            ("gate", "ffn_gate"),
            ("up", "ffn_up"),
            ("down", "ffn_down"),
        )
    }


def _check_tensors(h: Hyper, tensors: dict[str, TensorInfo], path: Path) -> None:
    q, kv = h.n_heads * h.head_dim, h.n_kv * h.head_dim
    want = {
        "q": (q, h.dim),
        "k": (kv, h.dim),
        "v": (kv, h.dim),
        "o": (h.dim, q),
        "gate": (h.hidden, h.dim),
        "up": (h.hidden, h.dim),
        "down": (h.dim, h.hidden),
    }
    for i in range(h.n_layers):
        for part, name in _layer_names(i).items():
            t = tensors.get(name)
            if t is None:
                raise UnsupportedModelError(f"{path.name}: missing tensor {name} (biases or another layout?)")
            if part in want and (t.N, t.K) != want[part]:
                raise UnsupportedModelError(f"{path.name}: {name} has shape {(t.N, t.K)}, expected {want[part]}")
    for name in tensors:
        if name.endswith(".bias"):
            raise UnsupportedModelError(f"{path.name}: biases ({name}) are not supported by the CPU kernel")
    if h.head_dim % 2 or h.n_heads % h.n_kv:
        raise UnsupportedModelError(f"{path.name}: unsupported head layout")


# ---------------------------------------------------------------------------------------------
# The pack file: the GGUF's tensors in the kernel's layout, written once, then mapped


def pack_path(gguf: Path, cache_dir: str | os.PathLike | None) -> Path:
    st = gguf.stat()
    base = Path(cache_dir) if cache_dir else Path(_default_cache())
    return base / "packed" / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}-v{PACK_VERSION}.pack"


def _default_cache() -> str:
    from ..config import default_cache_dir

    return str(default_cache_dir())


def write_pack(reader, info: GGUFInfo, target: Path, progress: Callable[[float], None] | None = None) -> None:
    """Write every tensor in the kernel's layout to ``target`` (+ ``.json`` index), atomically."""
    offset = 0
    for t in info.tensors.values():
        t.offset = offset
        offset += -(-t.nbytes // _ALIGN) * _ALIGN
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(max(offset, 1),))
        by_name = {t.name: t for t in reader.tensors}
        for i, t in enumerate(info.tensors.values()):
            rows = np.asarray(by_name[t.name].data).reshape(t.N, -1)
            layout.interleave(rows, t.kind, t.K, out=out[t.offset : t.offset + t.nbytes])
            if progress:
                progress((i + 1) / len(info.tensors))
        out.flush()
        del out
        index = {
            "version": PACK_VERSION,
            "hyper": info.hyper.__dict__,
            "tensors": {n: [t.kind, t.N, t.K, t.offset] for n, t in info.tensors.items()},
        }
        Path(tmp + ".json").write_text(json.dumps(index))
        os.replace(tmp + ".json", str(target) + ".json")
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp + ".json"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def read_pack_index(target: Path, gguf: Path) -> GGUFInfo | None:
    try:
        index = json.loads(Path(str(target) + ".json").read_text())
        if index.get("version") != PACK_VERSION or not target.is_file():
            return None
        tensors = {n: TensorInfo(n, k, N, K, off) for n, (k, N, K, off) in index["tensors"].items()}
        return GGUFInfo(gguf, Hyper(**index["hyper"]), tensors)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def open_pack(gguf: Path, cache_dir=None, progress=None) -> tuple[GGUFInfo, Path]:
    """The pack of ``gguf`` (written on first use) and its index."""
    target = pack_path(gguf, cache_dir)
    info = read_pack_index(target, gguf)
    if info is not None:
        return info, target
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    info = read_info(reader, gguf)
    write_pack(reader, info, target, progress)
    del reader
    return info, target


# ---------------------------------------------------------------------------------------------
# ctypes mirrors of llama.c's structs (sizes checked against the C side at load)


class _Layer(ctypes.Structure):
    _fields_ = [
        ("attn_norm", ctypes.c_void_p),
        ("ffn_norm", ctypes.c_void_p),
        *[(n, layout.Wt) for n in ("q", "k", "v", "o", "gate", "up", "down")],
    ]


class _Model(ctypes.Structure):
    _fields_ = [
        *[
            (n, ctypes.c_int32)
            for n in ("n_layers", "dim", "hidden", "n_heads", "n_kv", "head_dim", "vocab", "n_threads")
        ],
        ("eps", ctypes.c_float),
        ("attn_scale", ctypes.c_float),
        ("rope_pairs", ctypes.c_int32),
        ("max_pos", ctypes.c_int32),
        ("act_q8", ctypes.c_int32),
        ("pad", ctypes.c_int32),
        ("embed", layout.Wt),
        ("lm_head", layout.Wt),
        ("out_norm", ctypes.c_void_p),
        ("cos_t", ctypes.c_void_p),
        ("sin_t", ctypes.c_void_p),
        ("layers", ctypes.POINTER(_Layer)),
    ]


class _KV(ctypes.Structure):
    _fields_ = [("k", ctypes.c_void_p), ("v", ctypes.c_void_p), ("cap", ctypes.c_int32), ("half", ctypes.c_int32)]


def _bind(lib) -> None:
    for name, struct in (
        ("jcl_model_size", _Model),
        ("jcl_layer_size", _Layer),
        ("jcl_kv_size", _KV),
        ("jcl_wt_size", layout.Wt),
    ):
        size = getattr(lib, name)()
        if size != ctypes.sizeof(struct):
            raise kernels.KernelUnavailable(f"kernel struct mismatch: {name} {size} != {ctypes.sizeof(struct)}")
    lib.jcl_forward.restype = ctypes.c_int
    lib.jcl_forward.argtypes = [
        ctypes.POINTER(_Model),
        ctypes.POINTER(_KV),
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    lib.jcl_dequant_rows.restype = None
    lib.jcl_dequant_rows.argtypes = [
        ctypes.POINTER(layout.Wt),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    lib.jcl_dequant_row.restype = None
    lib.jcl_dequant_row.argtypes = [ctypes.POINTER(layout.Wt), ctypes.c_int, ctypes.c_void_p]
    lib.jcl_matvec.restype = None
    lib.jcl_matvec.argtypes = [ctypes.POINTER(layout.Wt), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.jcl_round_rows.restype = None
    lib.jcl_round_rows.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def free_cores(cores: int) -> int:
    """Cores not taken by other runnable threads right now (at least 1).

    A kernel thread that shares a core with another busy process makes every other thread wait
    for it at each step; running one thread fewer is then faster (see the benchmark's "+ busy"
    rows). /proc/loadavg's fourth field counts the runnable threads, this one included."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cores
    return max(1, min(cores, cores - (running - 1)))


def rope_tables(head_dim: int, theta: float, max_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [max_pos, head_dim/2], computed in fp32 exactly as transformers' Llama does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.arange(max_pos).float()[:, None] * inv_freq[None, :]
    return freqs.cos().contiguous(), freqs.sin().contiguous()


# ---------------------------------------------------------------------------------------------
# The model


class NativeModel:
    """A memory-mapped GGUF Llama model and the kernel that runs it."""

    def __init__(
        self,
        info: GGUFInfo,
        pack: Path,
        *,
        n_threads: int | None = None,
        variant: str | None = None,
        cache_dir=None,
        max_positions: int | None = None,
        activations: str = "int8",
        kv_cache: str = "fp16",
    ) -> None:
        if activations not in ("int8", "fp32"):
            raise ValueError(f"activations must be 'int8' or 'fp32', not {activations!r}")
        if kv_cache not in ("fp16", "fp32"):
            raise ValueError(f"kv_cache must be 'fp16' or 'fp32', not {kv_cache!r}")
        self.info, self.hyper, self.pack_file = info, info.hyper, pack
        #: round activations to int8 before quantized weights (quants.h), as llama.cpp does
        self.act_q8 = activations == "int8"
        #: keys and values stored as fp16 (half the memory of fp32), as llama.cpp's default cache
        self.kv_half = kv_cache == "fp16"
        self.variant = variant or kernels.best_variant()
        self.lib = kernels.load_library(self.variant, cache_dir)
        _bind(self.lib)
        #: None: every free core, decided per request (free_cores); else a fixed count
        self.fixed_threads = int(n_threads) if n_threads else None
        self.n_threads = self.fixed_threads or default_threads()
        self.max_positions = int(max_positions or self.hyper.context_length)
        self.file_bytes = info.path.stat().st_size if info.path.exists() else pack.stat().st_size
        self._map = np.memmap(pack, dtype=np.uint8, mode="r")
        self._keep: list = []
        self._vectors: dict[int, torch.Tensor] = {}
        self.struct = self._build_struct()
        self._ref = ctypes.byref(self.struct)
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        n_threads: int | None = None,
        variant: str | None = None,
        cache_dir=None,
        progress=None,
        max_positions: int | None = None,
        activations: str = "int8",
        kv_cache: str = "fp16",
    ) -> "NativeModel":
        gguf = Path(path).expanduser().resolve()
        if not gguf.is_file():
            raise FileNotFoundError(f"no GGUF file at {gguf}")
        info, pack = open_pack(gguf, cache_dir, progress)
        return cls(
            info,
            pack,
            n_threads=n_threads,
            variant=variant,
            cache_dir=cache_dir,
            max_positions=max_positions,
            activations=activations,
            kv_cache=kv_cache,
        )

    def _wt(self, name: str) -> layout.Wt:
        t = self.info.tensors[name]
        return layout.Wt(
            data=self._map.ctypes.data + t.offset,
            type=t.kind,
            N=t.N,
            K=t.K,
            pad=0,
            row_bytes=layout.row_bytes(t.kind, t.K),
        )

    def _f32(self, name: str) -> int:
        t = self.info.tensors[name]
        if t.kind != layout.F32:
            vec = torch.empty(t.N * t.K)
            self.lib.jcl_dequant_row(ctypes.byref(self._wt(name)), 0, ctypes.c_void_p(vec.data_ptr()))
            self._keep.append(vec)
            return vec.data_ptr()
        return self._map.ctypes.data + t.offset

    def _build_struct(self) -> _Model:
        h = self.hyper
        self.layers = (_Layer * h.n_layers)()
        for i in range(h.n_layers):
            names = _layer_names(i)
            L = self.layers[i]
            L.attn_norm, L.ffn_norm = self._f32(names["attn_norm"]), self._f32(names["ffn_norm"])
            for part in ("q", "k", "v", "o", "gate", "up", "down"):
                setattr(L, part, self._wt(names[part]))
        self.cos, self.sin = rope_tables(h.head_dim, h.rope_theta, self.max_positions)
        head = "output.weight" if "output.weight" in self.info.tensors else "token_embd.weight"
        return _Model(
            n_layers=h.n_layers,
            dim=h.dim,
            hidden=h.hidden,
            n_heads=h.n_heads,
            n_kv=h.n_kv,
            head_dim=h.head_dim,
            vocab=h.vocab,
            n_threads=self.n_threads,
            eps=h.eps,
            attn_scale=float(h.head_dim**-0.5),
            rope_pairs=1,
            max_pos=self.max_positions,
            act_q8=int(self.act_q8),
            embed=self._wt("token_embd.weight"),
            lm_head=self._wt(head),
            out_norm=self._f32("output_norm.weight"),
            cos_t=self.cos.data_ptr(),
            sin_t=self.sin.data_ptr(),
            layers=self.layers,
        )

    @property
    def weight_summary(self) -> str:
        """The main weight types, e.g. 'Q4_K/Q6_K'."""
        kinds: dict[str, int] = {}
        for t in self.info.tensors.values():
            if t.N > 1:
                kinds[layout.NAMES[t.kind]] = kinds.get(layout.NAMES[t.kind], 0) + t.N * t.K
        main = sorted(kinds, key=lambda k: -kinds[k])[:2]
        return "/".join(main)

    def vector(self, ptr: int, n: int) -> torch.Tensor:
        """A float32 vector the struct points at (norm weights), as a tensor sharing its memory."""
        cached = self._vectors.get(ptr)
        if cached is None:
            buf = (ctypes.c_float * n).from_address(ptr)
            cached = self._vectors[ptr] = torch.frombuffer(buf, dtype=torch.float32)
        return cached

    def set_threads(self, n: int) -> None:
        self.n_threads = self.struct.n_threads = max(1, int(n))

    def pick_threads(self) -> int:
        """Threads for the next request: the fixed count, or the cores free right now."""
        if self.fixed_threads is None:
            self.set_threads(free_cores(default_threads()))
        return self.n_threads

    @property
    def description(self) -> str:
        kinds: dict[str, int] = {}
        for t in self.info.tensors.values():
            if t.N > 1:
                kinds[layout.NAMES[t.kind]] = kinds.get(layout.NAMES[t.kind], 0) + 1
        mix = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda item: -item[1]))
        return f"C kernel ({self.variant}, {self.n_threads} thread(s)): {mix}"

    @property
    def kv_bytes_per_token(self) -> int:
        return self.hyper.kv_bytes_per_token(2 if self.kv_half else 4)

    def new_cache(self) -> "KVCache":
        return KVCache(self.hyper, half=self.kv_half)

    def decoder(
        self, cache: "KVCache", *, chunk: int = PREFILL_CHUNK_TOKENS, should_stop: Callable[[], bool] | None = None
    ) -> "KernelDecoder":
        return KernelDecoder(self, cache, chunk=chunk, should_stop=should_stop)

    def forward(
        self,
        cache: "KVCache",
        tokens: Sequence[int],
        logits: torch.Tensor | None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``tokens`` at the cache's next positions: a short run in one kernel call, a long
        prompt chunk through BLAS matmuls on dequantized weight blocks (:class:`ChunkForward`)."""
        n = len(tokens)
        pos = cache.length
        if pos + n > self.max_positions:
            raise ValueError(f"the prompt and answer need {pos + n} positions; this model has {self.max_positions}")
        cache.reserve(pos + n)
        if n >= BLAS_MIN_TOKENS:
            with self._lock:
                ChunkForward(self, cache, should_stop).run(list(tokens), logits)
            cache.length = pos + n
            return
        ids = (ctypes.c_int * n)(*tokens)
        out = ctypes.c_void_p(logits.data_ptr()) if logits is not None else None
        with self._lock:
            rc = self.lib.jcl_forward(self._ref, ctypes.byref(cache.struct), ids, n, pos, out)
        if rc != 0:
            raise RuntimeError("the CPU kernel refused the request" if rc == -1 else "the CPU kernel ran out of memory")
        cache.length = pos + n

    def close(self) -> None:
        self._map = None
        self._keep.clear()


# ---------------------------------------------------------------------------------------------
# Long prompt chunks: the same forward, its matmuls done by BLAS

#: Prompt chunks of at least this many tokens go through BLAS (torch.mm); shorter ones, and every
#: decode step, through the kernel's own batched forward, which needs no dequantized copy.
BLAS_MIN_TOKENS = 32
#: Floats of one dequantized weight block handed to BLAS (bounded memory, cache friendly).
_BLOCK_FLOATS = 2 << 20
#: ... shared by the workers, each block at least this size (BLAS is slow on thin matrices).
_WORKER_FLOATS_MIN = 1 << 18


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_trim()


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS. A chunk's temporaries (megabytes each) are
    freed into glibc's heap, which keeps them resident after the prompt: memory that a
    kernel-served model would otherwise hold for good (the resident-memory test)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def share_out(items: Sequence, work: Callable[[Any, Any], None], buffers: Sequence) -> None:
    """``work(item, buffers[w])`` for every item, on one thread per buffer (the caller's is the
    first): each item goes to whichever thread is free next, so a thread whose core another
    process takes does less. The first error is raised once every thread has stopped."""
    pending = iter(items)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(buf) -> None:
        with torch.inference_mode():  # thread-local: the chunk's tensors are inference tensors
            while not errors:
                with lock:
                    item = next(pending, _DONE)
                if item is _DONE:
                    return
                try:
                    work(item, buf)
                except BaseException as exc:  # noqa: BLE001 - re-raised below, Ctrl-C included
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,), daemon=True) for b in buffers[1:]]
    for t in threads:
        t.start()
    worker(buffers[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


_DONE = object()


class ChunkForward:
    """One prompt chunk: the kernel's forward pass in torch ops, each weight matrix dequantized
    by the kernel in row blocks and multiplied by BLAS (each block decoded once per chunk)."""

    def __init__(self, model: "NativeModel", cache: "KVCache", should_stop: Callable[[], bool] | None = None) -> None:
        self.m, self.cache, self.h = model, cache, model.hyper
        # Checked between layers: a long chunk of a 7B model runs far longer than a cancel may wait.
        self.should_stop = should_stop or (lambda: False)
        self.lib = model.lib
        self.threads = model.n_threads
        # One block buffer per worker for the whole chunk: allocating a block per matmul raised
        # glibc's mmap threshold, after which the freed blocks stayed in the heap for good.
        self.per_worker = max(_BLOCK_FLOATS // self.threads, _WORKER_FLOATS_MIN)
        self.blocks = [torch.empty(self.per_worker) for _ in range(self.threads)]

    def matmul(self, x: torch.Tensor, wt: layout.Wt) -> torch.Tensor:
        """x [n, K] @ W.T → [n, N]. A large matrix goes in blocks of rows, each dequantized and
        multiplied by one worker (single-threaded BLAS) as it comes free (:func:`share_out`): with
        BLAS's own threads, each matmul waited for the slowest, and beside a busy process one of
        them always was. A small one (a small model's) is one block on BLAS's threads, as blocks
        that small cost more in calls than they save."""
        x = self.rounded(x, wt)
        N, K = wt.N, wt.K
        out = torch.empty(x.shape[0], N)
        rows = max(4, self.per_worker // K // 4 * 4)
        ref = ctypes.byref(wt)
        if N * K <= self.per_worker:
            w = self.blocks[0][: N * K].view(N, K)
            self.lib.jcl_dequant_rows(ref, 0, N, w.data_ptr(), self.threads)
            return torch.mm(x, w.T, out=out)

        def block(r0: int, buf: torch.Tensor) -> None:
            r1 = min(N, r0 + rows)
            w = buf[: (r1 - r0) * K].view(r1 - r0, K) if (r1 - r0) * K <= buf.numel() else torch.empty(r1 - r0, K)
            self.lib.jcl_dequant_rows(ref, r0, r1, w.data_ptr(), 1)
            out[:, r0:r1] = torch.mm(x, w.T)

        torch.set_num_threads(1)  # each worker's BLAS on its own thread
        try:
            share_out(range(0, N, rows), block, self.blocks)
        finally:
            torch.set_num_threads(self.threads)
        return out

    def rounded(self, x: torch.Tensor, wt: layout.Wt) -> torch.Tensor:
        """x as the kernel multiplies ``wt`` by it: rounded to int8 blocks (x~, quants.h) when the
        model rounds activations and the weight is quantized, else x itself."""
        if not (self.m.act_q8 and layout.is_quantized(wt.type)):
            return x
        x = x.contiguous().clone()
        self.lib.jcl_round_rows(x.data_ptr(), x.shape[0], x.shape[1])
        return x

    def rms(self, x: torch.Tensor, weight_ptr: int) -> torch.Tensor:
        w = self.m.vector(weight_ptr, x.shape[-1])
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.h.eps))

    def rope(self, x: torch.Tensor, pos0: int) -> torch.Tensor:  # x: [n, heads, hd], pairs order
        n = x.shape[0]
        c = self.m.cos[pos0 : pos0 + n, None, :]
        s = self.m.sin[pos0 : pos0 + n, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = b * c + a * s
        return out

    def attention(self, l: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos0: int) -> torch.Tensor:
        n, h = q.shape[0], self.h
        end = pos0 + n
        self.cache.k[l, :, pos0:end] = k.transpose(0, 1)
        self.cache.v[l, :, pos0:end] = v.transpose(0, 1)
        keys, values = self.cache.k[l, :, :end].float(), self.cache.v[l, :, :end].float()  # [n_kv, T, hd]
        group = h.n_heads // h.n_kv
        qh = q.transpose(0, 1).reshape(h.n_kv, group * n, h.head_dim)  # heads of a KV head together
        scores = torch.bmm(qh, keys.transpose(1, 2)) * (h.head_dim**-0.5)  # [n_kv, group*n, T]
        visible = torch.arange(end)[None, :] <= (pos0 + torch.arange(n))[:, None]  # [n, T]
        scores = scores.view(h.n_kv, group, n, end).masked_fill(~visible, float("-inf"))
        probs = scores.softmax(-1).view(h.n_kv, group * n, end)
        out = torch.bmm(probs, values).view(h.n_heads, n, h.head_dim)
        return out.transpose(0, 1).reshape(n, h.n_heads * h.head_dim)

    def layer(self, l: int, x: torch.Tensor, pos0: int) -> torch.Tensor:
        L, h, n = self.m.layers[l], self.h, x.shape[0]
        xn = self.rms(x, L.attn_norm)
        q = self.rope(self.matmul(xn, L.q).view(n, h.n_heads, h.head_dim), pos0)
        k = self.rope(self.matmul(xn, L.k).view(n, h.n_kv, h.head_dim), pos0)
        v = self.matmul(xn, L.v).view(n, h.n_kv, h.head_dim)
        x = x + self.matmul(self.attention(l, q, k, v, pos0), L.o)
        xn = self.rms(x, L.ffn_norm)
        gate = torch.nn.functional.silu(self.matmul(xn, L.gate))
        return x + self.matmul(gate * self.matmul(xn, L.up), L.down)

    def run(self, tokens: list[int], logits: torch.Tensor | None) -> None:
        # BLAS uses as many threads as the kernel would (the configured or free cores).
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self._run(tokens, logits)
        finally:
            torch.set_num_threads(previous)
            release_free_heap()

    @torch.inference_mode()
    def _run(self, tokens: list[int], logits: torch.Tensor | None) -> None:
        pos0 = self.cache.length
        x = torch.empty(len(tokens), self.h.dim)
        embed = ctypes.byref(self.m.struct.embed)
        for i, t in enumerate(tokens):
            self.lib.jcl_dequant_row(embed, t, x[i].data_ptr())
        for l in range(self.h.n_layers):
            if l and self.should_stop():
                raise Cancelled  # the cache's length is unchanged: this chunk never happened
            x = self.layer(l, x, pos0)
        if logits is not None:
            last = self.rms(x[-1:], self.m.struct.out_norm)[0].contiguous()
            self.lib.jcl_matvec(
                ctypes.byref(self.m.struct.lm_head),
                last.data_ptr(),
                logits.data_ptr(),
                self.threads,
                int(self.m.act_q8),
            )


# ---------------------------------------------------------------------------------------------
# KV cache and decoder


class KVCache:
    """Keys and values of one sequence, [n_layers, n_kv, capacity, head_dim], growing: fp16
    (``half``, rounded to nearest even as the kernel stores them) or fp32."""

    def __init__(self, hyper: Hyper, capacity: int = 0, *, half: bool = True) -> None:
        self.hyper = hyper
        self.length = 0
        self.dtype = torch.float16 if half else torch.float32
        self.k: Any = None  # the tensors come from _allocate, just below
        self.v: Any = None
        self.struct = _KV()
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        h = self.hyper
        k = torch.empty(h.n_layers, h.n_kv, capacity, h.head_dim, dtype=self.dtype)
        v = torch.empty_like(k)
        if self.k is not None and self.length:
            k[:, :, : self.length] = self.k[:, :, : self.length]
            v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v
        self.struct.k, self.struct.v, self.struct.cap = k.data_ptr(), v.data_ptr(), capacity
        self.struct.half = int(self.dtype == torch.float16)

    @property
    def capacity(self) -> int:
        return self.struct.cap

    #: Positions added beyond what is needed whenever the cache grows: an inline completion (a
    #: few typed tokens, then up to 64 new ones) then extends the cache it reuses without a
    #: reallocation, which for a 7B model means allocating and copying gigabytes of KV.
    HEADROOM = 128

    def reserve(self, need: int) -> None:
        if need > self.capacity:
            # By half at least: few reallocations over a long answer, without doubling a large
            # cache's memory.
            self._allocate(max(need + self.HEADROOM, self.capacity + self.capacity // 2))
            release_free_heap()  # a small cache's old buffers lived in the heap (the RSS test)

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` positions; a negative value drops that many (as
        transformers' DynamicCache.crop)."""
        keep = self.length + max_length if max_length < 0 else min(max_length, self.length)
        self.length = max(0, keep)

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()

    def __deepcopy__(self, memo) -> "KVCache":
        copy = KVCache(self.hyper, self.length + self.HEADROOM, half=self.dtype == torch.float16)  # about to grow
        copy.length = self.length
        copy.k[:, :, : self.length] = self.k[:, :, : self.length]
        copy.v[:, :, : self.length] = self.v[:, :, : self.length]
        return copy


class KernelDecoder:
    """One request on a NativeModel: prefill in chunks, then one token at a time."""

    def __init__(
        self,
        model: NativeModel,
        cache: KVCache,
        *,
        chunk: int = PREFILL_CHUNK_TOKENS,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.model, self.cache = model, cache
        self.chunk = max(1, int(chunk))
        self.should_stop = should_stop or (lambda: False)
        self.logits = torch.empty(model.hyper.vocab)
        model.pick_threads()

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Run the prompt's tokens; the last one's logits [V] (a buffer reused by step)."""
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("prefill needs at least one token")
        self.cache.reserve(self.cache.length + len(ids) + 1)
        for start in range(0, len(ids), self.chunk):
            if start and self.should_stop():
                raise Cancelled
            piece = ids[start : start + self.chunk]
            last = start + len(piece) == len(ids)
            self.model.forward(self.cache, piece, self.logits if last else None, self.should_stop)
        return self.logits

    def step(self, token: int) -> torch.Tensor:
        self.model.forward(self.cache, [int(token)], self.logits)
        return self.logits

    def close(self) -> None:
        pass
