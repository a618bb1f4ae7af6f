"""The C kernels: real ``.c`` files in this folder, compiled once with the system C compiler.

Two builds of the same sources:

* ``avx2``: ``-mavx2 -mfma -mf16c`` (the fast path on x86-64 CPUs that have them);
* ``generic``: plain C, for any x86-64 or ARM compiler; the same results, more slowly.

The shared library is cached under ``<cache>/kernels`` by a hash of every source file, the
flags and the compiler, so an edited source is rebuilt and a stale library is never loaded.
The folder is created private (0700), and a library is loaded only from a folder and a file
that are the user's own and that no other user can write: loading runs its code in the kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("llama.c", "quants.c", "kquants.c", "q8.c", "kquants_q8.c")
_COMMON = ["-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-std=gnu11"]
_VARIANT_FLAGS = {"avx2": ["-mavx2", "-mfma", "-mf16c"], "generic": []}


class KernelUnavailable(RuntimeError):
    """The C kernel cannot be built or loaded here; the message says what to install."""


def cpu_has_avx2() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    return {"avx2", "fma", "f16c"} <= set(line.split())


def best_variant() -> str:
    return "avx2" if cpu_has_avx2() else "generic"


def find_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if not cc:
        raise KernelUnavailable(
            "No C compiler found: the CPU engine compiles its kernel once on first use. Install "
            "one (Debian/Ubuntu: apt-get install gcc; macOS: xcode-select --install; conda: "
            "conda install gcc), or set CC to its path."
        )
    return cc


def _digest(sources: tuple[str, ...], flags: list[str], cc: str) -> str:
    h = hashlib.sha256()
    for name in sorted({*sources, *(p.name for p in HERE.glob("*.h"))}):
        h.update(name.encode())
        h.update((HERE / name).read_bytes())
    h.update(" ".join([cc, *flags]).encode())
    return h.hexdigest()[:16]


def library_path(variant: str, cache_dir: str | os.PathLike | None = None, sources: tuple[str, ...] = SOURCES) -> Path:
    """Build (if needed) and return the shared library for ``variant``."""
    if variant not in _VARIANT_FLAGS:
        raise ValueError(f"unknown kernel variant {variant!r}: use 'avx2' or 'generic'")
    if variant == "avx2" and not cpu_has_avx2():
        raise KernelUnavailable("this CPU has no AVX2/FMA/F16C: use the 'generic' kernel")
    cc = find_compiler()
    flags = [*_COMMON, *_VARIANT_FLAGS[variant]]
    folder = _cache_folder(cache_dir)
    target = folder / f"{Path(sources[0]).stem}-{variant}-{_digest(sources, flags, cc)}.so"
    _make_private_folder(folder)
    if target.is_file():
        return _checked(target)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / target.name
        cmd = [cc, *flags, *(str(HERE / s) for s in sources), "-o", str(out), "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KernelUnavailable(f"compiling the CPU kernel with {cc} failed: {exc}") from exc
        if proc.returncode != 0:
            raise KernelUnavailable(f"compiling the CPU kernel failed:\n{proc.stderr[-3000:]}")
        os.replace(out, target)
    return _checked(target)


def _cache_folder(cache_dir) -> Path:
    if cache_dir:
        return Path(cache_dir) / "kernels"
    from ...config import default_cache_dir

    return Path(default_cache_dir()) / "kernels"


def _make_private_folder(folder: Path) -> None:
    """Create ``folder`` readable and writable by its owner only (its parents as usual);
    refuse it when it exists and others can write it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    _refuse_if_unsafe(folder, folder)


def _checked(library: Path) -> Path:
    """``library``, once it is known to be safe to load (its folder was checked before)."""
    _refuse_if_unsafe(library, library.parent)
    return library


def _refuse_if_unsafe(path: Path, folder: Path) -> None:
    """Another user who can write the folder or the file could put their code in this kernel."""
    info = path.stat()  # a link is judged by what it points to
    problem = ""
    if info.st_uid != os.geteuid():
        problem = f"is owned by user {info.st_uid}, not by you ({os.geteuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise KernelUnavailable(
            f"Refusing to load the CPU kernel: {path} {problem}, so someone else could replace "
            f"the code it runs. Remove the folder or make it yours and private (chmod 700 {folder}, "
            "and chmod go-w on the files in it), or point JUPYTER_CODELLAMA_CACHE (or the "
            "cache_dir option) at a private folder."
        )


_loaded: dict[tuple, ctypes.CDLL] = {}
_lock = threading.Lock()


def load_library(
    variant: str | None = None, cache_dir: str | os.PathLike | None = None, sources: tuple[str, ...] = SOURCES
) -> ctypes.CDLL:
    """The compiled kernel as a ``ctypes.CDLL`` (built on first use, then cached)."""
    if sys.platform == "win32":
        raise KernelUnavailable("the CPU kernel is built for Linux and macOS")
    variant = variant or best_variant()
    key = (variant, str(cache_dir or ""), sources)
    with _lock:
        if key not in _loaded:
            # torch is imported first, so its libgomp (same soname) is the one the kernel binds to.
            import torch  # noqa: F401

            _loaded[key] = ctypes.CDLL(str(library_path(variant, cache_dir, sources)))
        return _loaded[key]
