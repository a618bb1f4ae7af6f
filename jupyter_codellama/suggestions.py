"""Inline suggestions the kernel can answer without the model: typed through, or prefetched.

Two sources, per comm connection:

* **typed through**: the last suggestion shown. When the next request's prefix is that
  suggestion's prefix plus the start of its text (the user typed what the ghost text showed,
  or accepted part of it), the rest is the answer.
* **prefetched**: after a suggestion is accepted, the front end asks, in the background, for the
  continuation at the new cursor position (``complete`` with ``prefetch: true``, as llama.vim
  does). Its answer is kept, keyed by exactly what the next request will send, so that request
  is answered at once. A real request that arrives while the prefetch with its key still
  generates is attached to that generation instead of starting another: it gets the text so
  far at once, then the rest as it comes.

Memory is bounded: a few entries, a cap on their text, and an age after which an entry is
dropped (the live variables that went into its prompt may have changed since).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

#: Fields that do not change the answer, left out of the key.
_NOT_IN_KEY = frozenset({"type", "request_id", "prefetch", "stream"})
#: Only a finished answer may be reused: a cancelled or timed-out one is partial.
_REUSABLE = ("eos", "stop", "length")

Send = Callable[[dict], None]


def request_key(data: Mapping[str, Any]) -> str:
    """A digest of everything in a ``complete`` request that shapes its answer."""
    fields = {k: v for k, v in data.items() if k not in _NOT_IN_KEY}
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def typed_through(shown: tuple[str, str, str] | None, prefix: str, suffix: str) -> str | None:
    """The rest of ``shown`` = (prefix, suffix, text) once the user typed its start, else None."""
    if shown is None:
        return None
    old_prefix, old_suffix, text = shown
    if suffix != old_suffix or not prefix.startswith(old_prefix):
        return None
    typed = prefix[len(old_prefix) :]
    if text.startswith(typed) and len(text) > len(typed) and text[len(typed) :].strip():
        return text[len(typed) :]
    return None


@dataclass
class _Entry:
    text: str
    stored_at: float


class PrefetchStore:
    """Prefetched answers by request key: at most ``max_entries``, ``max_bytes`` of text in all,
    each for ``max_age_s``. Thread-safe (the comm thread reads, the engine thread writes)."""

    def __init__(
        self,
        *,
        max_entries: int = 4,
        max_bytes: int = 64 << 10,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries, self.max_bytes, self.max_age_s = max_entries, max_bytes, max_age_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(_size(e.text) for e in self._entries.values())

    def put(self, key: str, text: str) -> bool:
        """Keep ``text`` for ``key``; False when it alone is over the byte cap."""
        if _size(text) > self.max_bytes:
            return False
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(text, self._clock())
            total = sum(_size(e.text) for e in self._entries.values())
            while len(self._entries) > self.max_entries or total > self.max_bytes:
                _, oldest = self._entries.popitem(last=False)
                total -= _size(oldest.text)
        return True

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry.stored_at > self.max_age_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.text


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class CompleteRequest:
    """What :class:`Suggestions` needs to know of one ``complete`` request."""

    request_id: str
    prefix: str
    suffix: str
    #: What the kernel decided (see ``comm.wants_multiline``): every reply to it says so.
    multiline: bool
    prefetch: bool
    data: Mapping[str, Any]

    @property
    def key(self) -> str:
        return request_key(self.data)


class Suggestions:
    """One connection's reusable suggestions: the one shown, prefetched ones, prefetches running."""

    def __init__(self, store: PrefetchStore | None = None) -> None:
        self.store = store or PrefetchStore()
        self.shown: tuple[str, str, str] | None = None
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # key -> request id of the prefetch generating it
        self._waiting: dict[str, list[CompleteRequest]] = {}  # prefetch request id -> its waiters
        self._so_far: dict[str, str] = {}  # prefetch request id -> the text it generated so far

    def show(self, prefix: str, suffix: str, text: str) -> None:
        """``text`` is the suggestion now shown at (prefix, suffix)."""
        self.shown = (prefix, suffix, text) if text else None

    def answer(self, request: CompleteRequest, send: Send) -> str | bool:
        """Answer ``request`` without the model when possible.

        True: answered (typed through, or prefetched). A request id: a prefetch with this key is
        generating, and ``request`` is answered when it ends (see :meth:`ended`). False: the
        model is needed.
        """
        rest = None if request.prefetch else typed_through(self.shown, request.prefix, request.suffix)
        if rest is not None:
            self.show(request.prefix, request.suffix, rest)
            send(_reused_reply(request, rest, prefetched=False))
            return True
        if not len(self.store) and not self._running and not request.prefetch:
            return False  # nothing to look up: spare hashing the notebook
        key = request.key
        text = self.store.get(key)
        if text is not None:
            if not request.prefetch:
                self.show(request.prefix, request.suffix, text)
            send(_reused_reply(request, text, prefetched=True))
            return True
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                self._waiting.setdefault(running, []).append(request)
                if self._so_far.get(running):  # under the lock: before any later chunk
                    send(_chunk(request, self._so_far[running]))
                return running
            if request.prefetch:
                self._running[key] = request.request_id
        return False

    def chunk_sink(self, request_id: str, send: Send) -> Callable[[str], None]:
        """Where a prefetch's text goes as it is generated: kept, and passed on to its waiters."""

        def on_chunk(text: str) -> None:
            with self._lock:
                self._so_far[request_id] = self._so_far.get(request_id, "") + text
                for waiter in self._waiting.get(request_id, ()):
                    send(_chunk(waiter, text))

        return on_chunk

    def generated(self, request: CompleteRequest, text: str, stop_reason: str) -> None:
        """The model answered ``request`` with ``text`` (cleaned): show it, or keep it."""
        if request.prefetch:
            if text.strip() and stop_reason in _REUSABLE:
                self.store.put(request.key, text)
            return
        # Only a finished answer may be typed through: a cancelled or cut one is partial.
        self.show(request.prefix, request.suffix, text if stop_reason in ("eos", "stop") else "")

    def ended(self, request_id: str, reply: dict, send: Send) -> None:
        """A generation's final ``reply`` went out: forward it to the requests that waited for it."""
        with self._lock:
            for key, running in list(self._running.items()):
                if running == request_id:
                    del self._running[key]
            waiting = self._waiting.pop(request_id, [])
            self._so_far.pop(request_id, None)
        for waiter in waiting:
            forwarded = {**reply, "request_id": waiter.request_id}
            if reply.get("type") == "done":
                forwarded.update(
                    from_suggestion=True,
                    prefetched=True,
                    generated_tokens=0,
                    tokens_evaluated=0,
                    multiline=waiter.multiline,
                )
                self.generated(waiter, reply.get("text", ""), reply.get("stop_reason", ""))
            send(forwarded)


def _chunk(request: CompleteRequest, text: str) -> dict:
    return {"type": "chunk", "request_id": request.request_id, "text": text, "multiline": request.multiline}


def _reused_reply(request: CompleteRequest, text: str, *, prefetched: bool) -> dict:
    """The ``done`` of a request answered from a suggestion: no tokens, no model call."""
    return {
        "type": "done",
        "request_id": request.request_id,
        "text": text,
        "raw_text": text,
        "stop_reason": "stop",
        "from_suggestion": True,
        "prefetched": prefetched,
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "generated_tokens": 0,
        "tokens_evaluated": 0,
        "timings": {"total_s": 0.0},
        "multiline": request.multiline,
    }
