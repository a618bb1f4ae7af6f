"""Streaming generation: chunked prefill → decode one token at a time, with a KV prefix cache.

The loop is ours rather than ``model.generate`` because everything the product needs sits
between two decode steps: a cancel check, a time limit, stop strings, incremental
detokenisation for streaming, and handing the KV cache back for reuse by the next prompt.

    generate_stream
      ├─ DecodeRun.start          limits, token picker (sampling, token healing), text stream
      ├─ as_backend → decoder     chosen once: TorchDecoder, or the CPU kernel's KernelDecoder
      ├─ open_cache               the KV of the longest cached common prefix (PrefixCache)
      ├─ run_decoder
      │    ├─ decoder.prefill     the rest of the prompt, in chunks (cancellable between chunks)
      │    └─ decode_n_tokens     pick → detokenise → stop rules → decoder.step
      └─ PrefixCache.store        prompt + answer's KV, for the next request to reuse
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence

import torch

StopReason = Literal["eos", "stop", "length", "time", "cancelled", "error"]
TextCallback = Callable[[str], None]


class Cancelled(Exception):
    """Raised inside the loop when the job's cancel event is set (never escapes the module)."""


@dataclass
class GenerationRequest:
    """What to generate. ``prompt_ids`` already contain any BOS / special tokens."""

    prompt_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    max_time: float | None = None
    seed: int | None = None
    use_prefix_cache: bool = True
    #: Text the answer must start with and that is not shown (see ``LeadHealer``).
    lead: str = ""

    def validate(self) -> None:
        if not self.prompt_ids:
            raise ValueError("The prompt is empty: there is nothing to continue.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError(f"max_time must be positive, got {self.max_time}.")


@dataclass
class GenerationResult:
    text: str
    stop_reason: StopReason
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "stop_reason": self.stop_reason,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generated_tokens": len(self.tokens),
            "timings": dict(self.timings),
            **({"error": self.error} if self.error else {}),
        }


