"""What the engine thread works on: generation jobs, model calls and loads, each safe to share.

A :class:`Job` is one request on its way through the engine: a prompt spec (what the user
asked, built into token ids on the engine thread) plus one :class:`GenerationRequest` (how to
generate). Front ends create jobs through :meth:`Engine.submit <.engine.Engine.submit>`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, cast

from .generation import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from .loading import LoadedModel, LoadOptions

log = logging.getLogger(__name__)

JobKind = Literal["completion", "chat", "generate"]
JOB_KINDS = ("completion", "chat", "generate")
#: A request spec (``prompts.requests``), a builder ``fn(loaded) -> Prompt | ids``, text or ids.
PromptSource = Any

_ids = itertools.count(1)
_OPTION_NAMES = frozenset(f.name for f in fields(GenerationRequest)) - {"prompt_ids", "lead"}


class EngineError(RuntimeError):
    """Raised by the blocking API when a job ends in error; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Job:
    """A generation request on its way through the engine; safe to use from any thread."""

    kind: JobKind
    spec: PromptSource
    #: How to generate; its ``prompt_ids`` are filled in on the engine thread.
    options: GenerationRequest = field(default_factory=lambda: GenerationRequest(prompt_ids=[]))
    #: Completions only: count this job's first-token latency in status (prewarms do not).
    record_latency: bool = True
    #: Completions only: a prefetch nobody waits for yet; it gives way to any other completion.
    background: bool = False
    on_chunk: Callable[[str], None] | None = None
    on_done: Callable[["Job"], None] | None = None
    request_id: str = field(default_factory=lambda: f"job-{next(_ids)}")
    result: GenerationResult | None = None
    error_code: str | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def of(
        cls, kind: str, prompt: PromptSource = None, *, messages: Sequence[Any] | None = None, **kwargs: Any
    ) -> "Job":
        """A job from the Python API's words: ``prompt`` (spec, builder, text or ids) or
        ``messages``, generation options (``max_new_tokens``, ``temperature``, …) and job fields."""
        if kind not in JOB_KINDS:
            raise ValueError(f"Unknown job kind {kind!r}: use 'completion', 'chat' or 'generate'.")
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTION_NAMES}
        spec = as_spec(prompt, messages, options.get("max_new_tokens"))
        options.setdefault("max_new_tokens", getattr(spec, "max_new_tokens", 256))
        options["stop"] = tuple(options.get("stop", ()))
        options["stop_token_ids"] = tuple(options.get("stop_token_ids", ()))
        return cls(kind=cast(JobKind, kind), spec=spec, options=GenerationRequest(prompt_ids=[], **options), **kwargs)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> GenerationResult:
        """Block until the job ends; the result always has a ``stop_reason``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.request_id} did not finish within {timeout} s")
        assert self.result is not None
        return self.result

    def wait_interruptibly(self) -> GenerationResult:
        """Block until the job ends; Ctrl-C cancels it, waits for it to stop, and re-raises."""
        try:
            # Short slices: an interrupt is handled between them, whatever delivers it.
            while not self._done.wait(0.1):
                pass
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(10)
            raise
        return self.wait()

    def _finish(self, result: GenerationResult, error_code: str | None = None) -> None:
        result.timings.setdefault("queue_s", 0.0)
        self.result, self.error_code = result, error_code
        self._done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # noqa: BLE001 - a listener's bug must not kill the worker
                log.exception("on_done callback of %s failed", self.request_id)


def as_spec(prompt: PromptSource, messages: Sequence[Any] | None, max_new_tokens: int | None) -> PromptSource:
    """The request spec for the Python API's ``prompt`` / ``messages``.

    Text and messages are redacted with the running kernel's namespace, as the magics' and the
    lab's requests are; token ids and builders pass as given.
    """
    from ..prompts.requests import ChatRequest, TextRequest, TokenRequest
    from ..session import kernel_namespace

    if messages is not None:
        spec: PromptSource = ChatRequest(messages=list(messages), namespace=kernel_namespace())
    elif prompt is None:
        raise ValueError("A job needs a prompt (text, token ids or a builder) or messages.")
    elif isinstance(prompt, str):
        spec = TextRequest(prompt, namespace=kernel_namespace())
    elif callable(prompt):
        return prompt
    else:
        spec = TokenRequest(list(prompt))
    return spec if max_new_tokens is None else replace(spec, max_new_tokens=max_new_tokens)


@dataclass
class ModelCall:
    """Work on the model thread that is not a generation, e.g. building a prompt to show it.

    The tokenizer is not safe to use from two threads at once (a fast tokenizer switches its
    special-token splitting per call, for everyone), so whatever tokenizes runs where generation
    does: on the engine thread, in turn.
    """

    fn: Callable[["LoadedModel"], Any]
    on_done: Callable[["ModelCall"], None] | None = None
    value: Any = None
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> Any:
        """``fn``'s value once it ran, or its exception (``EngineError`` when no model is loaded)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the engine did not get to this call within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.value

    def _run(self, loaded: "LoadedModel | None", why_none: str | None) -> None:
        try:
            if loaded is None:
                raise EngineError("not_loaded", why_none or "No model is loaded; load one first.")
            self.value = self.fn(loaded)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, the worker goes on
            self.error = exc
        self._done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # noqa: BLE001 - a listener's bug must not kill the worker
                log.exception("on_done callback of a model call failed")


@dataclass
class LoadJob:
    options: "LoadOptions"
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class LoadHandle:
    """Returned by :meth:`Engine.load`: ``wait()`` blocks until loaded, raising its error."""

    def __init__(self, status: Callable[[], dict[str, Any]], job: LoadJob) -> None:
        self._status, self._job = status, job

    @property
    def done(self) -> bool:
        return self._job.done.is_set()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        if not self._job.done.wait(timeout):
            raise TimeoutError(f"the model did not finish loading within {timeout} s")
        if self._job.error is not None:
            raise self._job.error
        return self._status()
