"""Matrix-vector microbenchmark of the C kernel's weight formats (kernels/quants.c), one core.

    python benchmarks/matvec.py                          # all types, both builds
    python benchmarks/matvec.py --types Q4_0 Q8_0 --variants avx2 --repeats 9

For each type, a random weight of each shape is built in the kernel's layout (valid fp16
scales, random quants) and multiplied by a random fp32 vector with ``jcl_test_dot_rows``
(single-threaded: x_aux, then dot_group4 over every group of 4 rows). Copies of the weight are
cycled through until the working set reaches ``--working-set-mb``, so the weights stream from
memory as in decoding a real model rather than from the last-level cache. Printed: the median
over ``--repeats`` passes of G weights/s and GB/s of weight bytes read, timed in thread CPU
time (these machines are shared: time spent descheduled is not the kernel's).

Pages: numpy asks Linux for transparent huge pages on large arrays (where the kernel allows it,
``madvise`` mode included), which is how a weight repacked into a numpy array lives. A weight
read in place from a memory-mapped file sits in 4 KiB pages instead, at whose boundaries the
hardware prefetcher stops and the TLB misses more: ``--small-pages`` measures that case.
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
KINDS = {"Q4_0": layout.Q4_0, "Q8_0": layout.Q8_0, "Q4_1": layout.Q4_1, "F16": layout.F16,
         "F32": layout.F32}
SHAPES = ((4096, 11008), (11008, 4096))


def set_huge_pages(on: bool) -> None:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    multiarray._set_madvise_hugepage(on)


def random_weight(kind: int, N: int, K: int, rng: np.random.Generator) -> np.ndarray:
    """A weight already in the kernel layout: random bytes, then sane fp16 scales in place."""
    size = layout.packed_nbytes(kind, N, K)
    if kind == layout.F32:
        return rng.standard_normal(size // 4, dtype=np.float32).view(np.uint8)
    if kind == layout.F16:
        return rng.standard_normal(size // 2, dtype=np.float32).astype(np.float16).view(np.uint8)
    buf = rng.integers(0, 256, size, dtype=np.uint8)
    blocks = buf.reshape(-1, layout.BLOCKS[kind][1])
    n_scales = 2 if kind == layout.Q4_1 else 1  # Q4_1: d, then m
    scales = (rng.random((blocks.shape[0], n_scales), dtype=np.float32) * 0.01).astype(np.float16)
    blocks[:, : 2 * n_scales] = scales.view(np.uint8)
    return buf


def bench(lib, kind: int, N: int, K: int, working_set: int, repeats: int, rng) -> tuple[float, float]:
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
    ap.add_argument("--variants", nargs="+", default=["avx2", "generic"], choices=["avx2", "generic"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--working-set-mb", type=int, default=1024,
                    help="bytes of weight copies cycled through (beyond the last-level cache)")
    ap.add_argument("--small-pages", action="store_true",
                    help="no transparent huge pages for the weights (as a memory-mapped file)")
    args = ap.parse_args()
    set_huge_pages(not args.small_pages)
    variants = [v for v in args.variants if v != "avx2" or kernels.cpu_has_avx2()]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as cache:
        libs = {v: kernels.load_library(v, cache_dir=cache, sources=SOURCES) for v in variants}
        for lib in libs.values():
            lib.jcl_test_dot_rows.argtypes = [ctypes.POINTER(layout.Wt)] + [ctypes.POINTER(ctypes.c_float)] * 2
        pages = "4 KiB pages" if args.small_pages else "transparent huge pages where available"
        print(f"one thread, {args.working_set_mb} MB working set, {pages}, median of {args.repeats}")
        print(f"{'type':<6}{'N x K':>14}{'build':>9}{'G weights/s':>13}{'GB/s':>8}")
        for name in args.types:
            for N, K in SHAPES:
                for v in variants:
                    gw, gb = bench(libs[v], KINDS[name], N, K, args.working_set_mb << 20,
                                   args.repeats, rng)
                    print(f"{name:<6}{f'{N}x{K}':>14}{v:>9}{gw:>13.2f}{gb:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
