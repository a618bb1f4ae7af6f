"""Soak: keystroke completions with random cancels plus chats, from two notebooks at once, in a
real kernel (see ``jupyter_codellama/testing/soak.py``).

    python benchmarks/soak.py                          # 2,000 completions + 50 chats after a warm-up
    python benchmarks/soak.py --completions 500 --chats 10

Prints the kernel's resident memory growth after the warm-up (target: under 10 %), its thread
count after the warm-up and at the end (no leak: not higher), and the prefix cache's bytes
against its budget. Exits 1 when a request did not end exactly once or a target is missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=2000)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument(
        "--warmup",
        type=int,
        default=800,
        help="completions before the first measurement (enough to fill the prefix cache)",
    )
    parser.add_argument("--cancel-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="embedded")
    parser.add_argument(
        "--prefix-cache-mb",
        type=int,
        default=64,
        help="small, so that the warm-up fills the cache and its growth is not read as a leak",
    )
    args = parser.parse_args()

    from jupyter_codellama.testing.kernel_comm import KernelComm
    from jupyter_codellama.testing.soak import Soak

    kernel = KernelComm(
        startup_code=f"%config CodeLlama.prefix_cache_mb = {args.prefix_cache_mb}\n%codellama load {args.model}"
    )
    try:
        soak = Soak(kernel, seed=args.seed, cancel_rate=args.cancel_rate)
        report = soak.run(completions=args.completions, chats=args.chats, warmup=args.warmup)
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        alive = kernel.km.is_alive()
        kernel.shutdown()
    print("\n".join(report.lines()))
    ok = (
        alive
        and report.rss_growth < 0.10
        and report.threads_end <= report.threads_warm
        and report.prefix_cache_bytes <= report.prefix_cache_max_bytes
    )
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
