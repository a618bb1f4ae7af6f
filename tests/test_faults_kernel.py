"""Faults in a real kernel, driven as a front end would: interrupts, a failed load and its retry,
unload while answering, two notebooks on one kernel, a notebook closed mid-answer.

After each one, every request has ended exactly once and the kernel (and model) still answer.
"""

import itertools
import time

import pytest

from jupyter_codellama.testing.kernel_comm import KernelComm

pytestmark = pytest.mark.slow

LONG = [{"role": "user", "content": "Explain Python's data model in great detail, with many examples."}]
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def kernel():
    k = KernelComm(startup_code="%codellama load embedded")
    yield k
    k.shutdown()


@pytest.fixture
def comm(kernel):
    comm_id = kernel.open_comm()
    ensure_ready(kernel, comm_id)
    yield comm_id
    kernel.close_comm(comm_id)


def ask(kernel, comm_id, data):
    request_id = f"{data['type']}-{next(_ids)}"
    kernel.send(comm_id, {**data, "request_id": request_id})
    return request_id


def status(kernel, comm_id):
    return kernel.wait_terminal(comm_id, ask(kernel, comm_id, {"type": "status"}), timeout=30)["status"]


def ensure_ready(kernel, comm_id):
    if status(kernel, comm_id)["state"] != "ready":
        done = kernel.wait_terminal(comm_id, ask(kernel, comm_id, {"type": "load", "model": "embedded"}), timeout=300)
        assert done["type"] == "done", done


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def long_chat(kernel, comm_id, request_id=None):
    request_id = request_id or f"long-{next(_ids)}"
    kernel.send(
        comm_id, {"type": "chat", "request_id": request_id, "max_new_tokens": 2000, "temperature": 0, "messages": LONG}
    )
    kernel.wait_for(comm_id, request_id, "chunk", timeout=120)
    return request_id


def assert_answers(kernel, comm_id):
    assert kernel.alive()
    request_id = ask(
        kernel, comm_id, {"type": "chat", "max_new_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]}
    )
    assert kernel.wait_terminal(comm_id, request_id)["type"] == "done"


def test_an_interrupt_during_a_magic_answer_stops_it_and_the_comm_still_answers(kernel, comm):
    kernel.use_subshell(comm)  # the sidebar's status while the cell runs
    cell = kernel.start_cell(
        "%%codellama --max-new-tokens 2000 --temperature 0\n"
        "Explain Python's data model in great detail, with many examples."
    )
    wait_until(lambda: status(kernel, comm)["busy"], 120, "the magic never started generating")
    kernel.interrupt()
    reply = kernel.cell_reply(cell, timeout=60)
    assert reply["status"] in ("ok", "error"), reply
    wait_until(lambda: not status(kernel, comm)["busy"], 10, "the interrupted answer kept the engine busy")
    assert_answers(kernel, comm)


def test_an_interrupt_while_the_comm_streams_ends_that_request_once(kernel, comm):
    request_id = long_chat(kernel, comm)
    kernel.interrupt()  # the main shell is idle: the engine thread must not care
    kernel.send(comm, {"type": "cancel", "request_id": "stop-it", "target_id": request_id})
    assert kernel.wait_terminal(comm, request_id, timeout=60)["stop_reason"] == "cancelled"
    assert len(kernel.terminal(comm, request_id)) == 1
    assert_answers(kernel, comm)


def test_a_load_that_runs_out_of_memory_fails_clearly_and_a_retry_loads(kernel, comm):
    kernel.execute(
        "import torch, jupyter_codellama.engine.engine as _w\n"
        "_real_load = _w.load_model\n"
        "def _oom_once(*args, **kwargs):\n"
        "    _w.load_model = _real_load\n"
        "    raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
        "_w.load_model = _oom_once\n"
    )
    failed = kernel.wait_terminal(comm, ask(kernel, comm, {"type": "load", "model": "embedded"}), timeout=120)
    assert failed["type"] == "error" and failed["code"] == "load_failed"
    assert "out of memory" in failed["message"]
    assert status(kernel, comm)["state"] == "error"
    retried = kernel.wait_terminal(comm, ask(kernel, comm, {"type": "load", "model": "embedded"}), timeout=300)
    assert retried["type"] == "done" and retried["status"]["state"] == "ready"
    assert_answers(kernel, comm)


def test_unload_during_an_answer_cancels_it_and_a_reload_answers(kernel, comm):
    request_id = long_chat(kernel, comm)
    unloaded = kernel.wait_terminal(comm, ask(kernel, comm, {"type": "unload"}), timeout=60)
    assert unloaded["type"] == "done" and unloaded["status"]["state"] == "unloaded"
    ends = kernel.terminal(comm, request_id)
    assert len(ends) == 1 and ends[0]["stop_reason"] == "cancelled", ends
    ensure_ready(kernel, comm)
    assert_answers(kernel, comm)


def test_two_notebooks_on_one_kernel_get_their_own_answers(kernel, comm):
    other = kernel.open_comm()
    try:
        first = long_chat(kernel, comm, "same-id")
        kernel.send(
            other,
            {
                "type": "chat",
                "request_id": "same-id",
                "max_new_tokens": 8,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Say hi."}],
            },
        )
        kernel.send(comm, {"type": "cancel", "request_id": "c", "target_id": first})
        mine = kernel.wait_terminal(comm, "same-id", timeout=60)
        theirs = kernel.wait_terminal(other, "same-id", timeout=120)
        assert mine["stop_reason"] == "cancelled" and theirs["type"] == "done"
        assert theirs["stop_reason"] != "cancelled", "a cancel from one notebook stopped the other's answer"
        for comm_id, done in ((comm, mine), (other, theirs)):
            chunks = [r["text"] for r in kernel.replies(comm_id, "same-id") if r["type"] == "chunk"]
            assert "".join(chunks) == done["text"], "answers crossed between the notebooks"
            assert len(kernel.terminal(comm_id, "same-id")) == 1
    finally:
        kernel.close_comm(other)


def test_a_notebook_closed_mid_answer_cancels_its_job(kernel, comm):
    closing = kernel.open_comm()
    long_chat(kernel, closing)
    assert status(kernel, comm)["busy"]
    kernel.close_comm(closing)
    wait_until(lambda: not status(kernel, comm)["busy"], 10, "the closed notebook's answer kept running")
    assert_answers(kernel, comm)
