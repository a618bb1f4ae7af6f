"""The engine: one thread owns the model; everything else talks to it through jobs.

Comm handlers and magics call :meth:`Engine.submit` (never blocking) and get a :class:`Job`
back; text arrives through ``on_chunk`` from the worker thread. Scheduling rules:

* jobs run one at a time, in order of submission;
* a new ``completion`` job cancels every earlier completion job (only the latest keystroke
  matters), except that a ``background`` one (a prefetch) never takes the place of a completion
  someone waits for: it ends at once, ``cancelled``, while one is queued or running;
* completions never wait behind chat/generation work or a load: they end at once with the
  ``busy`` error, because a completion that arrives late is worse than none;
* chat/generation jobs are never cancelled by anything but their own ``cancel()``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from dataclasses import replace
from typing import Any, Callable, Literal

from ..config import CodeLlama, get_config
from ..prompts.prompt import PromptTooLongError
from .generation import GenerationRequest, GenerationResult, PrefixCache, generate_stream
from .jobs import EngineError, Job, JobKind, LoadHandle, LoadJob, ModelCall, PromptSource
from .loading import KernelOptions, LoadedModel, LoadOptions, ModelLoadError, free_model, load_model

__all__ = ["Engine", "EngineError", "Job", "LoadHandle", "ModelCall", "get_engine", "prepare"]

log = logging.getLogger(__name__)

State = Literal["unloaded", "loading", "ready", "error"]


_SHUTDOWN = object()
_UNLOAD = object()


def _admitted(job: Job, queued: list[Any]) -> bool:
    """The completion rule for a new completion ``job``, against the work ``queued`` or running:
    a background one (a prefetch) gives way to a completion someone waits for (it ends at once,
    ``cancelled``, and False); any other cancels the earlier completions."""
    earlier = [o for o in queued if isinstance(o, Job) and o.kind == "completion" and not (o.cancelled or o.done)]
    if job.background and any(not o.background for o in earlier):
        job._finish(GenerationResult(text="", stop_reason="cancelled"))
        return False
    for other in earlier:
        other.cancel()
    return True


class Engine:
    """Owns the model thread. Create one per kernel with :func:`get_engine`."""

    def __init__(self, config: CodeLlama | None = None) -> None:
        self.config = config or get_config()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.RLock()
        self._loaded: LoadedModel | None = None
        self._state: State = "unloaded"
        self._progress: dict[str, Any] | None = None
        self._error: str | None = None
        self._pending: list[Any] = []  # jobs and loads queued, in order
        self._running: Job | LoadJob | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._last_progress_emit = 0.0
        self._prefix_cache = PrefixCache(self.config.prefix_cache_mb << 20)
        self._completion_ms: list[float] = []  # first-token latency of recent completions
        self._thread = threading.Thread(target=self._run, name="codellama-engine", daemon=True)
        self._thread.start()

    # -- public API ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: state, model info when ready, progress while loading, error."""
        with self._lock:
            status: dict[str, Any] = {"state": self._state}
            if self._loaded is not None:
                status.update(self._loaded.info())
            if self._state == "loading" and self._progress:
                status["progress"] = dict(self._progress)
            if self._state == "error":
                status["error"] = self._error
            status["queued"] = sum(isinstance(p, Job) for p in self._pending)
            status["busy"] = self._running is not None
            if self._completion_ms:
                status["completion_latency_ms"] = _percentiles(self._completion_ms)
            status["prefix_cache"] = _cache_status(self._prefix_cache)
            return status

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    def on_status(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``callback(status)`` on every state/progress change; returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def load(self, model: str | None = None, **options: Any) -> LoadHandle:
        """Queue a (re)load; options as :class:`LoadOptions`, defaults from the config."""
        job = LoadJob(LoadOptions.from_config(self.config, model=model, **options))
        job.options.validate()  # a typo must not cost the user the model that is loaded now
        with self._lock:
            self._pending.append(job)
            self._set_state("loading", progress={"stage": "queued", "fraction": 0.0})
        self._queue.put(job)
        return LoadHandle(self.status, job)

    def unload(self, timeout: float | None = 60.0) -> None:
        """Free the model (and its GPU memory).

        Work running or queued now would lose its model, so it is cancelled (each job still
        ends, with ``cancelled``). Raises ``TimeoutError`` when the engine did not get to the
        unload within ``timeout`` seconds; it still unloads once it does.
        """
        self._cancel_jobs()
        done = threading.Event()
        self._queue.put((_UNLOAD, done))
        if not done.wait(timeout):
            raise TimeoutError(
                f"The engine did not get to the unload within {timeout} s (it is busy); "
                "the model is freed as soon as it does."
            )

    def run_with_model(
        self, fn: Callable[[LoadedModel], Any], *, on_done: Callable[[ModelCall], None] | None = None
    ) -> ModelCall:
        """Run ``fn(loaded_model)`` on the engine thread, after the work queued before it."""
        call = ModelCall(fn, on_done)
        self._queue.put(call)
        return call

    def submit(self, kind: JobKind = "generate", prompt: PromptSource | None = None, **kwargs: Any) -> Job:
        """Queue a job and return at once: ``prompt`` is a request spec (``prompts.requests``),
        a builder, text or token ids (or give ``messages=``); options as :class:`GenerationRequest`."""
        job = Job.of(kind, prompt, **kwargs)
        with self._lock:
            if kind == "completion":
                busy = self._busy_reason()
                if busy:
                    job._finish(GenerationResult(text="", stop_reason="error", error=busy), "busy")
                    return job
                if not _admitted(job, [*self._pending, self._running]):
                    return job
            elif self._state in ("unloaded", "error") and not any(isinstance(p, LoadJob) for p in self._pending):
                self._queue_default_load()
            self._pending.append(job)
        self._queue.put(job)
        return job

    def _queue_default_load(self) -> None:
        """The first real request loads the default model (with progress for the UI)."""
        load = LoadJob(LoadOptions.from_config(self.config))
        self._pending.append(load)
        self._set_state("loading", progress={"stage": "queued", "fraction": 0.0})
        self._queue.put(load)

    def generate(self, prompt: PromptSource | None = None, *, on_chunk=None, **kwargs: Any) -> GenerationResult:
        """Blocking generation. Ctrl-C cancels the job, waits for it to stop, and re-raises."""
        job = self.submit(kwargs.pop("kind", "generate"), prompt, on_chunk=on_chunk, **kwargs)
        result = job.wait_interruptibly()
        if result.stop_reason == "error":
            raise EngineError(job.error_code or "error", result.error or "generation failed")
        return result

    def cancel(self, request_id: str) -> bool:
        with self._lock:
            for job in [*self._pending, self._running]:
                if isinstance(job, Job) and job.request_id == request_id:
                    job.cancel()
                    return True
        return False

    def clear_prefix_cache(self) -> None:
        self._prefix_cache.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._cancel_jobs()
        self._queue.put(_SHUTDOWN)
        self._thread.join(timeout)

    def _cancel_jobs(self) -> None:
        with self._lock:
            for job in [*self._pending, self._running]:
                if isinstance(job, Job):
                    job.cancel()

    # -- the worker thread ---------------------------------------------------------------------

    def _busy_reason(self) -> str | None:
        return _busy_reason([self._running, *self._pending], self._state)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _SHUTDOWN:
                free_model(self._loaded)
                return
            try:
                if isinstance(item, tuple) and item[0] is _UNLOAD:
                    self._do_unload()
                    item[1].set()
                elif isinstance(item, LoadJob):
                    self._do_load(item)
                elif isinstance(item, Job):
                    self._do_job(item)
                elif isinstance(item, ModelCall):
                    self._do_call(item)
            except BaseException:  # noqa: BLE001 - the worker thread must outlive any job
                log.error("engine worker: unexpected error\n%s", traceback.format_exc())

    def _do_unload(self) -> None:
        with self._lock:
            loaded, self._loaded = self._loaded, None
            self._prefix_cache.clear()
            self._set_state("unloaded")
        free_model(loaded)

    def _do_load(self, job: LoadJob) -> None:
        with self._lock:
            self._running = job
            self._pending.remove(job)
            old, self._loaded = self._loaded, None
            self._prefix_cache.clear()
            self._set_state("loading", progress={"stage": "starting", "fraction": 0.0})
        free_model(old)  # before loading the next one: both may not fit
        try:
            loaded = load_model(job.options, progress=self._report_progress, **_backend_choice(self.config))
        except BaseException as exc:  # noqa: BLE001 - reported to the waiter and in status
            job.error = exc if isinstance(exc, Exception) else ModelLoadError(str(exc))
            with self._lock:
                self._running = None
                self._set_state("error", error=_describe(exc))
        else:
            with self._lock:
                self._loaded = loaded
                self._prefix_cache.max_bytes = _prefix_budget(self.config, loaded)
                self._running = None
                self._set_state("ready")
        finally:
            job.done.set()

    def _do_job(self, job: Job) -> None:
        with self._lock:
            self._pending.remove(job)
            self._running = job
        queue_s = time.perf_counter() - job.submitted_at
        try:
            result, code = self._generate(job, queue_s)
        except BaseException as exc:  # noqa: BLE001 - the job must end and the engine be free again
            log.error("engine worker: %s ended by\n%s", job.request_id, traceback.format_exc())
            result, code = GenerationResult(text="", stop_reason="error", error=_describe(exc)), "generation_failed"
        result.timings["queue_s"] = queue_s
        with self._lock:
            # Let go of the job before it reports done: whoever wakes up sees an idle engine.
            self._running = None
            if job.kind == "completion" and job.record_latency and "first_token_s" in result.timings:
                self._completion_ms = [*self._completion_ms[-49:], (queue_s + result.timings["first_token_s"]) * 1000]
        job._finish(result, code)

    def _do_call(self, call: ModelCall) -> None:
        call._run(self._loaded, self._error)

    def _generate(self, job: Job, queue_s: float) -> tuple[GenerationResult, str | None]:
        """Run one job on the model; never raises (errors become results with a code)."""
        if job.cancelled:
            return GenerationResult(text="", stop_reason="cancelled"), None
        loaded = self._loaded
        if loaded is None:
            why = self._error or "No model is loaded."
            return GenerationResult(text="", stop_reason="error", error=why), "not_loaded"
        return run_job(job, loaded, self._prefix_cache, self.config.prefill_chunk_tokens)

    # -- status plumbing -----------------------------------------------------------------------

    def _report_progress(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        with self._lock:
            last = self._progress or {}
            self._progress = {"stage": stage, "fraction": round(float(fraction), 3)}
            if not _worth_telling(last.get("stage", ""), stage, fraction, now - self._last_progress_emit):
                return
            self._last_progress_emit = now
        self._notify()

    def _set_state(self, state: State, *, progress: dict | None = None, error: str | None = None) -> None:
        self._state = state
        self._progress = progress
        self._error = error
        self._notify()

    def _notify(self) -> None:
        snapshot = self.status()
        for listener in list(self._listeners):
            try:
                listener(snapshot)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                log.exception("engine status listener failed")


#: Prompt positions whose KV the prefix cache can always hold, whatever prefix_cache_mb says: a
#: CPU-kernel 7B keeps 0.5 MB of fp16 KV a token, and an inline completion whose notebook context
#: did not fit would be prefilled from scratch on every keystroke.
MIN_CACHED_POSITIONS = 2048


def _prefix_budget(config, loaded: LoadedModel) -> int:
    budget = int(config.prefix_cache_mb) << 20
    per_token = getattr(loaded.model, "kv_bytes_per_token", None)
    if loaded.backend == "kernel" and per_token:
        budget = max(budget, per_token * MIN_CACHED_POSITIONS)
    return budget


def _backend_choice(config) -> dict[str, Any]:
    """The load's backend and CPU kernel options from the configuration."""
    backend = str(getattr(config, "cpu_backend", "auto") or "auto").lower()
    return {"backend": backend, "kernel": KernelOptions.from_config(config)}


def _safe_callback(callback: Callable[[str], None] | None, request_id: str) -> Callable[[str], None] | None:
    if callback is None:
        return None

    def call(text: str) -> None:
        try:
            callback(text)
        except Exception:  # noqa: BLE001 - a broken consumer must not end the generation
            log.exception("on_chunk callback of %s failed", request_id)

    return call


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (ModelLoadError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine(config: CodeLlama | None = None) -> Engine:
    """The kernel's engine (created on first use; ``config`` replaces its settings if given)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine(config)
        elif config is not None:
            _engine.config = config
        return _engine


def run_job(
    job: Job, loaded: LoadedModel, prefix_cache: PrefixCache, prefill_chunk: int
) -> tuple[GenerationResult, str | None]:
    """Build the job's prompt and generate; errors become results with a code, never raise."""
    try:
        request = prepare(job, loaded)
        run = loaded.generate or generate_stream  # a remote model brings its own loop
        return run(
            loaded.model,
            loaded.tokenizer,
            request,
            eos_token_ids=loaded.eos_token_ids,
            prefix_cache=prefix_cache,
            prefill_chunk=prefill_chunk,
            cancel=job._cancel,
            on_text=_safe_callback(job.on_chunk, job.request_id),
        ), None
    except (ValueError, TypeError) as exc:
        code = "prompt_too_long" if isinstance(exc, PromptTooLongError) else "bad_request"
        return GenerationResult(text="", stop_reason="error", error=str(exc)), code
    except Exception as exc:  # noqa: BLE001 - reported on the job, the worker goes on
        log.exception("generation failed")
        return GenerationResult(text="", stop_reason="error", error=_describe(exc)), "generation_failed"


def _percentiles(values: list[float]) -> dict[str, float]:
    recent = sorted(values)
    return {
        "p50": round(recent[len(recent) // 2], 1),
        "p95": round(recent[min(len(recent) - 1, int(len(recent) * 0.95))], 1),
        "n": len(recent),
    }


def _busy_reason(work: list, state: State) -> str | None:
    """Why a completion cannot run now (None: it can)."""
    blocking = [p for p in work if isinstance(p, LoadJob) or (isinstance(p, Job) and p.kind != "completion")]
    if blocking:
        what = "loading a model" if isinstance(blocking[0], LoadJob) else "answering another request"
        return f"The model is busy ({what}); try again when it is done."
    if state != "ready":
        # Typing must never start loading a multi-GB model: that is an explicit choice.
        return "No model is loaded; completions start once one is (load one first)."
    return None


def _cache_status(cache: PrefixCache) -> dict[str, int]:
    return {
        "entries": len(cache),
        "hits": cache.hits,
        "misses": cache.misses,
        "bytes": cache.nbytes,
        "max_bytes": cache.max_bytes,
    }


def _worth_telling(last_stage: str, stage: str, fraction: float, since_last_s: float) -> bool:
    """Listeners (widgets, the comm) need a few updates a second, not one per tensor: a new
    stage, the end, or a tenth of a second since the last update."""
    return since_last_s >= 0.1 or fraction >= 1.0 or last_stage.split(" (")[0] != stage.split(" (")[0]


def prepare(job: Job, loaded: LoadedModel) -> GenerationRequest:
    """The job's generation request with its prompt built: token ids plus the stop strings and
    stop ids the prompt itself asks for.

    Built here, on the model thread, because only now is the tokenizer known (the first
    request may have triggered the load). A builder may return plain ids or a ``Prompt``.
    """
    built = job.spec(loaded)
    if hasattr(built, "ids"):
        ids, stop, stop_ids, lead = list(built.ids), tuple(built.stop), tuple(built.stop_token_ids), built.lead
    else:
        ids, stop, stop_ids, lead = list(built), (), (), ""
    vocab = len(loaded.tokenizer)
    if not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
        raise ValueError(f"Token ids must be integers in [0, {vocab}).")
    options = job.options
    return replace(
        options, prompt_ids=ids, stop=options.stop + stop, stop_token_ids=options.stop_token_ids + stop_ids, lead=lead
    )
