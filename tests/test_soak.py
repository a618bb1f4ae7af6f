"""A short soak in a real kernel (the full one is ``benchmarks/soak.py``): two notebooks send
keystroke completions with random cancels and chats at once; every request ends exactly once,
no thread is left behind, the prefix cache stays within its budget and memory stays flat."""

import pytest

from jupyter_codellama.testing.kernel_comm import KernelComm
from jupyter_codellama.testing.soak import Soak

pytestmark = pytest.mark.slow


def test_a_short_soak_from_two_notebooks_leaks_nothing():
    kernel = KernelComm(startup_code="%codellama load embedded")
    try:
        report = Soak(kernel, seed=1).run(completions=150, chats=6, warmup=40)
        print("\n" + "\n".join(report.lines()))
        assert report.threads_end <= report.threads_warm, "threads were left behind"
        assert report.prefix_cache_bytes <= report.prefix_cache_max_bytes
        # Loose: a short run on a shared machine; the benchmark's full run is what to read.
        assert report.rss_growth < 0.25, report.lines()
        assert kernel.alive()
    finally:
        kernel.shutdown()
