"""The kernel side of the ``jupyter_codellama`` comm: protocol validation and dispatch.

The protocol is defined once, in ``protocol.schema.json`` (JSON Schema; loaded and checked by
:mod:`.protocol`; the front end's ``labextension/src/protocol.generated.ts`` is generated from it
by ``scripts/gen_protocol_ts.py``). Every request is ``{"type", "request_id", ...}``; every
reply carries the same ``request_id`` and is one of ``chunk`` (text delta), ``done`` (final
result), ``error`` (``code``, ``message``), or, for ``hello``/``status``, a message of that type.
The kernel also sends unsolicited ``{"type": "status", "request_id": null, "status": ...}``
whenever the engine's state or load progress changes. A ``complete`` request's ``chunk`` and
``done`` replies carry ``multiline``: whether the kernel let the suggestion run over several
lines (the request's own ``multiline``, else :func:`wants_multiline`). An ``edit`` request's
replies carry ``source``: the cell's whole new source, as far as the answer has come (throttled),
then the final one in the ``done``; the front end shows it as a diff and changes nothing itself.

``complete`` with ``prefetch: true`` (sent after a suggestion was accepted) generates without
streaming and keeps its answer: the next ``complete`` with the same fields is answered from it
(``from_suggestion`` and ``prefetched`` true, no tokens generated), and one that arrives while it
still generates joins it (the text so far at once, then the rest). A prefetch never cancels a
completion someone waits for; a new completion cancels a prefetch. See :mod:`.suggestions`.

Handlers never generate: they validate, hand a job to the engine and return, so the comm's
thread (a kernel subshell where the front end uses one) is never blocked. Bad input gets an
``error`` reply; nothing a front end sends can raise into the comm machinery. Every request
ends with exactly one terminal reply (``done``, ``error``, ``hello`` or ``status``); a field
over :data:`FIELD_LIMITS` is refused before any work (which bounds the work of the schema check
that follows), and no error repeats a large value.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from ._version import __version__
from .comm_specs import KernelView, cell_spec, chat_spec, generation_options, get, infill_spec
from .engine import EngineUser
from .prompts.edit import EditProposal
from .prompts.prompt import PromptTooLongError
from .prompts.requests import EditRequest, ExplainRequest, FixRequest
from .protocol import (
    COMM_TARGET,
    ERROR_CODES,
    FIELD_LIMITS,
    MAX_REQUEST_ID,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    BadRequest,
    check_sizes,
    short,
    validate_request,
)
from .suggestions import CompleteRequest, Suggestions

__all__ = ["COMM_TARGET", "FIELD_LIMITS", "PROTOCOL_VERSION", "CommSession", "register_comm_target", "wants_multiline"]

log = logging.getLogger(__name__)

Send = Callable[[dict], None]


# ---------------------------------------------------------------------------------------------
# The session: one per open comm


class _Link(EngineUser):
    """One front-end connection's plumbing: sending, dispatching by request type, submitting jobs
    and ending each request with exactly one terminal reply. :class:`CommSession` adds the handlers."""

    def __init__(
        self,
        send: Send,
        *,
        engine=None,
        namespace: Callable[[], Mapping] | None = None,
        judge: Callable[[list], list] | None = None,
    ) -> None:
        self._send_raw = send
        self._engine = engine
        self._namespace = namespace or (lambda: {})
        self._kernel = KernelView(self._namespace, judge) if judge else KernelView(self._namespace)
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = threading.Lock()
        # The last suggestion shown and prefetched ones: answered without the model.
        self.suggestions = Suggestions()
        # Jobs submitted and not yet done, by request id: closing the comm cancels them.
        self._jobs: dict[str, Any] = {}
        self.closed = False
        self._handlers = self._handler_table()
        assert set(self._handlers) == set(REQUEST_TYPES), "every request type of the schema has a handler"

    def _handler_table(self) -> dict[str, Callable[[str, Mapping], None]]:
        """Request type → handler; :class:`CommSession` has one for every type."""
        return {}

    # -- plumbing --------------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if self.closed:
            return
        try:
            with self._lock:  # replies come from the comm thread and the engine thread
                self._send_raw(message)
        except Exception:  # noqa: BLE001 - a dead connection must not break the engine
            log.debug("could not send %s", message.get("type"), exc_info=True)

    def error(self, request_id: Any, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        self.send({"type": "error", "request_id": request_id, "code": code, "message": message})

    def close(self) -> None:
        """The front end went away (notebook closed, kernel link dropped): stop its work."""
        self.closed = True
        for job in list(self._jobs.values()):
            job.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def handle(self, data: Any) -> None:
        """Entry point for every message from the front end. Never raises."""
        request_id = data.get("request_id") if isinstance(data, dict) else None
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
            request_id = None  # an invalid id is not echoed: the reply goes out with none
        try:
            if not isinstance(data, dict):
                raise BadRequest("A message must be a JSON object.")
            if request_id is None:
                raise BadRequest(f"'request_id' must be a non-empty string (at most {MAX_REQUEST_ID} characters).")
            check_sizes(data)
            kind = data.get("type")
            if kind not in REQUEST_TYPES:
                raise BadRequest(
                    f"Unknown message type {short(kind)}; expected one of {', '.join(REQUEST_TYPES)}.", "unknown_type"
                )
            validate_request(kind, data)  # before any work: the handlers receive well-formed fields
            self._handlers[kind](request_id, data)
        except BadRequest as exc:
            self.error(request_id, exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - the kernel never dies of a message
            log.exception("comm handler failed")
            self.error(request_id, "internal", f"{type(exc).__name__}: {exc}")

    # -- jobs ------------------------------------------------------------------------------------

    def _submit(
        self,
        kind: str,
        request_id: str,
        spec,
        opts: dict,
        *,
        finish: Callable[[str, str], str] | None = None,
        stream: bool = True,
        told: Mapping[str, Any] | None = None,
        annotate: Callable[[dict], None] | None = None,
        chunks_to: Callable[[str], None] | None = None,
    ) -> None:
        """Hand the job to the engine; ``told`` goes into each ``chunk`` and the ``done``, and
        ``annotate`` may add to each of them (on the engine thread, in order). ``chunks_to``
        takes the text as it comes instead of the front end (a prefetch keeps it)."""
        told = dict(told or {})
        add = annotate or (lambda _reply: None)

        def on_chunk(text: str) -> None:
            chunk = {"type": "chunk", "request_id": request_id, "text": text, **told}
            add(chunk)
            self.send(chunk)

        def on_done(job) -> None:
            for rid in [r for r, j in list(self._jobs.items()) if j is job]:  # with requests waiting for it
                self._jobs.pop(rid, None)
            try:
                reply = self._final_reply(kind, request_id, job, finish)
                if reply["type"] == "done":
                    reply.update(told)
                    add(reply)
            except Exception as exc:  # noqa: BLE001 - the request still gets its one answer
                log.exception("the reply to %s could not be built", request_id)
                reply = {
                    "type": "error",
                    "request_id": request_id,
                    "code": "internal",
                    "message": f"{type(exc).__name__}: {exc}",
                }
            self.send(reply)
            self.suggestions.ended(request_id, reply, self.send)

        job = self.engine.submit(
            kind,
            spec,
            request_id=request_id,
            on_chunk=chunks_to or (on_chunk if stream else None),
            on_done=on_done,
            **opts,
        )
        self._jobs[request_id] = job
        if job.done:  # it ended before it was recorded (on_done found nothing to forget)
            self._jobs.pop(request_id, None)
        elif self.closed:  # closed while submitting: close() may have missed it
            job.cancel()

    def _final_reply(self, kind: str, request_id: str, job, finish: Callable[[str, str], str] | None) -> dict:
        """The ``done`` (or ``error``) message that ends a generation request."""
        result = job.result
        if result.stop_reason == "error":
            return {
                "type": "error",
                "request_id": request_id,
                "code": job.error_code or "generation_failed",
                "message": result.error or "generation failed",
            }
        reply = {"type": "done", "request_id": request_id, **result.to_dict()}
        reply["tokens_evaluated"] = result.prompt_tokens - result.cached_tokens
        if finish is not None:
            reply["raw_text"] = result.text
            reply["text"] = finish(result.text, result.stop_reason)
        if kind == "completion":
            # Carries the recent latency figures the sidebar shows (cheap: a dict under a lock).
            reply["status"] = self.engine.status()
        return reply


class CommSession(_Link):
    """Handles the messages of one front-end connection: one handler per request type."""

    def _handler_table(self) -> dict[str, Callable[[str, Mapping], None]]:
        return {
            "hello": self._on_hello,
            "status": self._on_status,
            "load": self._on_load,
            "unload": self._on_unload,
            "cancel": self._on_cancel,
            "chat": self._on_chat,
            "explain": self._on_explain,
            "fix": self._on_fix,
            "edit": self._on_edit,
            "complete": self._on_complete,
            "prewarm": self._on_prewarm,
            "context-preview": self._on_context_preview,
        }

    # -- requests --------------------------------------------------------------------------------

    def _on_hello(self, request_id: str, data: Mapping) -> None:
        version = data["protocol_version"]
        if version != PROTOCOL_VERSION:
            raise BadRequest(
                f"The front end speaks protocol {version}, this kernel's jupyter-codellama "
                f"{__version__} speaks {PROTOCOL_VERSION}: update both to the same release.",
                "protocol_version",
            )
        if self._unsubscribe is None:
            self._unsubscribe = self.engine.on_status(
                lambda status: self.send({"type": "status", "request_id": None, "status": status})
            )
        self.send(
            {
                "type": "hello",
                "request_id": request_id,
                "protocol_version": PROTOCOL_VERSION,
                "kernel_version": __version__,
                "status": self.engine.status(),
                "capabilities": {
                    "models": self._model_choices(),
                    "default_model": self.engine.config.model or None,
                },
            }
        )

    def _model_choices(self) -> list[dict]:
        """The picker's models: the catalogue, or what the configured endpoint serves."""
        if self.engine.config.endpoint:
            from .engine.remote import served_model_choices

            return served_model_choices(self.engine.config)
        from .models import CATALOGUE

        return [spec.to_dict() for spec in CATALOGUE]

    def _on_status(self, request_id: str, data: Mapping) -> None:
        self.send({"type": "status", "request_id": request_id, "status": self.engine.status()})

    def _on_load(self, request_id: str, data: Mapping) -> None:
        model = get(data, "model")
        options = {k: get(data, k) for k in ("quantization", "gpu_memory", "cpu_memory", "device")}
        try:
            from .engine.loading import parse_memory

            for key in ("gpu_memory", "cpu_memory"):
                if options[key] is not None:
                    parse_memory(options[key])
            handle = self.engine.load(model, **{k: v for k, v in options.items() if v is not None})
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc

        def reply() -> None:
            try:
                status = handle.wait()
            except Exception as exc:  # noqa: BLE001 - reported to the front end
                self.error(request_id, "load_failed", str(exc))
            else:
                self.send({"type": "done", "request_id": request_id, "status": status})

        threading.Thread(target=reply, name=f"codellama-load-{request_id}", daemon=True).start()

    def _on_unload(self, request_id: str, data: Mapping) -> None:
        def unload() -> None:
            try:
                self.engine.unload()
            except TimeoutError as exc:
                self.error(request_id, "busy", str(exc))
            except Exception as exc:  # noqa: BLE001 - the request still gets its one answer
                log.exception("unload failed")
                self.error(request_id, "internal", f"{type(exc).__name__}: {exc}")
            else:
                self.send({"type": "done", "request_id": request_id, "status": self.engine.status()})

        threading.Thread(target=unload, name=f"codellama-unload-{request_id}", daemon=True).start()

    def _on_cancel(self, request_id: str, data: Mapping) -> None:
        target = data["target_id"]
        # Only this connection's own requests: another notebook's ids are not ours to stop.
        job = self._jobs.get(target)
        found = job is not None and not job.done
        if job is not None and found:
            job.cancel()
        self.send({"type": "done", "request_id": request_id, "target_id": target, "cancelled": found})

    def _on_chat(self, request_id: str, data: Mapping) -> None:
        self._submit_chat(request_id, data, chat_spec(data, self._kernel, self._default_max))

    def _on_explain(self, request_id: str, data: Mapping) -> None:
        self._submit_chat(request_id, data, cell_spec(data, self._kernel, self._default_max, ExplainRequest))

    def _on_fix(self, request_id: str, data: Mapping) -> None:
        self._submit_chat(request_id, data, cell_spec(data, self._kernel, self._default_max, FixRequest))

    @property
    def _default_max(self) -> int:
        return self.engine.config.max_new_tokens

    def _on_edit(self, request_id: str, data: Mapping) -> None:
        """Rewrite the current cell (or its selection) by instruction. Only the kernel knows how
        an answer becomes the cell (a fenced chat answer, or an infilled middle), so every reply
        carries the cell's whole new ``source``; nothing in the notebook changes here."""
        spec = cell_spec(data, self._kernel, self._default_max, EditRequest)
        assert isinstance(spec, EditRequest)
        proposal = _EditProposal(spec)
        self._submit_chat(request_id, data, proposal.build, annotate=proposal.annotate)

    def _submit_chat(
        self, request_id: str, data: Mapping, spec, *, annotate: Callable[[dict], None] | None = None
    ) -> None:
        opts = generation_options(data, self._default_max)
        opts.setdefault("max_time", self.engine.config.max_time)
        self._submit("chat", request_id, spec, opts, annotate=annotate)

    def _on_complete(self, request_id: str, data: Mapping) -> None:
        spec = infill_spec(data, self._kernel)
        prefix, suffix = spec.prefix, spec.suffix
        opts = generation_options(data, 64)
        # The kernel alone decides (the front end shows one line while streaming unless told).
        multiline = get(data, "multiline")
        if multiline is None:
            multiline = wants_multiline(prefix)
        request = CompleteRequest(
            request_id, prefix, suffix, multiline=multiline, prefetch=get(data, "prefetch", False), data=data
        )
        if self._reused(request):
            return
        if not opts["stop"]:
            # One line, or one block: a blank line or a Markdown fence ends a multi-line
            # suggestion (small models go on with prose and further cells).
            opts["stop"] = ("\n",) if not multiline else MULTILINE_STOPS

        def finish(text: str, stop_reason: str = "stop") -> str:
            from .prompts import clean_completion

            shown = clean_completion(text, prefix, suffix, truncated=stop_reason in ("time", "length"))
            self.suggestions.generated(request, shown, stop_reason)
            return shown

        if request.prefetch:  # quiet: nobody waits for it yet, and it gives way to one who does
            opts.update(background=True, record_latency=False)
        sink = self.suggestions.chunk_sink(request_id, self.send) if request.prefetch else None
        self._submit(
            "completion",
            request_id,
            spec,
            opts,
            finish=finish,
            stream=get(data, "stream", True),
            told={"multiline": multiline},
            chunks_to=sink,
        )

    def _reused(self, request: CompleteRequest) -> bool:
        """Whether ``request`` is answered without a generation of its own: typed through,
        prefetched, or joined to the prefetch with its fields that is still generating."""
        reused = self.suggestions.answer(request, self.send)
        if isinstance(reused, str) and reused in self._jobs:  # cancelling the request stops the prefetch
            self._jobs[request.request_id] = self._jobs[reused]
        return bool(reused)

    def _on_prewarm(self, request_id: str, data: Mapping) -> None:
        """Prefill the notebook context into the KV cache (a cell got focus), generating nothing."""
        spec = infill_spec(data, self._kernel)
        self._submit("completion", request_id, spec, {"max_new_tokens": 1, "record_latency": False}, stream=False)

    def _on_context_preview(self, request_id: str, data: Mapping) -> None:
        if self.engine.loaded is None:
            self.error(request_id, "not_loaded", "Load a model first: the preview depends on its tokenizer.")
            return
        spec = self._preview_spec(get(data, "for", "chat"), data)
        from .prompts import context_preview

        def reply(call) -> None:
            if call.error is None:
                self.send({"type": "done", "request_id": request_id, "preview": call.value})
            else:
                self.error(request_id, *_error_reply(call.error))

        # The prompt is built where the engine tokenizes, never beside it (see ModelCall).
        self.engine.run_with_model(lambda loaded: context_preview(spec(loaded)), on_done=reply)

    def _preview_spec(self, target: str, data: Mapping):
        if target == "complete":
            return infill_spec(data, self._kernel)
        if target == "chat":
            return chat_spec(data, self._kernel, self._default_max)
        return cell_spec(data, self._kernel, self._default_max, _CELL_TASKS[target])


