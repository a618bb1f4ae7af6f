"""Matrix-vector microbenchmark of every weight format the C kernel reads, one core.

    python benchmarks/matvec.py                          # all types, both builds
    python benchmarks/matvec.py --types Q4_0 Q4_K --variants avx2 --repeats 9
    python benchmarks/matvec.py --shapes 256x4096 --working-set-mb 0 --repeats 1  # quick look
    python benchmarks/matvec.py --op dequant --types Q4_0 Q4_K Q6_K   # the prompt path's decoding

Types: F32, F16, Q4_0, Q4_1, Q8_0 (kernels/quants.c) and Q4_K, Q5_K, Q6_K (kernels/kquants.c).
For each type, a random weight of each shape is built in the kernel's layout: random bytes with
finite fp16 scales written in place. No quantizer runs (tests/kquants_ref.py is not used): the
kernel's speed does not depend on the values it reads, and random blocks take no time to build.
The weight is multiplied by a random fp32 vector with ``jcl_test_dot_rows`` (single-threaded:
x_aux, then dot_group4 over every group of 4 rows). Copies of the weight are cycled through
until the working set reaches ``--working-set-mb``, so the weights stream from memory as in
decoding a real model rather than from the last-level cache (0: one copy, which stays in the
cache when it fits: the kernel's own speed). Printed: the median over ``--repeats`` passes of G
weights/s and GB/s of weight bytes read, timed in thread CPU time (these machines are shared:
time spent descheduled is not the kernel's).

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

SOURCES = kernels.SOURCES  # jcl_dequant_rows is in llama.c
KINDS = {
    layout.NAMES[k]: k
    for k in (layout.F32, layout.F16, layout.Q4_0, layout.Q4_1, layout.Q8_0, layout.Q4_K, layout.Q5_K, layout.Q6_K)
}
SHAPES = ("4096x11008", "11008x4096")
# Byte offsets in each block of the fp16 scales, which random bytes could make NaN or inf:
# d first (Q4_1 then m, Q4_K/Q5_K then dmin), Q6_K's d last.
F16_AT = {
    layout.Q4_0: (0,),
    layout.Q4_1: (0, 2),
    layout.Q8_0: (0,),
    layout.Q4_K: (0, 2),
    layout.Q5_K: (0, 2),
    layout.Q6_K: (208,),
}
FloatP = ctypes.POINTER(ctypes.c_float)


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
    elems, block_bytes = layout.BLOCKS[kind]
    blocks = buf.reshape(-1, block_bytes)
    scale = 0.01 if elems == 32 else 1e-3  # K-quants' d also multiplies 6-bit sub-block scales
    for at in F16_AT[kind]:
        d = (rng.random(blocks.shape[0], dtype=np.float32) * scale).astype(np.float16)
        blocks[:, at : at + 2] = d.view(np.uint8).reshape(-1, 2)
    return buf


def weight_copies(kind: int, N: int, K: int, working_set: int, rng) -> tuple[list, np.ndarray, int]:
    """``Wt``s over enough copies of one random weight to fill ``working_set`` bytes."""
    one = random_weight(kind, N, K, rng)
    copies = max(1, -(-working_set // one.nbytes))
    pool = np.empty((copies, one.nbytes), dtype=np.uint8)  # one allocation: huge pages if asked
    pool[:] = one
    return [layout.make_wt(pool[c], kind, N, K) for c in range(copies)], pool, one.nbytes


DEQUANT_ROWS = 64


def one_pass(lib, op: str, wt, N: int, xp, yp, out) -> None:
    if op == "dot":
        lib.jcl_test_dot_rows(ctypes.byref(wt), xp, yp)
        return
    for r0 in range(0, N, DEQUANT_ROWS):
        lib.jcl_dequant_rows(ctypes.byref(wt), r0, min(N, r0 + DEQUANT_ROWS), out, 1)


def bench(lib, op: str, kind: int, N: int, K: int, working_set: int, repeats: int, rng) -> tuple[float, float]:
    """(G weights/s, GB/s) of ``op`` over the copies, median of the passes."""
    wts, _pool, nbytes = weight_copies(kind, N, K, working_set, rng)  # _pool keeps the memory
    x = rng.standard_normal(K, dtype=np.float32)
    y = np.empty(N, dtype=np.float32)
    xp, yp = x.ctypes.data_as(FloatP), y.ctypes.data_as(FloatP)
    block = np.empty(DEQUANT_ROWS * K, dtype=np.float32)
    out = block.ctypes.data_as(FloatP)
    times = []
    for _ in range(repeats + 1):  # the first pass faults the pages in and warms the code
        t0 = time.thread_time()
        for wt in wts:
            one_pass(lib, op, wt, N, xp, yp, out)
        times.append((time.thread_time() - t0) / len(wts))
    t = statistics.median(times[1:])
    return N * K / t / 1e9, nbytes / t / 1e9


def shape(text: str) -> tuple[int, int]:
    n, k = text.lower().split("x")
    return int(n), int(k)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument(
        "--shapes",
        nargs="+",
        type=shape,
        default=[shape(s) for s in SHAPES],
        help=f"N x K (default {' '.join(SHAPES)}); K a multiple of 256 for the K-quants, of 32 for Q4_0/Q4_1/Q8_0",
    )
    ap.add_argument("--variants", nargs="+", default=["avx2", "generic"], choices=["avx2", "generic"])
    ap.add_argument(
        "--op",
        choices=["dot", "dequant"],
        default="dot",
        help="dot: the decode kernel (default); dequant: rows to fp32",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--working-set-mb",
        type=int,
        default=1024,
        help="bytes of weight copies cycled through (beyond the last-level cache); 0: one copy",
    )
    ap.add_argument(
        "--small-pages", action="store_true", help="no transparent huge pages for the weights (as a memory-mapped file)"
    )
    return ap.parse_args()


def load_libs(variants: list[str], cache: str) -> dict:
    libs = {v: kernels.load_library(v, cache_dir=cache, sources=SOURCES) for v in variants}
    for lib in libs.values():
        lib.jcl_test_dot_rows.argtypes = [ctypes.POINTER(layout.Wt), FloatP, FloatP]
        lib.jcl_dequant_rows.argtypes = [ctypes.POINTER(layout.Wt), ctypes.c_int, ctypes.c_int, FloatP, ctypes.c_int]
    return libs


def main() -> None:
    args = parse_args()
    set_huge_pages(not args.small_pages)
    variants = [v for v in args.variants if v != "avx2" or kernels.cpu_has_avx2()]
    rng = np.random.default_rng(0)
    pages = "4 KiB pages" if args.small_pages else "transparent huge pages where available"
    print(f"{args.op}, one thread, {args.working_set_mb} MB working set, {pages}, median of {args.repeats}")
    print(f"{'type':<6}{'N x K':>14}{'build':>9}{'G weights/s':>13}{'GB/s':>8}")
    with tempfile.TemporaryDirectory() as cache:
        libs = load_libs(variants, cache)
        for name in args.types:
            for N, K in args.shapes:
                for v in variants:
                    gw, gb = bench(libs[v], args.op, KINDS[name], N, K, args.working_set_mb << 20, args.repeats, rng)
                    print(f"{name:<6}{f'{N}x{K}':>14}{v:>9}{gw:>13.2f}{gb:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
