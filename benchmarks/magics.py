"""Magics latency in a real kernel: ``%load_ext`` time and ``%%codellama`` time to first token.

    python benchmarks/magics.py [--kernels 3] [--requests 5]

``%load_ext`` is timed inside fresh kernels (it must stay well under a second: no torch, no
model). Time to first token is measured from sending the ``%%codellama`` cell to the first
streamed Markdown that holds answer text, with the embedded model already loaded; the first
request of a kernel (imports, cold caches) is reported on its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from jupyter_client.manager import start_new_kernel

REQUESTS = [
    "Write a function that returns the squares of a list of numbers.",
    "Write a function that counts the vowels in a string.",
    "Write a function that reverses the words of a sentence.",
    "Write a function that returns the largest of three numbers.",
    "Write a function that checks whether a year is a leap year.",
]


def load_ext_seconds(kc) -> float:
    code = "import time as _t\n_t0 = _t.perf_counter()\n%load_ext jupyter_codellama\nprint(_t.perf_counter() - _t0)"
    out: list[str] = []
    kc.execute_interactive(
        code,
        timeout=120,
        output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
    )
    return float("".join(out).split()[-1])


def first_token_seconds(kc, request: str) -> float:
    sent = time.perf_counter()
    first: list[float] = []

    def hook(msg) -> None:
        if first or msg["msg_type"] not in ("display_data", "update_display_data"):
            return
        text = msg["content"]["data"].get("text/markdown", "")
        if text.strip() and text.strip() != "*…*":
            first.append(time.perf_counter() - sent)

    kc.execute_interactive(f"%%codellama --max-new-tokens 32 --insert none\n{request}", timeout=300, output_hook=hook)
    return first[0] if first else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", type=int, default=3)
    p.add_argument("--requests", type=int, default=5)
    args = p.parse_args()

    load_times, first_requests, warm = [], [], []
    for k in range(args.kernels):
        km, kc = start_new_kernel(kernel_name="python3", env={**os.environ})
        try:
            load_times.append(load_ext_seconds(kc))
            kc.execute_interactive("%codellama load embedded", timeout=300, output_hook=lambda _m: None)
            first_requests.append(first_token_seconds(kc, REQUESTS[0]))
            if k == 0:
                warm = [first_token_seconds(kc, r) for r in REQUESTS[1 : args.requests + 1]]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    print(
        f"%load_ext jupyter_codellama (fresh kernel, median of {len(load_times)}): "
        f"{statistics.median(load_times) * 1000:.0f} ms"
    )
    print(
        f"%%codellama time to first token, first request in a kernel (median of {len(first_requests)}): "
        f"{statistics.median(first_requests) * 1000:.0f} ms"
    )
    print(
        f"%%codellama time to first token, later requests (median of {len(warm)}): "
        f"{statistics.median(warm) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
