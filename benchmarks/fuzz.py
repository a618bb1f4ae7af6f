"""Protocol fuzzing of the comm in a real kernel, at full size (the tests run a CI-sized share).

    python benchmarks/fuzz.py                     # 10,000 messages, embedded model
    python benchmarks/fuzz.py --messages 2000

Hypothesis draws batches of messages (valid requests, the same with a field dropped, retyped or
made huge, unknown types, broken request ids, non-objects, cancels of the requests before them),
each batch on a fresh comm, ``hello`` first or not (see ``jupyter_codellama/testing/protocol_fuzz.py``).
After every batch: each request has exactly one terminal reply, none is ``internal``, and the
kernel still runs a cell. Prints the counts; exits 1 on the first broken promise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages to send in all")
    parser.add_argument("--batch", type=int, default=25, help="most messages per comm")
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args()

    from hypothesis import HealthCheck, given, settings

    from jupyter_codellama.testing.kernel_comm import KernelComm
    from jupyter_codellama.testing.protocol_fuzz import FuzzRun, batch_strategy

    kernel = KernelComm(startup_code=f"%codellama load {args.model}")
    run = FuzzRun(kernel, timeout=300)
    started = time.perf_counter()

    # A few examples a call, called until the count is reached: each call draws new batches.
    @settings(
        max_examples=20, deadline=None, database=None, phases=["generate"], suppress_health_check=list(HealthCheck)
    )
    @given(batch=batch_strategy(min_size=5, max_size=args.batch))
    def fuzz(batch):
        if run.sent >= args.messages:
            return
        run.run_batch(*batch)
        if not kernel.alive():
            raise AssertionError("the kernel stopped running cells")
        if run.sent // 1000 != (run.sent - len(batch[1]) - batch[0]) // 1000:
            print(f"  {run.sent:,} messages, {time.perf_counter() - started:.0f} s", flush=True)

    try:
        while run.sent < args.messages:
            fuzz()
        run.recheck()
    except AssertionError as exc:
        print(f"FAILED after {run.sent:,} messages: {exc}")
        return 1
    finally:
        elapsed = time.perf_counter() - started
        print(f"messages sent: {run.sent:,} in {elapsed:.0f} s ({run.sent / max(elapsed, 1e-9):.0f}/s)")
        print(f"by request type: {dict(run.by_type.most_common())}")
        print(f"terminal replies: {dict(run.endings.most_common())}")
        print(f"kernel crashes: {0 if kernel.km.is_alive() else 1}")
        kernel.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
