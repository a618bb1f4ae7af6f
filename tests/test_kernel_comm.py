"""The comm through a real ipykernel: %load_ext, comm_open, requests, and answers on a subshell
while the main shell is busy running a cell."""

import os
import time
import uuid

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ})
    kc.execute_interactive("%load_ext jupyter_codellama", timeout=60)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def send(kc, msg_type, content, channel="shell", subshell_id=None):
    msg = kc.session.msg(msg_type, content)
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    getattr(kc, f"{channel}_channel").send(msg)
    return msg


def comm_replies(kc, comm_id, request_id, until=("done", "error", "hello", "status"), timeout=120):
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except Exception:  # queue.Empty
            continue
        if msg["msg_type"] != "comm_msg" or msg["content"]["comm_id"] != comm_id:
            continue
        data = msg["content"]["data"]
        if data.get("request_id") != request_id:
            continue
        got.append(data)
        if data["type"] in until:
            return got
    raise AssertionError(f"no reply to {request_id}: {got}")


def open_comm(kc):
    comm_id = uuid.uuid4().hex
    send(kc, "comm_open", {"comm_id": comm_id, "target_name": "jupyter_codellama", "data": {}})
    return comm_id


def request(kc, comm_id, data, **kw):
    send(kc, "comm_msg", {"comm_id": comm_id, "data": data}, **kw)


def test_load_ext_is_quick_and_imports_no_torch(kernel):
    _, kc = kernel
    kernel_output = []
    reply = kc.execute_interactive(
        "import sys, time\nt = time.perf_counter()\n%reload_ext jupyter_codellama\n"
        "print('torch' in sys.modules, round(time.perf_counter() - t, 3))",
        timeout=60,
        output_hook=lambda m: kernel_output.append(m),
    )
    assert reply["content"]["status"] == "ok"
    text = "".join(m["content"].get("text", "") for m in kernel_output if m["msg_type"] == "stream")
    imported, seconds = text.split()
    assert imported == "False" and float(seconds) < 1.0


def test_hello_load_and_chat_over_a_real_comm(kernel):
    _, kc = kernel
    comm_id = open_comm(kc)
    request(kc, comm_id, {"type": "hello", "request_id": "h", "protocol_version": 1})
    hello = comm_replies(kc, comm_id, "h")[-1]
    assert hello["type"] == "hello" and hello["status"]["state"] == "unloaded"

    request(kc, comm_id, {"type": "load", "request_id": "l", "model": "embedded"})
    assert comm_replies(kc, comm_id, "l")[-1]["status"]["state"] == "ready"

    request(
        kc,
        comm_id,
        {
            "type": "chat",
            "request_id": "c",
            "max_new_tokens": 24,
            "messages": [{"role": "user", "content": "Say hello in Python."}],
        },
    )
    replies = comm_replies(kc, comm_id, "c")
    assert replies[-1]["type"] == "done"
    assert "".join(r["text"] for r in replies if r["type"] == "chunk") == replies[-1]["text"]


def test_malformed_comm_message_gets_an_error_and_the_kernel_lives(kernel):
    _, kc = kernel
    comm_id = open_comm(kc)
    request(kc, comm_id, {"type": "chat", "request_id": "bad", "messages": "not a list"})
    assert comm_replies(kc, comm_id, "bad")[-1]["code"] == "bad_request"
    assert kc.execute_interactive("1 + 1", timeout=30)["content"]["status"] == "ok"


def test_status_is_answered_on_a_subshell_while_a_cell_runs(kernel):
    _, kc = kernel
    send(kc, "create_subshell_request", {}, channel="control")
    reply = kc.control_channel.get_msg(timeout=10)
    subshell = reply["content"]["subshell_id"]
    comm_id = open_comm(kc)
    kc.execute("import time; time.sleep(6)")
    time.sleep(0.5)  # the main shell is now busy
    started = time.monotonic()
    request(kc, comm_id, {"type": "status", "request_id": "busy-status"}, subshell_id=subshell)
    status = comm_replies(kc, comm_id, "busy-status", timeout=20)[-1]
    assert status["type"] == "status"
    assert time.monotonic() - started < 3, "the reply waited for the sleeping cell"


