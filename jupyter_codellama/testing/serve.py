"""Start a real ``transformers serve`` (from ``transformers[serving]``) for tests and benchmarks.

Offline, on 127.0.0.1 and a free port, with continuous batching, pinned to one local model
folder (the embedded model's converted cache by default).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TransformersServe:
    """A ``transformers serve`` process; ``url`` is its ``/v1`` endpoint, ``model`` its model id."""

    def __init__(self, model_dir: str | os.PathLike, *, continuous_batching: bool = True) -> None:
        self.model = str(model_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = tempfile.NamedTemporaryFile(prefix="transformers-serve-", suffix=".log", delete=False)
        command = [_cli(), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"]
        if continuous_batching:
            command.append("--continuous-batching")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = 120.0) -> "TransformersServe":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        log = self.log()
        self.stop()
        raise TimeoutError(f"transformers serve was not ready within {timeout} s:\n{log}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop the server and everything it started (its process group)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def _cli() -> str:
    """The ``transformers`` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("transformers")
    return str(beside) if beside.exists() else (shutil.which("transformers") or "transformers")


def main() -> None:
    """``python -m jupyter_codellama.testing.serve``: serve the embedded model until stdin closes
    (the UI tests start it this way); prints one JSON line, ``{"url": ..., "model": ...}``."""
    import json

    from ..engine.loading import embedded_model_dir

    serve = TransformersServe(embedded_model_dir()).wait_ready()
    try:
        print(json.dumps({"url": serve.url, "model": serve.model}), flush=True)
        sys.stdin.read()  # the parent closes it, or dies
    finally:
        serve.stop()


if __name__ == "__main__":
    main()
