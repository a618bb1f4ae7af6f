"""Run untrusted candidate code against test cases in a separate, time-limited process.

The child runs in isolated mode (``python -I``) in an empty temporary directory that is its
working directory and the only place it is meant to write, with networking disabled at the
socket layer, and is killed at the time limit. This keeps honest mistakes (infinite loops,
stray files, downloads) out of the notebook's kernel; it is not a security boundary against
code written to escape.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

_RUNNER = r'''
import json, socket, sys

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")

socket.socket = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network

spec = json.loads(sys.stdin.read())
report = {"passed": 0, "failures": []}
namespace = {"__name__": "__candidate__"}
try:
    exec(compile(spec["code"], "<candidate>", "exec"), namespace)
    function = namespace[spec["entry_point"]]
except Exception as exc:
    report["error"] = f"{type(exc).__name__}: {exc}"
else:
    for args, expected in spec["cases"]:
        try:
            got = function(*args)
        except Exception as exc:
            report["failures"].append({"args": args, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if got == expected:
            report["passed"] += 1
        else:
            report["failures"].append({"args": args, "expected": expected, "got": repr(got)[:200]})
print("\n" + json.dumps(report))
'''


@dataclass(frozen=True)
class CheckResult:
    passed: int
    total: int
    error: str = ""
    failures: tuple[dict, ...] = ()

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.passed == self.total and not self.error


def run_tests(code: str, entry_point: str, cases: Sequence[tuple[Sequence[Any], Any]], *,
              timeout: float = 10.0) -> CheckResult:
    """Call ``entry_point(*args)`` from ``code`` for each case; compare with ``==`` (JSON values)."""
    if not code.strip():
        return CheckResult(0, len(cases), "no code")
    spec = json.dumps({"code": code, "entry_point": entry_point, "cases": [[list(a), e] for a, e in cases]})
    with tempfile.TemporaryDirectory(prefix="codellama-sandbox-") as workdir:
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", _RUNNER], input=spec, capture_output=True,
                                  text=True, timeout=timeout, cwd=workdir)
        except subprocess.TimeoutExpired:
            return CheckResult(0, len(cases), f"timed out after {timeout:g} s")
    lines = proc.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return CheckResult(0, len(cases), f"crashed (exit {proc.returncode}): {tail[0]}")
    return CheckResult(report["passed"], len(cases), report.get("error", ""), tuple(report["failures"]))