# ---------------------------------------------------------------------------------------------
# Text side: incremental detokenisation and stop strings


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas whose concatenation is the decoded text.

    Decoding one token alone is wrong for SentencePiece vocabularies (the leading '▁' becomes a
    space only after another piece) and for byte-fallback pieces (one UTF-8 character spans
    several tokens). So we decode a short window twice — before and after the new token — and
    emit the difference once it no longer ends in a partial character.
    """

    def __init__(self, tokenizer, context_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        # A few prompt tokens as left context so the first generated piece gets its space.
        self._ids: list[int] = list(context_ids[-4:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""


class StopMatcher:
    """Finds stop strings in streamed text and holds back text that might start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self.text = ""
        self._emitted = 0

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add ``delta``; return (text safe to emit now, whether a stop string was found)."""
        search_from = max(0, self._emitted - max((len(s) for s in self._stops), default=0))
        self.text += delta
        cut = min(
            (i for i in (self.text.find(s, search_from) for s in self._stops) if i >= 0),
            default=-1,
        )
        if cut >= 0:
            self.text = self.text[:cut]
            return self._take(len(self.text)), True
        return self._take(len(self.text) - self._held_back()), False

    def finish(self) -> str:
        return self._take(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _take(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        out = self.text[self._emitted : upto]
        self._emitted = upto
        return out


def token_texts(tokenizer) -> list[str]:
    """Each token id's text as it reads after other text (cached on the tokenizer: decoding the
    whole vocabulary is too slow to repeat per request)."""
    cached = getattr(tokenizer, "_jupyter_codellama_token_texts", None)
    if cached is not None:
        return cached
    anchor = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("a"))[-1]
    base = tokenizer.decode([anchor])
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    decoded = tokenizer.batch_decode([[anchor, i] for i in range(len(tokenizer))])
    texts = [
        "" if i in special else text[len(base) :] if text.startswith(base) else "" for i, text in enumerate(decoded)
    ]
    try:
        tokenizer._jupyter_codellama_token_texts = texts
    except AttributeError:  # pragma: no cover - a tokenizer that refuses attributes
        pass
    return texts


def _tokenizer_cache(tokenizer, name: str) -> dict:
    """A dict kept on the tokenizer (a fresh one where it refuses attributes)."""
    cache = getattr(tokenizer, name, None)
    if cache is None:
        cache = {}
        try:
            setattr(tokenizer, name, cache)
        except AttributeError:  # pragma: no cover
            pass
    return cache


class LeadHealer:
    """Token healing: the prompt ended before ``lead`` (trailing whitespace); steer the first
    tokens so the answer starts with it, then show only what comes after it."""

    def __init__(self, tokenizer, lead: str, allowed_ids: Sequence[int] = ()) -> None:
        self._texts = token_texts(tokenizer) if lead else []
        self._left = lead  # still to generate
        self._hide = lead  # still to hide from the shown text
        self._extra = tuple(allowed_ids)
        # Allowed ids per remaining lead, shared by every request on this tokenizer: a scan of
        # the vocabulary per keystroke would add to every inline completion typed after a space.
        self._allowed: dict[tuple, torch.Tensor] = _tokenizer_cache(tokenizer, "_jupyter_codellama_lead_ids")

    @property
    def steering(self) -> bool:
        return bool(self._left)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with every token that cannot continue the lead set to -inf."""
        left = self._left
        key = (left, self._extra, str(logits.device))
        allowed = self._allowed.get(key)
        if allowed is None:
            ids = [i for i, t in enumerate(self._texts) if t and (left.startswith(t) or t.startswith(left))]
            allowed = torch.tensor(ids + list(self._extra), dtype=torch.long, device=logits.device)
            if len(self._allowed) > 256:  # leads are short whitespace runs: a handful in practice
                self._allowed.clear()
            self._allowed[key] = allowed
        out = torch.full_like(logits, float("-inf"))
        out[..., allowed] = logits[..., allowed]
        return out

    def advance(self, token: int) -> None:
        text = self._texts[token] if token < len(self._texts) else ""
        self._left = self._left[len(text) :] if self._left.startswith(text) else ""

    def strip(self, text: str) -> str:
        """The part of newly decoded ``text`` past the lead."""
        if not self._hide or not text:
            return text
        n = 0
        limit = min(len(text), len(self._hide))
        while n < limit and text[n] == self._hide[n]:
            n += 1
        if n == len(text):
            self._hide = self._hide[n:]
            return ""
        self._hide = ""
        return text[n:]


# ---------------------------------------------------------------------------------------------
# KV prefix cache


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def cache_seq_length(cache) -> int:
    return int(cache.get_seq_length()) if cache is not None else 0


