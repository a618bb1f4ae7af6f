"""A Code Llama-shaped model with random weights, saved as a local folder.

Model hubs are out of reach in tests and CI, so the real Code Llama path (a Llama model with the
32016-token vocabulary and FIM tokens, loaded from a folder through the normal loading code)
is exercised with random weights: the text is noise, the shapes, tokenizer and timings are real.
"""

from __future__ import annotations

from pathlib import Path

from ..models import resolve_model
from .codellama_tokenizer import save_codellama_tokenizer


def codellama_config(size: str = "7b", *, num_layers: int | None = None, scale: int = 1):
    """A ``LlamaConfig`` of a catalogue size; ``scale`` divides widths for fast unit tests."""
    from transformers import LlamaConfig

    shape = resolve_model(size).shape
    assert shape is not None, f"{size} has no shape in the catalogue"
    heads = max(1, shape.num_heads // scale)
    kv_heads = max(1, shape.num_kv_heads // scale)
    return LlamaConfig(
        hidden_size=shape.hidden_size // scale,
        num_hidden_layers=num_layers or shape.num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=shape.intermediate_size // scale,
        vocab_size=32016,
        rope_theta=1e6,
        max_position_embeddings=16384,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_codellama_shaped_model(
    dest: str | Path,
    *,
    size: str = "7b",
    num_layers: int | None = 2,
    scale: int = 16,
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """Save a random-weight model plus the real Code Llama tokenizer into ``dest``.

    Returns ``dest``. Skips the work if a previous call left a complete folder there.
    """
    import torch
    from transformers import LlamaForCausalLM

    dest = Path(dest)
    marker = dest / ".complete"
    if marker.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = codellama_config(size, num_layers=num_layers, scale=scale)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = 2
    model.save_pretrained(dest)
    save_codellama_tokenizer(dest)
    marker.write_text(f"random CodeLlama-{size} shape, layers={num_layers}, scale={scale}, seed={seed}\n")
    return dest