def test_requests_stay_on_their_subshell_after_answers_sent_from_the_engine_thread(kernel):
    """ipykernel 7.4 routes a comm's incoming messages to the subshell of whatever message the
    kernel was handling when the comm last *sent* (meant for widget replies). Our answers are
    sent from the engine thread, where that is the main shell's last cell: the frontend's next
    request, sent on its own subshell, then waited for any running cell. Seen as the chat's
    intermittent "kernel busy" while a cell runs."""
    _, kc = kernel
    send(kc, "create_subshell_request", {}, channel="control")
    subshell = kc.control_channel.get_msg(timeout=10)["content"]["subshell_id"]
    comm_id = open_comm(kc)
    kc.execute_interactive("pass", timeout=30)  # the main shell has opened the comm
    request(kc, comm_id, {"type": "load", "request_id": "l2", "model": "embedded"}, subshell_id=subshell)
    assert comm_replies(kc, comm_id, "l2")[-1]["status"]["state"] == "ready"
    request(
        kc,
        comm_id,
        {
            "type": "chat",
            "request_id": "c2",
            "max_new_tokens": 64,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 30."}],
        },
        subshell_id=subshell,
    )
    # While the answer streams from the engine thread, the main shell handles a message: the
    # kernel's "current parent", as the engine thread sees it, is now a main-shell one.
    assert kc.execute_interactive("x = 1", timeout=30)["content"]["status"] == "ok"
    assert comm_replies(kc, comm_id, "c2")[-1]["type"] == "done"
    kc.execute("import time; time.sleep(8)")
    time.sleep(0.5)  # the main shell is now busy
    for i in range(2):
        started = time.monotonic()
        request(kc, comm_id, {"type": "status", "request_id": f"s2-{i}"}, subshell_id=subshell)
        assert comm_replies(kc, comm_id, f"s2-{i}", timeout=20)[-1]["type"] == "status"
        assert time.monotonic() - started < 3, "the request waited for the sleeping cell"
    kc.get_shell_msg(timeout=30)  # let the cell finish before the next test


def test_cell_magic_in_a_real_kernel_streams_markdown_and_asks_for_a_new_cell(kernel):
    _, kc = kernel
    assert kc.execute_interactive("%codellama load embedded", timeout=120)["content"]["status"] == "ok"
    outputs = []
    reply = kc.execute_interactive(
        "%%codellama --max-new-tokens 60 --temperature 0\nWrite a Python function that returns 42.",
        timeout=180,
        output_hook=outputs.append,
    )
    assert reply["content"]["status"] == "ok"
    markdown = [
        m
        for m in outputs
        if m["msg_type"] in ("display_data", "update_display_data") and "text/markdown" in m["content"]["data"]
    ]
    assert len(markdown) >= 2, "the answer should be shown, then updated in place"
    final = markdown[-1]["content"]
    meta = final["metadata"]["jupyter_codellama"]
    assert meta["model"] == "embedded" and meta["stop_reason"] in ("eos", "length")
    assert "tok/s" in final["data"]["text/markdown"]
    payloads = [p for p in reply["content"].get("payload", []) if p.get("source") == "set_next_input"]
    if "```" in final["data"]["text/markdown"]:
        assert payloads and payloads[0]["text"].strip() and payloads[0]["replace"] is False


def test_usage_error_in_a_real_kernel_is_one_line_not_a_traceback(kernel):
    _, kc = kernel
    outputs = []
    reply = kc.execute_interactive("%codellama bogus", timeout=30, output_hook=outputs.append)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"
    shown = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    shown += "".join("".join(m["content"]["traceback"]) for m in outputs if m["msg_type"] == "error")
    assert "Unknown subcommand 'bogus'" in shown and "Traceback" not in shown