def cache_nbytes(cache) -> int:
    total = 0
    if hasattr(cache, "nbytes"):
        return int(cache.nbytes)
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                # The whole buffer: a cache may hold views of larger buffers with spare room.
                total += max(t.numel() * t.element_size(), t.untyped_storage().nbytes())
    return total


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Recent prompts' KV caches, bounded by bytes, looked up by longest common token prefix.

    An entry that is wholly a prefix of the new prompt, or all but a short tail of it, is *taken*
    (no copy: the new prompt's cache will extend it and be stored in its place); a partial match
    that leaves much of the entry unused is deep-copied and cropped so the entry stays intact for
    other branches (another chat sharing the system prompt).
    """

    #: Most unmatched tokens of an entry that is taken and cropped rather than copied (it must
    #: also be at most a quarter of the match).
    max_take_tail = 512

    def __init__(self, max_bytes: int, min_reuse: int = 1) -> None:
        self.max_bytes = max_bytes
        self.min_reuse = min_reuse
        self._entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:  # status() asks from other threads while the engine stores entries
            entries = list(self._entries.values())
        return sum(cache_nbytes(c) for c in entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def lookup(self, ids: Sequence[int]):
        """Return ``(cache, n_reused)``; ``cache`` is None when nothing useful is stored."""
        with self._lock:
            best_key, best_len = None, 0
            for key in self._entries:
                n = _common_prefix(key, ids)
                if n > best_len:
                    best_key, best_len = key, n
            # At least one prompt token must be left for the forward pass that yields logits.
            keep = min(best_len, len(ids) - 1)
            if best_key is None or keep < self.min_reuse:
                self.misses += 1
                return None, 0
            self.hits += 1
            tail = len(best_key) - keep
            if tail == 0 or tail <= min(keep // 4, self.max_take_tail):
                # Wholly a prefix, or all but a short tail (the previous suggestion, the cursor's
                # few characters): take it and crop. Copying a long prompt's KV on every
                # keystroke would cost more than the tail is worth: it is rarely asked for again.
                cache = self._entries.pop(best_key)
            else:
                cache = copy.deepcopy(self._entries[best_key])
                self._entries.move_to_end(best_key)
        seq = cache_seq_length(cache)
        if seq > keep:
            cache.crop(-(seq - keep))
        return cache, keep

    def store(self, ids: Sequence[int], cache) -> None:
        key = tuple(ids)
        if cache is None or not key or cache_seq_length(cache) != len(key):
            return
        size = cache_nbytes(cache)
        if size > self.max_bytes:
            return
        with self._lock:
            # Entries the new one extends are now redundant.
            for old in [k for k in self._entries if _common_prefix(k, key) == len(k)]:
                del self._entries[old]
            self._entries[key] = cache
            total = sum(cache_nbytes(c) for c in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                total -= cache_nbytes(evicted)


# ---------------------------------------------------------------------------------------------
# Model side: prefill, one decode step, sampling


def input_device(model) -> torch.device:
    """Where input ids must live (the embedding's device, also for dispatched models)."""
    return model.get_input_embeddings().weight.device


@torch.inference_mode()
def prefill(model, ids: Sequence[int], cache, *, chunk: int, should_stop: Callable[[], bool]):
    """Run ``ids`` through the model into ``cache``; return the last position's logits: [V]."""
    assert ids, "prefill needs at least one token"
    device = input_device(model)
    logits = None
    for start in range(0, len(ids), chunk):
        if start and should_stop():
            raise Cancelled
        piece = torch.tensor([ids[start : start + chunk]], device=device)  # [1, S]
        out = model(input_ids=piece, cache=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1]  # [V]
    return logits


@torch.inference_mode()
def decode_one_token(model, token: int, cache):
    piece = torch.tensor([[token]], device=input_device(model))  # [1, 1]
    out = model(input_ids=piece, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1]  # [V]


class Decoder(Protocol):
    """What the loop drives, for one request: the PyTorch path (:class:`TorchDecoder`) or the CPU
    kernel (``native.KernelDecoder``). Both raise :class:`Cancelled` when ``should_stop`` says
    so between prompt chunks."""

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Run the prompt's ids into the cache; the last id's logits: [V]."""

    def step(self, token: int) -> torch.Tensor:
        """Run one token; its logits: [V]."""

    def close(self) -> None:
        """The request is over (the cache stays valid for the prefix cache)."""


class Backend(Protocol):
    """A loaded model as the loop sees it: empty caches and one decoder per request."""

    def new_cache(self): ...

    def decoder(self, cache, *, chunk: int, should_stop: Callable[[], bool]) -> Decoder: ...


class TorchDecoder:
    """The PyTorch path for one request: a transformers model and its DynamicCache."""

    def __init__(self, model, cache, *, chunk: int, should_stop: Callable[[], bool]) -> None:
        self.model, self.cache, self.chunk, self.should_stop = model, cache, chunk, should_stop

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        return prefill(self.model, ids, self.cache, chunk=self.chunk, should_stop=self.should_stop)

    def step(self, token: int) -> torch.Tensor:
        return decode_one_token(self.model, token, self.cache)

    def close(self) -> None:
        pass


class TorchBackend:
    """A transformers model behind the decoder interface the loop drives."""

    def __init__(self, model) -> None:
        self.model = model

    def new_cache(self):
        return _new_cache(self.model)

    def decoder(self, cache, *, chunk: int, should_stop: Callable[[], bool]) -> TorchDecoder:
        return TorchDecoder(self.model, cache, chunk=chunk, should_stop=should_stop)


def as_backend(model) -> Backend:
    """``model`` itself when it is a backend (e.g. a NativeModel), else the PyTorch backend."""
    return model if hasattr(model, "new_cache") and hasattr(model, "decoder") else TorchBackend(model)


def sample(logits: torch.Tensor, *, temperature: float, top_p: float, generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


# The loop: prefill → decode_n_tokens, over whichever decoder the request was given


class Limits:
    """The request's cancel event and time limit, asked between chunks and between tokens."""

    def __init__(self, cancel: threading.Event | None, max_time: float | None) -> None:
        self.cancel = cancel or threading.Event()
        self.started = time.perf_counter()
        self.deadline = self.started + max_time if max_time else None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def timed_out(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.timed_out()

    def reason(self) -> StopReason | None:
        """Why the loop must stop now, if it must; a cancel wins over the time limit."""
        if self.cancel.is_set():
            return "cancelled"
        return "time" if self.timed_out() else None


class TextStream:
    """Generated tokens → shown text: detokenise, hide the healed lead, cut at a stop string."""

    def __init__(
        self,
        tokenizer,
        prompt_ids: Sequence[int],
        healer: LeadHealer,
        stops: Sequence[str],
        on_text: TextCallback | None,
    ) -> None:
        self._detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        self._healer = healer
        self._stops = StopMatcher(stops)
        self._emit = on_text or (lambda _text: None)
        self.pieces: list[str] = []

    def push(self, token: int) -> bool:
        """Show what ``token`` adds; True when a stop string was found."""
        safe, hit_stop = self._stops.feed(self._healer.strip(self._detok.push(token)))
        self._deliver(safe)
        return hit_stop

    def finish(self) -> bool:
        """Show the text still held back; True when it completed a stop string."""
        tail, hit_stop = self._stops.feed(self._healer.strip(self._detok.flush()))
        self._deliver(tail)
        if not hit_stop:
            self._deliver(self._stops.finish())
        return hit_stop

    def _deliver(self, text: str) -> None:
        if text:
            self.pieces.append(text)
            self._emit(text)


class TokenPicker:
    """Logits [V] → the next token: token healing's mask, then greedy or seeded sampling."""

    def __init__(self, request: GenerationRequest, healer: LeadHealer) -> None:
        self._temperature, self._top_p = request.temperature, request.top_p
        self._healer = healer
        self._generator = None
        if request.temperature > 0:
            self._generator = torch.Generator(device="cpu")
            self._generator.manual_seed(request.seed if request.seed is not None else int(time.time_ns()))

    def __call__(self, logits: torch.Tensor) -> int:
        if self._healer.steering:
            logits = self._healer.mask(logits)
        token = sample(logits, temperature=self._temperature, top_p=self._top_p, generator=self._generator)
        self._healer.advance(token)
        return token


@dataclass
class DecodeRun:
    """One request's state between the loop's steps (the same for every decoder)."""

    request: GenerationRequest
    limits: Limits
    pick: TokenPicker
    text: TextStream
    stop_ids: frozenset[int]
    generated: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        tokenizer,
        request: GenerationRequest,
        *,
        eos_token_ids: Sequence[int],
        cancel: threading.Event | None,
        on_text: TextCallback | None,
    ) -> "DecodeRun":
        stop_ids = frozenset(eos_token_ids) | frozenset(request.stop_token_ids)
        healer = LeadHealer(tokenizer, request.lead, sorted(stop_ids))
        return cls(
            request,
            Limits(cancel, request.max_time),
            TokenPicker(request, healer),
            TextStream(tokenizer, request.prompt_ids, healer, request.stop, on_text),
            stop_ids,
        )

    def take(self, logits: torch.Tensor) -> int:
        token = self.pick(logits)
        self.generated.append(token)
        if len(self.generated) == 1:
            self.timings["first_token_s"] = self.limits.elapsed()
        return token

    def stop_after(self, token: int) -> StopReason | None:
        """Why generation ends after ``token``, or None to go on. Shows the token's text."""
        if token in self.stop_ids:
            return "eos"
        if self.text.push(token):
            return "stop"
        if len(self.generated) >= self.request.max_new_tokens:
            return "length"
        return self.limits.reason()

    def result(self, reason: StopReason, n_cached: int) -> GenerationResult:
        total = self.limits.elapsed()
        self.timings["total_s"] = total
        decode_time = total - self.timings.get("first_token_s", total)
        self.timings["tokens_per_s"] = (len(self.generated) - 1) / decode_time if decode_time > 0 else 0.0
        return GenerationResult(
            text="".join(self.text.pieces),
            stop_reason=reason,
            tokens=self.generated,
            prompt_tokens=len(self.request.prompt_ids),
            cached_tokens=n_cached,
            timings=self.timings,
        )


def decode_n_tokens(decoder: Decoder, logits: torch.Tensor, run: DecodeRun) -> StopReason:
    """Pick a token, show it, stop or step the decoder on it; repeat."""
    while True:
        token = run.take(logits)
        reason = run.stop_after(token)
        if reason is not None:
            return reason
        logits = decoder.step(token)  # [V]


def run_decoder(decoder: Decoder, ids: Sequence[int], run: DecodeRun) -> StopReason:
    """prefill → decode_n_tokens. A cancel or time-out inside the model ends with its reason."""
    try:
        logits = decoder.prefill(ids)  # [V]
        run.timings["prefill_s"] = run.limits.elapsed()
        return decode_n_tokens(decoder, logits, run)
    except Cancelled:
        return "cancelled" if run.limits.cancel.is_set() else "time"
    finally:
        decoder.close()


def open_cache(backend: Backend, ids: Sequence[int], prefix_cache: PrefixCache | None):
    """``(cache, n_cached)``: the longest cached prefix of ``ids``, or an empty cache."""
    if prefix_cache is not None:
        cache, n_cached = prefix_cache.lookup(ids)
        if cache is not None:
            return cache, n_cached
    return backend.new_cache(), 0


def generate_stream(
    model,
    tokenizer,
    request: GenerationRequest,
    *,
    eos_token_ids: Sequence[int],
    prefix_cache: PrefixCache | None = None,
    prefill_chunk: int = 256,
    cancel: threading.Event | None = None,
    on_text: TextCallback | None = None,
) -> GenerationResult:
    """Generate for ``request``, calling ``on_text`` with each new piece of text.

    ``model`` is a transformers model or a backend with ``new_cache()`` and
    ``decoder(cache, chunk=, should_stop=)`` (the CPU kernel's NativeModel). The decoder is
    chosen here, once; the loop drives its ``prefill`` / ``step`` / ``close`` without knowing
    which it is. Never raises for cancellation or time-out: those end with a ``stop_reason``.
    """
    request.validate()
    run = DecodeRun.start(tokenizer, request, eos_token_ids=eos_token_ids, cancel=cancel, on_text=on_text)
    ids = list(request.prompt_ids)
    reuse = prefix_cache if request.use_prefix_cache else None
    backend = as_backend(model)
    cache, n_cached = open_cache(backend, ids, reuse)
    decoder = backend.decoder(cache, chunk=max(1, prefill_chunk), should_stop=run.limits.should_stop)
    reason = run_decoder(decoder, ids[n_cached:], run)
    if reason != "stop" and run.text.finish():
        reason = "stop"
    result = run.result(reason, n_cached)
    if reuse is not None:
        reuse.store((ids + run.generated)[: cache_seq_length(cache)], cache)
    return result
