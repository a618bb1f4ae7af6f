"""Matrix-vector microbenchmark of the C kernel's K-quants (kernels/kquants.c), one core.

    python benchmarks/matvec_k.py                         # Q4_K, Q5_K, Q6_K; both builds
    python benchmarks/matvec_k.py --variants avx2 --repeats 9 --working-set-mb 0

For each type, a random weight of each shape is built in the kernel's layout (random quants and
scales, sane fp16 super-block scales) and multiplied by a random fp32 vector with
``jcl_test_dot_rows`` (single-threaded: x_aux, then dot_group4 over every group of 4 rows).
Copies of the weight are cycled through until the working set reaches ``--working-set-mb``, so
the weights stream from memory as in decoding a real model (0: one copy, which stays in the
last-level cache when it fits: the kernel's own speed). Printed: the median over ``--repeats``
passes of G weights/s and GB/s of weight bytes read.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_codellama.engine import kernels  # noqa: E402
from jupyter_codellama.engine.kernels import layout  # noqa: E402

SOURCES = ("quants.c", "kquants.c")
KINDS = {"Q4_K": layout.Q4_K, "Q5_K": layout.Q5_K, "Q6_K": layout.Q6_K}
SHAPES = ((4096, 11008), (11008, 4096))
# Byte offsets of the fp16 super-block scales: Q4_K/Q5_K d and dmin first, Q6_K d last.
F16_AT = {layout.Q4_K: (0, 2), layout.Q5_K: (0, 2), layout.Q6_K: (208,)}


def random_weight(kind: int, N: int, K: int, rng: np.random.Generator) -> np.ndarray:
    """A weight already in the kernel layout: random bytes, then sane fp16 scales in place."""
    buf = rng.integers(0, 256, layout.packed_nbytes(kind, N, K), dtype=np.uint8)
    blocks = buf.reshape(-1, layout.BLOCKS[kind][1])
    for at in F16_AT[kind]:
        d = (rng.random(blocks.shape[0], dtype=np.float32) * 1e-3).astype(np.float16)
        blocks[:, at : at + 2] = d.view(np.uint8).reshape(-1, 2)
    return buf


def bench(lib, kind: int, N: int, K: int, working_set: int, repeats: int,
          rng) -> tuple[float, float]:
    one = random_weight(kind, N, K, rng)
    copies = max(1, -(-working_set // one.nbytes))
    pool = np.empty((copies, one.nbytes), dtype=np.uint8)
    pool[:] = one
    wts = [layout.make_wt(pool[c], kind, N, K) for c in range(copies)]
    x = rng.standard_normal(K, dtype=np.float32)
    y = np.empty(N, dtype=np.float32)
    xp, yp = (a.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for a in (x, y))
    for wt in wts:  # fault the pages in, warm the code
        lib.jcl_test_dot_rows(ctypes.byref(wt), xp, yp)
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for wt in wts:
            lib.jcl_test_dot_rows(ctypes.byref(wt), xp, yp)
        times.append((time.thread_time() - t0) / copies)
    t = statistics.median(times)
    return N * K / t / 1e9, one.nbytes / t / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--shapes", nargs="+", default=[f"{n}x{k}" for n, k in SHAPES],
                    help="N x K, K a multiple of 256")
    ap.add_argument("--variants", nargs="+", default=["avx2", "generic"],
                    choices=["avx2", "generic"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--working-set-mb", type=int, default=1024,
                    help="bytes of weight copies cycled through (beyond the last-level cache)")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    variants = [v for v in args.variants if v != "avx2" or kernels.cpu_has_avx2()]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as cache:
        libs = {v: kernels.load_library(v, cache_dir=cache, sources=SOURCES) for v in variants}
        for lib in libs.values():
            lib.jcl_test_dot_rows.argtypes = [ctypes.POINTER(layout.Wt),
                                              *[ctypes.POINTER(ctypes.c_float)] * 2]
        print(f"{'type':<6}{'N x K':>14}{'build':>9}{'G weights/s':>13}{'GB/s':>8}")
        for name in args.types:
            for N, K in shapes:
                for v in variants:
                    gw, gb = bench(libs[v], KINDS[name], N, K, args.working_set_mb << 20,
                                   args.repeats, rng)
                    print(f"{name:<6}{f'{N}x{K}':>14}{v:>9}{gw:>13.2f}{gb:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
