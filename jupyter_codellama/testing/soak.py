"""A soak of the comm in a real kernel: many keystroke completions with random cancels, plus
chats, from two notebooks (two comms, each on its own subshell) at once.

Measured on the kernel process: resident memory after a warm-up and at the end, its thread
count before and after, and the prefix cache's bytes against its budget. Every request must end
with exactly one terminal reply. ``benchmarks/soak.py`` prints a full run; the tests run a short
one.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field

from .kernel_comm import KernelComm

#: Typed into the cells, a character a keystroke; the other cells are the notebook context.
SOURCE = '''import statistics

def summarize(values):
    """Mean, median and spread of a list of numbers."""
    mean = statistics.mean(values)
    median = statistics.median(values)
    spread = max(values) - min(values)
    return {"mean": mean, "median": median, "spread": spread}

for name, values in {"a": [1, 2, 3], "b": [4, 5, 6]}.items():
    print(name, summarize(values))
'''
CELLS = [{"cell_type": "code", "source": f"def helper_{i}(x):\n    return x * {i}\n"} for i in range(12)]
QUESTIONS = [
    "Write a function that reverses a string.",
    "What does zip do?",
    "Sort a list of dicts by a key.",
    "Read a CSV file with pandas.",
]


@dataclass
class SoakReport:
    completions: int = 0
    chats: int = 0
    cancels: int = 0
    endings: dict[str, int] = field(default_factory=dict)
    rss_warm: int = 0
    rss_end: int = 0
    threads_warm: int = 0
    threads_end: int = 0
    prefix_cache_warm: int = 0
    prefix_cache_bytes: int = 0
    prefix_cache_max_bytes: int = 0
    seconds: float = 0.0

    @property
    def rss_growth(self) -> float:
        return (self.rss_end - self.rss_warm) / self.rss_warm

    def lines(self) -> list[str]:
        mib = 1 << 20
        return [
            f"requests: {self.completions:,} completions, {self.chats} chats, {self.cancels:,} cancels "
            f"in {self.seconds:.0f} s; endings {self.endings}",
            f"RSS after warm-up {self.rss_warm / mib:.1f} MiB, at the end {self.rss_end / mib:.1f} MiB: "
            f"growth {self.rss_growth * 100:+.1f} %",
            f"threads after warm-up {self.threads_warm}, at the end {self.threads_end}",
            f"prefix cache after warm-up {self.prefix_cache_warm / mib:.1f} MiB, at the end "
            f"{self.prefix_cache_bytes / mib:.1f} MiB (budget {self.prefix_cache_max_bytes / mib:.0f} MiB)",
        ]


class Soak:
    def __init__(self, kernel: KernelComm, *, seed: int = 0, cancel_rate: float = 0.3) -> None:
        import psutil

        self.kernel = kernel
        self.process = psutil.Process(kernel.km.provisioner.process.pid)  # type: ignore[union-attr]
        self.random = random.Random(seed)
        self.cancel_rate = cancel_rate
        self.comms = [kernel.open_comm(), kernel.open_comm()]
        for comm in self.comms:
            kernel.use_subshell(comm)
        self.sent: list[tuple[str, str]] = []  # (comm, request id) of every request
        self._ids = itertools.count(1)
        self.report = SoakReport()

    def run(self, completions: int, chats: int, warmup: int) -> SoakReport:
        started = time.perf_counter()
        self._traffic(warmup, max(1, chats // 10))
        self._settle()
        self.report.rss_warm, self.report.threads_warm = self._usage()
        self.report.prefix_cache_warm = self._prefix_cache()["bytes"]
        self._traffic(completions, chats)
        self._settle()
        self.report.rss_end, self.report.threads_end = self._usage()
        cache = self._prefix_cache()
        self.report.prefix_cache_bytes, self.report.prefix_cache_max_bytes = cache["bytes"], cache["max_bytes"]
        self.report.seconds = time.perf_counter() - started
        self._check_endings()
        return self.report

    def _traffic(self, completions: int, chats: int) -> None:
        chat_every = max(1, completions // max(1, chats))
        for i in range(completions):
            comm = self.comms[self.random.randrange(2)]
            self._keystroke(comm, i)
            if i % chat_every == chat_every // 2 and self.report.chats < chats + max(1, chats // 10):
                self._chat(self.comms[1] if comm == self.comms[0] else self.comms[0])

    def _keystroke(self, comm: str, i: int) -> None:
        cut = 1 + i % len(SOURCE)
        request_id = self._request(
            comm,
            {
                "type": "complete",
                "prefix": SOURCE[:cut],
                "suffix": SOURCE[cut:],
                "cells": [*CELLS, {"cell_type": "code", "source": SOURCE}],
                "current": len(CELLS),
                "variables": False,
                "max_new_tokens": 8,
            },
        )
        self.report.completions += 1
        if self.random.random() < self.cancel_rate:
            self._cancel(comm, request_id)
        elif self.random.random() < 0.5:  # the user pauses: the suggestion is shown
            self.kernel.wait_terminal(comm, request_id, timeout=120)
        else:
            time.sleep(0.03)  # the next keystroke supersedes it

    def _chat(self, comm: str) -> None:
        request_id = self._request(
            comm,
            {
                "type": "chat",
                "max_new_tokens": 16,
                "temperature": 0,
                "messages": [{"role": "user", "content": self.random.choice(QUESTIONS)}],
            },
        )
        self.report.chats += 1
        if self.random.random() < self.cancel_rate:
            time.sleep(self.random.random() * 0.3)
            self._cancel(comm, request_id)

    def _cancel(self, comm: str, target: str) -> None:
        self._request(comm, {"type": "cancel", "target_id": target})
        self.report.cancels += 1

    def _request(self, comm: str, data: dict, wait: bool = False):
        request_id = f"s-{next(self._ids)}"
        self.kernel.send(comm, {**data, "request_id": request_id})
        self.sent.append((comm, request_id))
        return self.kernel.wait_terminal(comm, request_id, timeout=120) if wait else request_id

    def _settle(self) -> None:
        for comm in self.comms:
            self.kernel.wait_all(comm, [r for c, r in self.sent if c == comm], timeout=300)
        time.sleep(0.5)  # reply threads and the engine's last status broadcasts finish

    def _prefix_cache(self) -> dict:
        return self._request(self.comms[0], {"type": "status"}, wait=True)["status"]["prefix_cache"]

    def _usage(self) -> tuple[int, int]:
        return self.process.memory_info().rss, self.process.num_threads()

    def _check_endings(self) -> None:
        endings: dict[str, int] = {}
        for comm, request_id in self.sent:
            ends = self.kernel.terminal(comm, request_id)
            assert len(ends) == 1, f"{request_id} ended {len(ends)} times: {ends}"
            reply = ends[0]
            key = (
                reply.get("code")
                or reply.get("stop_reason")
                or ("cancel reply" if "cancelled" in reply else reply["type"])
            )
            endings[key] = endings.get(key, 0) + 1
        self.report.endings = dict(sorted(endings.items(), key=lambda kv: -kv[1]))
