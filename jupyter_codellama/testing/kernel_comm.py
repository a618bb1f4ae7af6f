"""A real kernel with ``jupyter_codellama`` loaded, driven over ``jupyter_client`` as a front end
would: comms opened and closed, requests sent, every reply collected by comm and request id.

For the fuzzing, fault and soak tests and their benchmarks. One reader thread owns the iopub
channel (``execute_interactive`` would swallow comm replies), so cells run through
:meth:`KernelComm.execute`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from ..comm import COMM_TARGET

#: Reply types that end a request (each request gets exactly one).
TERMINAL = ("done", "error", "hello", "status")


class KernelComm:
    def __init__(self, *, env: dict[str, str] | None = None, startup_code: str = "") -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", env={**os.environ, **(env or {})})
        self._replies: dict[tuple[str, Any], list[dict]] = defaultdict(list)
        self._outputs: dict[str, list[dict]] = defaultdict(list)
        self._shell_replies: dict[str, dict] = {}
        self.subshells: dict[str, str] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="kernel-comm-reader", daemon=True)
        self._reader.start()
        self.execute("%load_ext jupyter_codellama\n" + startup_code)

    # -- cells -----------------------------------------------------------------------------------

    def execute(self, code: str, timeout: float = 120) -> dict:
        """Run a cell; its reply content, with ``"stdout"`` added (what it printed)."""
        return self.cell_reply(self.start_cell(code), timeout)

    def start_cell(self, code: str) -> str:
        """Start running a cell and return at once; :meth:`cell_reply` waits for it."""
        return self.kc.execute(code)

    def cell_reply(self, msg_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while msg_id not in self._shell_replies:
            try:
                reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the cell {msg_id} did not finish within {timeout} s") from None
            # Another cell's reply (one started earlier) is kept for its own waiter.
            self._shell_replies[reply["parent_header"].get("msg_id")] = reply
        reply = self._shell_replies.pop(msg_id)
        self._wait_idle(msg_id, deadline)
        with self._cond:
            outputs = self._outputs.pop(msg_id, [])
        content = dict(reply["content"])
        content["stdout"] = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
        return content

    def alive(self, timeout: float = 60) -> bool:
        """The kernel is up and still runs cells."""
        return self.km.is_alive() and self.execute("1 + 1", timeout=timeout)["status"] == "ok"

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    # -- comms -----------------------------------------------------------------------------------

    def open_comm(self) -> str:
        comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": comm_id, "target_name": COMM_TARGET, "data": {}})
        return comm_id

    def close_comm(self, comm_id: str) -> None:
        self._send("comm_close", {"comm_id": comm_id, "data": {}})

    def send(self, comm_id: str, data: Any) -> None:
        self._send("comm_msg", {"comm_id": comm_id, "data": data}, self.subshells.get(comm_id))

    def use_subshell(self, comm_id: str) -> None:
        """Send ``comm_id``'s requests on a kernel subshell of their own, as JupyterLab does, so
        they are answered while a cell runs."""
        self.kc.control_channel.send(self.kc.session.msg("create_subshell_request", {}))
        self.subshells[comm_id] = self.kc.control_channel.get_msg(timeout=30)["content"]["subshell_id"]

    def replies(self, comm_id: str, request_id: Any) -> list[dict]:
        with self._cond:
            return list(self._replies[(comm_id, request_id)])

    def terminal(self, comm_id: str, request_id: Any) -> list[dict]:
        """The replies that ended ``request_id`` (unsolicited status broadcasts excluded)."""
        return [
            r
            for r in self.replies(comm_id, request_id)
            if r.get("type") in TERMINAL and not (request_id is None and r.get("type") == "status")
        ]

    def wait_terminal(self, comm_id: str, request_id: Any, timeout: float = 120) -> dict:
        """The first terminal reply to ``request_id``; AssertionError when none came in time."""
        self.wait_all(comm_id, [request_id], timeout)
        return self.terminal(comm_id, request_id)[0]

    def wait_all(self, comm_id: str, request_ids: list[Any], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = [r for r in request_ids if not self._has_terminal(comm_id, r)]
                if not missing:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no terminal reply to {len(missing)} request(s), e.g. {missing[:3]}")
                self._cond.wait(min(left, 0.5))

    def wait_for(self, comm_id: str, request_id: Any, reply_type: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for reply in self._replies[(comm_id, request_id)]:
                    if reply.get("type") == reply_type:
                        return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {reply_type} for {request_id}")
                self._cond.wait(min(left, 0.5))

    def shutdown(self) -> None:
        self._stop.set()
        self._reader.join(5)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    # -- plumbing --------------------------------------------------------------------------------

    def _has_terminal(self, comm_id: str, request_id: Any) -> bool:
        return any(
            r.get("type") in TERMINAL
            for r in self._replies[(comm_id, request_id)]
            if not (request_id is None and r.get("type") == "status")
        )

    def _send(self, msg_type: str, content: dict, subshell_id: str | None = None) -> None:
        msg = self.kc.session.msg(msg_type, content)
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        self.kc.shell_channel.send(msg)

    def _wait_idle(self, msg_id: str, deadline: float) -> None:
        """Outputs arrive on iopub after the shell reply; the cell's ``idle`` status ends them."""
        with self._cond:
            while not any(o.get("execution_state") == "idle" for o in self._outputs[msg_id]):
                if time.monotonic() > deadline:
                    return
                self._cond.wait(0.2)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - channels closing at shutdown
                if self._stop.is_set():
                    return
                continue
            with self._cond:
                self._record(msg)
                self._cond.notify_all()

    def _record(self, msg: dict) -> None:
        content = msg.get("content", {})
        if msg["msg_type"] == "comm_msg":
            data = content.get("data")
            request_id = data.get("request_id") if isinstance(data, dict) else None
            if not isinstance(request_id, (str, type(None))):
                request_id = repr(request_id)  # a reply that broke the protocol: still recorded
            self._replies[(content.get("comm_id"), request_id)].append(data)
        elif msg["msg_type"] in ("stream", "status"):
            parent = msg.get("parent_header", {}).get("msg_id")
            if parent:
                self._outputs[parent].append(content)
