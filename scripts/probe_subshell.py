"""Probe: are comm requests on a kernel subshell answered while the main shell runs a cell?

    .venv/bin/python scripts/probe_subshell.py

Starts a real kernel, loads the embedded model over the comm (on a subshell), then per trial:
a few `complete` requests and a `prewarm` (what typing in JupyterLab sends), a 12 s
`time.sleep` cell on the main shell, a `chat` request and `status` pings on the subshell. It
prints the time to the chat's first reply and each ping's latency. A healthy kernel answers in
well under a second; "first reply ≈12 s" means the request waited for the cell.

Seen on 2026-11-22 with ipykernel 7.4.0: some trials waited for the cell. The cause: ipykernel
routes a comm's incoming messages to the subshell of the message it was handling when the comm
last sent (``BaseComm._reply_subshell_for``); our answers are sent from the engine thread, where
that is often the main shell's cell. Fixed in jupyter_codellama/comm.py
(``_route_requests_by_their_header``); tests/test_kernel_comm.py reproduces the old stall. With
py-spy installed, a dump of the kernel's threads goes to /tmp/subshell-probe-spy*.txt.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from jupyter_client.manager import start_new_kernel

from test_kernel_comm import open_comm, request, send

km, kc = start_new_kernel(kernel_name="python3", env={**os.environ})
kc.execute_interactive("%load_ext jupyter_codellama", timeout=60)
send(kc, "create_subshell_request", {}, channel="control")
sub = kc.control_channel.get_msg(timeout=10)["content"]["subshell_id"]
cid = open_comm(kc)
got = {}


def reader():
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except Exception:
            continue
        if msg["msg_type"] != "comm_msg":
            continue
        d = msg["content"]["data"]
        got.setdefault(d.get("request_id"), []).append((time.monotonic(), d))


threading.Thread(target=reader, daemon=True).start()


def wait(rid, types, timeout=120):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        for at, d in got.get(rid, []):
            if d["type"] in types:
                return at, d
        time.sleep(0.01)
    return None, None


request(kc, cid, {"type": "hello", "request_id": "h", "protocol_version": 1}, subshell_id=sub)
wait("h", ("hello",))
request(kc, cid, {"type": "load", "request_id": "l", "model": "embedded"}, subshell_id=sub)
print("load", wait("l", ("done", "error"))[1]["status"]["state"])
for trial in range(3):
    cells = [
        {"cell_type": "code", "source": 'import time\ntime.sleep(30)\nprint("slept")'},
        {"cell_type": "code", "source": ""},
    ]
    src = cells[0]["source"]
    for i in range(5, len(src), 6):
        request(
            kc,
            cid,
            {
                "type": "complete",
                "request_id": f"k{trial}-{i}",
                "prefix": src[:i],
                "suffix": "",
                "cells": cells,
                "current": 0,
            },
            subshell_id=sub,
        )
        time.sleep(0.15)
    request(
        kc,
        cid,
        {"type": "prewarm", "request_id": f"w{trial}", "prefix": "", "suffix": "", "cells": cells, "current": 1},
        subshell_id=sub,
    )
    kc.execute("import time; time.sleep(12)")
    time.sleep(0.5)
    t0 = time.monotonic()
    request(
        kc,
        cid,
        {
            "type": "chat",
            "request_id": f"c{trial}",
            "max_new_tokens": 24,
            "cells": cells,
            "current": 1,
            "variables": False,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        },
        subshell_id=sub,
    )
    pings = []
    time.sleep(3)
    spy = Path(sys.executable).with_name("py-spy")
    if spy.exists():  # where each kernel thread is while the request waits (pip install py-spy)
        out = subprocess.run(
            [str(spy), "dump", "--pid", str(km.provisioner.pid)], capture_output=True, text=True
        ).stdout
        Path(f"/tmp/subshell-probe-spy{trial}.txt").write_text(out)
    for p in range(6):
        ts = time.monotonic()
        rid = f"p{trial}-{p}"
        request(kc, cid, {"type": "status", "request_id": rid}, subshell_id=sub)
        at, _ = wait(rid, ("status",), timeout=10)
        pings.append(round((at - ts) * 1000) if at else None)
        time.sleep(0.5)
    first, _ = wait(f"c{trial}", ("chunk", "done", "error"), timeout=60)
    done, d = wait(f"c{trial}", ("done", "error"), timeout=60)
    # A reply that never came prints as "none" (formatting None with :.2f raised TypeError).
    first_s = f"{first - t0:.2f}s" if first else "none"
    done_s = f"{done - t0:.2f}s" if done else "none"
    fast = d.get("status", {}).get("fast_decode") if d else None
    print(f"trial {trial}: first reply {first_s} done {done_s} pings ms {pings} fast={fast}", flush=True)
    time.sleep(12)
kc.stop_channels()
km.shutdown_kernel(now=True)
