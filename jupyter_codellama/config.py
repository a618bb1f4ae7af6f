"""User configuration: one traitlets ``Configurable`` named ``CodeLlama``.

``%config CodeLlama.max_new_tokens = 512`` and ``c.CodeLlama.model = "13b-instruct"`` in
``ipython_config.py`` both land here. Environment variables (``JUPYTER_CODELLAMA_MODEL`` …)
provide defaults, so a JupyterLab started with them set needs no notebook code at all.
"""

from __future__ import annotations

import os

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, Unicode, default
from traitlets.config import Configurable


def _env(name: str, fallback: str = "") -> str:
    return os.environ.get(f"JUPYTER_CODELLAMA_{name}", fallback)


#: Prompt tokens per prefill step by default (also the default of decoders built outside a request).
PREFILL_CHUNK_TOKENS = 256


class CodeLlama(Configurable):
    """Settings of the in-kernel Code Llama assistant."""

    model = Unicode(
        help="Model to load: a catalogue name ('7b-instruct', 'embedded'…), a hub id or a folder. "
        "Empty: 7b-instruct on a CUDA GPU, the embedded SmolLM2 model otherwise.",
    ).tag(config=True)

    quantization = CaselessStrEnum(
        ["auto", "4bit", "8bit", "none", "nf4", "int8"],
        help="On a GPU: '4bit' (bitsandbytes NF4, double quantisation, also 'nf4'), '8bit' "
        "(also 'int8'), 'none'; 'auto' is 4bit. On a CPU: 'auto'/'4bit' run the C kernel on 4-bit "
        "weights (a GGUF's own, or Q4_0 made once from a checkpoint), '8bit' on Q8_0, 'none' "
        "transformers in fp32/bf16; 'nf4'/'int8' force bitsandbytes (slow on a CPU).",
    ).tag(config=True)

    dtype = CaselessStrEnum(
        ["auto", "float32", "bfloat16", "float16"],
        help="Compute dtype; 'auto' picks bf16 on GPUs that support it (else fp16), and on a CPU "
        "fp32 for small models, bf16 for large ones where the CPU has bf16 instructions.",
    ).tag(config=True)

    device = Unicode(
        help="'auto' (default: CUDA if present, else CPU), 'cpu', 'cuda' or 'cuda:N'.",
    ).tag(config=True)

    gpu_memory = Unicode(
        help="Most GPU memory the weights may use, e.g. '6GiB'; the rest is offloaded to the CPU.",
    ).tag(config=True)

    cpu_memory = Unicode(
        help="Most CPU memory offloaded weights may use, e.g. '24GiB'; the rest goes to disk.",
    ).tag(config=True)

    max_memory = Dict(
        help="Full accelerate max_memory mapping ({0: '6GiB', 'cpu': '24GiB'}); overrides gpu_memory/cpu_memory.",
    ).tag(config=True)

    offload_folder = Unicode(
        help="Folder for weights offloaded to disk (default: inside the cache directory).",
    ).tag(config=True)

    cache_dir = Unicode(
        help="Where jupyter-codellama keeps converted models and offload files.",
    ).tag(config=True)

    max_new_tokens = Int(512, help="Longest answer, in tokens.").tag(config=True)
    temperature = Float(0.2, help="Sampling temperature; 0 is greedy.").tag(config=True)
    top_p = Float(0.95, help="Nucleus sampling threshold (used when temperature > 0).").tag(config=True)
    max_time = Float(120.0, help="Seconds a chat or magic answer may take.").tag(config=True)
    prefill_chunk_tokens = Int(
        PREFILL_CHUNK_TOKENS, help="Prompt tokens processed per step; cancel checks happen between chunks."
    ).tag(config=True)
    prefix_cache_mb = Int(
        512, help="Memory for KV caches of recent prompts, reused when a prompt shares a prefix."
    ).tag(config=True)
    local_files_only = Bool(False, help="Never contact the model hub (as HF_HUB_OFFLINE=1).").tag(config=True)
    cpu_backend = CaselessStrEnum(
        ["auto", "kernel", "torch"],
        help="On a CPU: 'kernel' runs Llama models (GGUF files, the embedded model, Code Llama "
        "checkpoints quantized once to a cached GGUF) in the compiled C kernel on 4-bit/8-bit "
        "weights mapped from the file; 'torch' uses transformers; 'auto' is the kernel for those "
        "models with quantization 'auto', '4bit' or '8bit'.",
    ).tag(config=True)
    cpu_threads = Int(0, help="Threads of the CPU kernel; 0 uses every core this process may run on.").tag(config=True)
    cpu_activations = CaselessStrEnum(
        ["int8", "fp32"],
        "int8",
        help="How the CPU kernel multiplies 4-bit/8-bit weights: 'int8' rounds each activation "
        "vector to int8 in blocks of 32 first, as llama.cpp does (faster); 'fp32' keeps it exact "
        "(results within float rounding of a float64 forward pass, slower).",
    ).tag(config=True)
    cpu_kv_cache = CaselessStrEnum(
        ["fp16", "fp32"],
        "fp16",
        help="How the CPU kernel stores the attention keys and values: 'fp16' (half the memory and "
        "faster on long contexts, as llama.cpp's default) or 'fp32' (exact).",
    ).tag(config=True)

    endpoint = Unicode(
        help="An OpenAI-compatible server (vLLM, TGI, llama-server, transformers serve) to generate "
        "on, e.g. 'http://gpu-host:8000/v1'; `model` is then the name it serves. Empty: in the kernel.",
    ).tag(config=True)
    api_key_env = Unicode(
        "JUPYTER_CODELLAMA_API_KEY",
        help="Environment variable that holds the server's API key (sent as a Bearer token).",
    ).tag(config=True)
    api_key_file = Unicode(
        help="File that holds the server's API key; takes precedence over api_key_env.",
    ).tag(config=True)
    endpoint_tokenizer = Unicode(
        help="Folder or hub id of the served model's tokenizer (our prompts are built with it); "
        "empty: the served model's name.",
    ).tag(config=True)
    endpoint_ca_file = Unicode(
        help="CA bundle that signed the server's TLS certificate; empty: the system's CAs.",
    ).tag(config=True)
    endpoint_connect_timeout = Float(5.0, help="Seconds to connect to the server.").tag(config=True)
    endpoint_read_timeout = Float(
        60.0, help="Longest silence from the server, in seconds, before a request fails."
    ).tag(config=True)

    @default("endpoint")
    def _endpoint_default(self) -> str:
        return _env("ENDPOINT")

    @default("model")
    def _model_default(self) -> str:
        return _env("MODEL")

    @default("quantization")
    def _quantization_default(self) -> str:
        return _env("QUANTIZATION", "auto").lower()

    @default("dtype")
    def _dtype_default(self) -> str:
        return _env("DTYPE", "auto").lower()

    @default("device")
    def _device_default(self) -> str:
        return _env("DEVICE", "auto")

    @default("gpu_memory")
    def _gpu_memory_default(self) -> str:
        return _env("GPU_MEMORY")

    @default("cpu_memory")
    def _cpu_memory_default(self) -> str:
        return _env("CPU_MEMORY")

    @default("cpu_backend")
    def _cpu_backend_default(self) -> str:
        return _env("CPU_BACKEND", "auto").lower()

    @default("cache_dir")
    def _cache_dir_default(self) -> str:
        return str(default_cache_dir())


def default_cache_dir() -> "os.PathLike[str]":
    """``$JUPYTER_CODELLAMA_CACHE``, else ``$XDG_CACHE_HOME/jupyter_codellama``, else ``~/.cache/…``."""
    from pathlib import Path

    explicit = os.environ.get("JUPYTER_CODELLAMA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "jupyter_codellama"


_active: CodeLlama | None = None


def get_config() -> CodeLlama:
    """The settings in force: the shell's (once the extension is loaded) or a default instance."""
    global _active
    if _active is None:
        _active = CodeLlama()
    return _active


def set_config(config: CodeLlama) -> None:
    global _active
    _active = config