_CELL_TASKS = {"explain": ExplainRequest, "fix": FixRequest, "edit": EditRequest}
#: A streamed edit re-sends the cell's whole source: at most this often, so a long cell does not
#: multiply the traffic by the number of tokens.
_EDIT_SOURCE_INTERVAL_S = 0.1


class _EditProposal(EditProposal):
    """An edit whose replies carry the cell's new source as its answer streams in."""

    def __init__(self, spec: EditRequest) -> None:
        super().__init__(spec)
        self._answer = ""
        self._shown = spec.source
        self._shown_at = 0.0

    def annotate(self, reply: dict) -> None:
        if reply["type"] == "chunk":
            self._on_chunk(reply)
        else:
            self._on_done(reply)

    def _on_chunk(self, chunk: dict) -> None:
        self._answer += chunk["text"]
        now = time.monotonic()
        if now - self._shown_at < _EDIT_SOURCE_INTERVAL_S:
            return
        source = self.source(self._answer)
        if source != self._shown:
            chunk["source"] = self._shown = source
            self._shown_at = now

    def _on_done(self, done: dict) -> None:
        source = self.source(done["text"])
        form = self.form
        done.update(source=source, changed=source != self.spec.source, form=form)
        if form == "chat" and not done["changed"] and "```" not in done["text"]:
            done["note"] = "The answer held no code block: the cell stays as it was."
        elif done["stop_reason"] == "length":
            done["note"] = "The answer reached its length limit: the proposal may be cut short."


