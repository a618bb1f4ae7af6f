"""An ipywidgets chat (``%codellama chat``) for front ends without the JupyterLab extension.

History is the kernel session's (shared with ``%%codellama``), answers stream, Stop cancels.
Each answer with code gets two buttons:

* **Run** executes the code in the kernel now and shows its output under the answer;
* **Insert as cell** queues the code as the next input. A widget click is not a cell
  execution, so front ends create the cell with the *next* execution's reply: re-run the chat
  cell (Shift+Enter) and the code appears in a new cell below it; the conversation is kept.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as w

from .engine import EngineUser
from .prompts.chat import ChatMessage
from .prompts.requests import ChatRequest
from .session import get_session, user_variables

_UPDATE_EVERY_S = 0.15
_TEXT_STYLE = (
    "white-space: pre-wrap; font-family: var(--jp-code-font-family, monospace); "
    "font-size: var(--jp-code-font-size, 13px); margin: 0"
)


def _html(text: str, who: str) -> str:
    label = "You" if who == "user" else "Code Llama"
    return f"<b>{label}</b><pre style='{_TEXT_STYLE}'>{html.escape(text)}</pre>"


class _Answer:
    """One answer: streamed text, then Run / Insert buttons when it holds code."""

    def __init__(self, chat: "ChatWidget") -> None:
        self._chat = chat
        self.text = w.HTML(_html("…", "assistant"))
        self.run = w.Button(
            description="Run", icon="play", tooltip="Run this code in the kernel now", layout=w.Layout(display="none")
        )
        self.insert = w.Button(
            description="Insert as cell",
            icon="plus",
            tooltip="Queue the code as a new cell (re-run the chat cell to place it)",
            layout=w.Layout(display="none"),
        )
        self.note = w.HTML()
        self.output = w.Output()
        self.box = w.VBox([self.text, w.HBox([self.run, self.insert]), self.note, self.output])
        self.code = ""
        self._shown_at = 0.0
        self.run.on_click(lambda _b: self._run())
        self.insert.on_click(lambda _b: self._insert())

    def stream(self, text: str) -> None:
        if time.monotonic() - self._shown_at >= _UPDATE_EVERY_S:
            self.text.value = _html(text, "assistant")
            self._shown_at = time.monotonic()

    def finish(self, text: str, footer: str) -> None:
        from .prompts import extract_code

        self.text.value = _html(text, "assistant") + f"<i>{html.escape(footer)}</i>"
        self.code = extract_code(text)
        if self.code:
            self.run.layout.display = self.insert.layout.display = None

    def _run(self) -> None:
        with self.output:
            self._chat.shell.run_cell(self.code, store_history=True)

    def _insert(self) -> None:
        self._chat.shell.set_next_input(self.code, replace=False)
        self.note.value = (
            "<i>Queued: re-run the chat cell (Shift+Enter) and the code appears in a "
            "new cell below it. The conversation is kept.</i>"
        )


class ChatWidget(EngineUser):
    """The widget tree plus its behaviour; ``.widget`` is what a cell displays."""

    def __init__(self, shell, *, engine=None, max_new_tokens: int | None = None) -> None:
        from .config import get_config

        self.shell = shell
        self._engine = engine
        self._max_new_tokens = max_new_tokens or get_config().max_new_tokens
        self._job = None
        self._lock = threading.Lock()
        self.messages = w.VBox()
        self.input = w.Textarea(
            placeholder="Ask for code, an explanation, a fix…  (Send or Ctrl+Enter)",
            layout=w.Layout(width="100%", height="5em"),
        )
        self.send = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.clear = w.Button(description="New chat", icon="trash")
        self.status = w.HTML()
        self.widget = w.VBox([self.messages, self.input, w.HBox([self.send, self.stop, self.clear]), self.status])
        self.send.on_click(lambda _b: self.ask(self.input.value))
        self.stop.on_click(lambda _b: self.cancel())
        self.clear.on_click(lambda _b: self.new_chat())
        for turn in get_session().history:
            self.messages.children += (w.HTML(_html(turn["content"], turn["role"])),)

    def ask(self, request: str) -> Any:
        """Send ``request``; returns the engine job (None when there was nothing to send)."""
        request = request.strip()
        if not request or self._job is not None:
            return None
        self.input.value = ""
        answer = _Answer(self)
        self.messages.children += (w.HTML(_html(request, "user")), answer.box)
        messages: list[ChatMessage] = [*get_session().history, {"role": "user", "content": request}]
        max_new = self._max_new_tokens
        pieces: list[str] = []

        # The kernel's namespace: its secrets' values are redacted from the messages.
        spec = ChatRequest(messages=messages, namespace=user_variables(self.shell), max_new_tokens=max_new)

        def on_chunk(text: str) -> None:
            pieces.append(text)
            answer.stream("".join(pieces))

        def on_done(job) -> None:
            try:
                self._show_result(job.result, answer, request)
                self.status.value = ""
            except Exception as exc:  # noqa: BLE001 - the chat must take the next question
                self.status.value = f"<i>The answer could not be shown: {html.escape(repr(exc))}</i>"
                raise
            finally:
                with self._lock:
                    self._job = None
                self.send.disabled, self.stop.disabled = False, True

        if self.engine.status()["state"] != "ready":
            self.status.value = "<i>Loading the model first (progress: %codellama status)…</i>"
        self.send.disabled, self.stop.disabled = True, False
        with self._lock:
            self._job = self.engine.submit(
                "chat",
                spec,
                on_chunk=on_chunk,
                on_done=on_done,
                max_new_tokens=max_new,
                max_time=self.engine.config.max_time,
            )
            return self._job

    @staticmethod
    def _show_result(result, answer: _Answer, request: str) -> None:
        if result.stop_reason == "error":
            answer.finish("", f"error: {result.error}")
            return
        answer.finish(result.text, f"{len(result.tokens)} tokens · stop: {result.stop_reason}")
        if result.stop_reason != "cancelled":
            get_session().add_exchange(request, result.text)

    def cancel(self) -> None:
        with self._lock:
            if self._job is not None:
                self._job.cancel()

    def new_chat(self) -> None:
        self.cancel()
        get_session().reset()
        self.messages.children = ()
