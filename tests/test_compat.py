"""Compatibility: the PyTorch decode path uses only transformers APIs that are not on their way
out, and the versions it was written for are declared."""

import warnings
from pathlib import Path

import pytest
import tomllib
import torch
import transformers
from packaging.requirements import Requirement

from jupyter_codellama.engine.generation import GenerationRequest, PrefixCache, generate_stream

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture(scope="module")
def tiny_model(embedded_tokenizer):
    """A two-layer Llama with random weights on the embedded model's vocabulary."""
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(embedded_tokenizer),
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_the_torch_decode_path_raises_no_deprecation_warning(tiny_model, embedded_tokenizer):
    """transformers 5.24 deprecates ``past_key_values`` as a forward argument (gone in 5.40):
    a pip install of that version would break every PyTorch-path generation."""
    ids = embedded_tokenizer("def fibonacci(n):\n" * 8)["input_ids"]
    cache = PrefixCache(max_bytes=1 << 26)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for _ in range(2):  # the second run reuses the first one's cached prefix
            request = GenerationRequest(prompt_ids=ids, max_new_tokens=6)
            result = generate_stream(
                tiny_model, embedded_tokenizer, request, eos_token_ids=(), prefix_cache=cache, prefill_chunk=16
            )
            assert result.stop_reason == "length" and len(result.tokens) == 6
    assert result.cached_tokens > 0


def test_the_transformers_versions_we_run_on_are_declared_and_installed():
    requirements = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    spec = next(r.specifier for r in requirements if r.name == "transformers")
    assert any(s.operator == "<" for s in spec), "transformers needs an upper bound"
    assert spec.contains(transformers.__version__), (spec, transformers.__version__)