def _error_reply(exc: BaseException) -> tuple[str, str]:
    """(code, message) for an exception raised while building a prompt on the engine thread."""
    code = getattr(exc, "code", None)
    if isinstance(exc, PromptTooLongError):
        return "prompt_too_long", str(exc)
    if code in ERROR_CODES:
        return code, str(exc)
    if isinstance(exc, (ValueError, TypeError)):
        return "bad_request", str(exc)
    log.error("building a prompt failed", exc_info=exc)
    return "internal", f"{type(exc).__name__}: {exc}"


#: Where a multi-line suggestion ends.
MULTILINE_STOPS = ("\n\n", "```")


def wants_multiline(prefix: str) -> bool:
    """A block may follow an empty line, a line ending in ':' (outside brackets) or a comment;
    anywhere else the suggestion finishes the line. Only the kernel applies this rule: its
    ``chunk`` and ``done`` replies tell the front end what it decided."""
    line = prefix.rsplit("\n", 1)[-1]
    stripped = line.strip()
    return not stripped or stripped.startswith("#") or (stripped.endswith(":") and _bracket_depth(stripped) == 0)


def _bracket_depth(line: str) -> int:
    """Brackets left open on ``line``, quoted text ignored: ``{"a": 1, "b":`` opens no block."""
    depth, quote, i = 0, None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        i += 1
    return depth


