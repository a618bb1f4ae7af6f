"""Memory read bandwidth of this machine, on 1 and 2 threads (GB/s, 1 GB = 1e9 bytes).

    python benchmarks/membw.py                  # 1 and 2 threads, 2 GiB buffer, median of 5
    python benchmarks/membw.py --threads 1,2,4 --mib 4096 --runs 7

    from membw import read_bandwidth            # from another benchmark script
    gbps = read_bandwidth(2)

Why a C program: decoding a large model is a stream of weight reads, so the ceiling that matters
is how fast the cores can *read* memory. A small C program (compiled with gcc at run time and
cached by its source hash) fills a buffer much larger than the caches, then each thread sums its
contiguous share with AVX2 loads (8 independent accumulators, 256 bytes an iteration), under
OpenMP; the time is the whole parallel sweep, between barriers. Every run sweeps the whole buffer
once; the answer is the median over runs, after one warm-up sweep (page faults, frequency).

This VM reports a 480 MiB L3 (the host's), so the default buffer is 2 GiB, well past it. Measured on
an idle machine (Nov 2026): 256 MiB reads 14 GB/s on 1 thread; 512 MiB to 4 GiB read 11-13 GB/s on
1 thread and 21-24 GB/s on 2, so little of that L3 serves this VM. Other work on the machine drags
the 2-thread figure down most (one thread shares a core: ~11-13 GB/s at a load average of 2);
check ``os.getloadavg()`` before trusting it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MIB = 2048
DEFAULT_RUNS = 5

_SOURCE = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    size_t bytes = (size_t)strtoull(argv[1], 0, 10) << 20;
    int threads = atoi(argv[2]), runs = atoi(argv[3]);
    bytes &= ~(size_t)(256 * threads - 1);
    uint8_t *buf = aligned_alloc(4096, bytes);
    if (!buf) { fprintf(stderr, "out of memory\n"); return 1; }
    omp_set_num_threads(threads);
    /* first touch by the threads that will read it */
    #pragma omp parallel
    {
        int t = omp_get_thread_num();
        size_t share = bytes / threads;
        memset(buf + t * share, t + 1, share);
    }
    volatile long long sink = 0;
    for (int r = -1; r < runs; r++) {   /* run -1: warm-up */
        double t0 = 0, t1 = 0;
        long long total = 0;
        #pragma omp parallel reduction(+:total)
        {
            int t = omp_get_thread_num();
            size_t share = bytes / threads;
            const __m256i *p = (const __m256i *)(buf + t * share);
            const __m256i *end = (const __m256i *)(buf + (t + 1) * share);
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0,
                    a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            #pragma omp barrier
            #pragma omp master
            t0 = omp_get_wtime();
            for (; p < end; p += 8) {
                a0 = _mm256_add_epi64(a0, _mm256_load_si256(p + 0));
                a1 = _mm256_add_epi64(a1, _mm256_load_si256(p + 1));
                a2 = _mm256_add_epi64(a2, _mm256_load_si256(p + 2));
                a3 = _mm256_add_epi64(a3, _mm256_load_si256(p + 3));
                a4 = _mm256_add_epi64(a4, _mm256_load_si256(p + 4));
                a5 = _mm256_add_epi64(a5, _mm256_load_si256(p + 5));
                a6 = _mm256_add_epi64(a6, _mm256_load_si256(p + 6));
                a7 = _mm256_add_epi64(a7, _mm256_load_si256(p + 7));
            }
            #pragma omp barrier
            #pragma omp master
            t1 = omp_get_wtime();
            __m256i s = _mm256_add_epi64(_mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)),
                                         _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7)));
            long long v[4];
            _mm256_storeu_si256((__m256i *)v, s);
            total += v[0] + v[1] + v[2] + v[3];
        }
        sink += total;
        if (r >= 0) printf("%.4f\n", bytes / (t1 - t0) / 1e9);
    }
    free(buf);
    return sink == 42;  /* never: keeps the sums alive */
}
"""


def _cache_dir() -> Path:
    try:
        from jupyter_codellama.config import default_cache_dir

        root = Path(default_cache_dir()) / "bench"
    except Exception:  # the probe must work without the package
        root = Path(tempfile.gettempdir()) / "jupyter_codellama-bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


@functools.cache
def _binary() -> Path:
    """Compile the probe once (cached by source hash); needs gcc with OpenMP."""
    tag = hashlib.sha256(_SOURCE.encode()).hexdigest()[:12]
    exe = _cache_dir() / f"membw-{tag}"
    if exe.is_file():
        return exe
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("membw needs gcc (with OpenMP) to compile its probe")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "membw.c"
        src.write_text(_SOURCE)
        out = Path(tmp) / "membw"
        proc = subprocess.run(
            [gcc, "-O2", "-mavx2", "-fopenmp", "-o", str(out), str(src)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compiling the bandwidth probe failed:\n{proc.stderr}")
        staged = exe.with_name(f"{exe.name}.tmp{os.getpid()}")
        shutil.copy2(out, staged)
        os.replace(staged, exe)  # atomic: a concurrent caller sees all or nothing
    return exe


def read_bandwidth_runs(threads: int, mib: int = DEFAULT_MIB, runs: int = DEFAULT_RUNS) -> list[float]:
    """GB/s of each sweep (after a warm-up sweep)."""
    env = dict(os.environ, OMP_PROC_BIND="spread", OMP_PLACES="cores", OMP_WAIT_POLICY="active")
    proc = subprocess.run(
        [str(_binary()), str(mib), str(threads), str(runs)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bandwidth probe failed ({proc.returncode}): {proc.stderr.strip()}")
    return [float(x) for x in proc.stdout.split()]


@functools.cache
def read_bandwidth(threads: int, mib: int = DEFAULT_MIB, runs: int = DEFAULT_RUNS) -> float:
    """Median memory read bandwidth in GB/s (1e9 bytes/s) on ``threads`` threads; cached per process."""
    return statistics.median(read_bandwidth_runs(threads, mib, runs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--mib", type=int, default=DEFAULT_MIB, help="buffer size in MiB")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    args = p.parse_args()
    print(
        f"read bandwidth, {args.mib} MiB buffer, median of {args.runs} sweeps (GB/s = 1e9 B/s); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for n in (int(x) for x in args.threads.split(",")):
        runs = read_bandwidth_runs(n, args.mib, args.runs)
        print(
            f"  {n} thread{'s' if n > 1 else ' '}: {statistics.median(runs):6.1f} GB/s  "
            f"(runs: {', '.join(f'{x:.1f}' for x in runs)})"
        )


if __name__ == "__main__":
    main()
