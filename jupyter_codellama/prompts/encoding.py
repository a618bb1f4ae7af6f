"""Token ids for prompt pieces, exactly as the model was trained to read them.

Why not just ``tokenizer(text)``:

* Code Llama's layouts (Meta's ``encode`` / ``encode_infilling``) are defined in SentencePiece
  terms: every piece gets an implicit leading "▁" except an infilling suffix. transformers'
  ``CodeLlamaTokenizer`` reaches that state only through its ``<FILL_ME>`` machinery, and a
  copy reloaded from a folder starts without the "▁" normaliser at all. We therefore encode
  with a private copy of the tokenizer's BPE model and apply SentencePiece's rules ourselves.
* Notebook text can contain strings such as ``</s>``, ``<|im_end|>`` or ``<FILL_ME>``; content
  must never turn into control ids (``<FILL_ME>`` is even outside the model's embedding).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["PromptEncoder", "prompt_encoder"]

_SPIECE = "▁"
# Tokenizers whose vocabulary is a Llama-2 style SentencePiece model with a dummy prefix.

_cache: "weakref.WeakKeyDictionary[Any, PromptEncoder]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


class PromptEncoder:
    """Encodes content pieces without special-token parsing; build with :func:`prompt_encoder`."""

    def __init__(self, tokenizer: Any, *, count_cache_bytes: int = 2 << 20) -> None:
        # Weak: the cache maps tokenizer -> encoder, and a strong reference back would keep both
        # alive after the model is unloaded.
        self._tokenizer = weakref.ref(tokenizer)
        self._sp = _sentencepiece_copy(tokenizer)
        self.bos_ids: tuple[int, ...] = _bos_ids(tokenizer)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids: tuple[int, ...] = (eos,) if isinstance(eos, int) else ()
        # Cells rarely change between two keystrokes: their counts are looked up, not re-encoded.
        self._counts = CountCache(count_cache_bytes)

    @property
    def tokenizer(self) -> Any:
        tokenizer = self._tokenizer()
        if tokenizer is None:
            raise ReferenceError("the tokenizer of this PromptEncoder no longer exists")
        return tokenizer

    @property
    def is_sentencepiece(self) -> bool:
        """True for Llama-2 style tokenizers (Code Llama), where ``encode_nospace`` exists."""
        return self._sp is not None

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as content: no BOS/EOS, markers such as ``</s>`` spelled out."""
        if not text:
            return []
        if self._sp is not None:
            return self._sp.encode(_SPIECE + text.replace(" ", _SPIECE), add_special_tokens=False).ids
        return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    def encode_nospace(self, text: str) -> list[int]:
        """Like :meth:`encode` without SentencePiece's implicit leading space (Meta's ``encode_infilling``)."""
        if self._sp is None:
            raise TypeError(f"{type(self.tokenizer).__name__} is not a SentencePiece (Llama-2 style) tokenizer")
        if not text:
            return []
        return self._sp.encode(text.replace(" ", _SPIECE), add_special_tokens=False).ids

    def count(self, text: str) -> int:
        """Number of tokens of ``text`` as content (the allocator's ``count_tokens``)."""
        key = CountCache.key(text)
        count = self._counts.get(key)
        if count is None:
            count = len(self.encode(text))
            self._counts.put(key, count)
        return count

    def token_id(self, token: str) -> int | None:
        """Id of a whole token such as ``"▁<PRE>"``, or None when the vocabulary lacks it."""
        tok = self.tokenizer
        found = tok.convert_tokens_to_ids(token)
        if found is None or (found == tok.unk_token_id and token != tok.unk_token):
            return None
        return int(found)


class CountCache:
    """Token counts by text, bounded by bytes: it keeps a digest of each text, never the text.

    The cell being typed in is a new text on every keystroke; a cache keyed by whole texts grew
    by that cell's size each time, however few entries it allowed.
    """

    #: What one entry costs: a 16-byte digest object, an int, and the ordered dict's own links.
    ENTRY_BYTES = 33 + 28 + 100

    def __init__(self, max_bytes: int) -> None:
        self.max_entries = max(1, max_bytes // self.ENTRY_BYTES)
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> bytes:
        # "surrogatepass": text from JSON may hold lone surrogates, which plain UTF-8 refuses.
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    @property
    def bytes(self) -> int:
        return len(self._counts) * self.ENTRY_BYTES

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, key: builtins.bytes) -> int | None:
        with self._lock:
            count = self._counts.get(key)
            if count is not None:
                self._counts.move_to_end(key)
            return count

    def put(self, key: builtins.bytes, count: int) -> None:
        with self._lock:
            self._counts[key] = count
            while len(self._counts) > self.max_entries:
                self._counts.popitem(last=False)


def prompt_encoder(tokenizer: Any) -> PromptEncoder:
    """The (cached) encoder for ``tokenizer``: copying a 32k-piece BPE model is too slow to do
    on every keystroke."""
    with _cache_lock:
        encoder = _cache.get(tokenizer)
        if encoder is None:
            encoder = _cache[tokenizer] = PromptEncoder(tokenizer)
        return encoder


def _sentencepiece_copy(tokenizer: Any):
    """A private BPE-only copy of a Llama-2 style tokenizer, or None for other tokenizers.

    Normaliser, pre-tokenizer and post-processor are removed (we apply "▁" rules ourselves) and
    added tokens are never matched inside text. The user's tokenizer is left untouched.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    serialized = backend.to_str()
    model = json.loads(serialized).get("model", {})
    # Llama 2's SentencePiece vocabulary as a BPE with byte fallback and "▁" word starts, whatever
    # the class (transformers 5 loads a GGUF's tokenizer as a generic TokenizersBackend).
    if model.get("type") != "BPE" or not model.get("byte_fallback") or "▁" + "the" not in model.get("vocab", {}):
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(serialized)
    copy.normalizer = None
    copy.pre_tokenizer = None
    copy.post_processor = None
    copy.encode_special_tokens = True
    return copy


def _bos_ids(tokenizer: Any) -> tuple[int, ...]:
    """What the tokenizer puts before a sequence on its own (``[1]`` for Llama, nothing for ChatML)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return ()
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    return (bos,) if full[: len(full) - len(plain)] == [bos] else ()