# ---------------------------------------------------------------------------------------------
# Registration with the kernel


def _route_requests_by_their_header(comm) -> None:
    """Keep each incoming request on the subshell the frontend sent it to.

    ipykernel 7.4 routes a comm's incoming messages to the subshell of the message the kernel
    was handling when the comm last *sent* something (``BaseComm._reply_subshell_for``, made for
    widgets that await a frontend reply). Our answers are sent from the engine thread, where
    "the message being handled" is whatever any shell handled last, often the main shell's
    running cell; the frontend's next request, sent on its own subshell, was then queued behind
    that cell (the chat's intermittent "kernel busy" while a cell runs). Our protocol never
    awaits a frontend reply inside the kernel, so the message's own header is always right.
    """
    if hasattr(comm, "_reply_subshell_for"):
        comm._reply_subshell_for = lambda _data, default: default


def register_comm_target(shell=None) -> bool:
    """Register the ``jupyter_codellama`` target; False outside a kernel (plain IPython)."""
    try:
        from comm import get_comm_manager

        manager = get_comm_manager()
    except Exception:  # noqa: BLE001 - no kernel: the magics still work
        return False
    if manager is None or not hasattr(manager, "register_target"):
        return False

    def namespace() -> Mapping:
        from .session import user_variables

        return user_variables(shell) if shell is not None else {}

    def judge(cells: list) -> list:
        from .session import get_session

        return get_session().runs.judged(cells, shell)

    def on_open(comm, open_msg) -> None:
        _route_requests_by_their_header(comm)
        session = CommSession(comm.send, namespace=namespace, judge=judge if shell is not None else None)
        comm.on_msg(lambda msg: session.handle(msg.get("content", {}).get("data")))
        comm.on_close(lambda _msg: session.close())

    manager.register_target(COMM_TARGET, on_open)
    return True
