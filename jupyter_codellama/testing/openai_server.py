"""A tiny OpenAI-compatible server for tests: each failure the remote backend must survive, on cue.

Not a model: it streams the pieces of ``reply`` back. ``mode`` chooses the behaviour:
``ok``, ``slow`` (``delay`` seconds between pieces), ``malformed``, ``die`` (the connection drops
mid-stream), ``429``. ``api_key`` makes it require ``Authorization: Bearer <key>``;
``ssl_context`` serves HTTPS.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    def __init__(self, model: str, *, api_key: str | None = None, ssl_context=None) -> None:
        self.model = model
        self.api_key = api_key
        self.mode = "ok"
        self.reply: list[str] = ["Hello", " world"]
        self.delay = 0.0
        self.retry_after = "7"
        #: Refuse prompts given as token ids, as ``transformers serve`` does.
        self.text_only = False
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        #: Set when a client dropped a stream while pieces were still being written.
        self.disconnected = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._scheme = "http"
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``server`` (http.server builds one handler per request)."""
    return type("Handler", (_Handler,), {"fake": server})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAIServer  # set by _handler (``self.server`` is the HTTP server)

    def log_message(self, *args) -> None:  # quiet tests
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        self.fake.headers_seen.append(dict(self.headers))
        if self.fake.api_key and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            self._json(401, {"error": {"message": "Invalid API key"}})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self._authorized():
            return
        self.fake.requests.append(body)
        refusal = self._refusal(body)
        if refusal is not None:
            self._json(*refusal)
        else:
            self._stream()

    def _refusal(self, body: dict) -> tuple | None:
        """``_json``'s arguments for a request the server refuses, else None."""
        fake = self.fake
        if self.path.rstrip("/") != "/v1/completions":
            return 404, {"detail": "Not Found"}
        if body.get("model") != fake.model:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        if fake.text_only and not isinstance(body.get("prompt"), str):
            return 400, {"detail": "prompt must be a string."}
        if fake.mode == "429":
            return 429, {"error": {"message": "Too many requests"}}, {"Retry-After": fake.retry_after}
        return None

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._pieces()
        except OSError:
            self.fake.disconnected.set()

    def _pieces(self) -> None:
        fake = self.fake
        for i, piece in enumerate(fake.reply):
            if fake.mode == "malformed" and i == 1:
                self._event("this is not json")
                return
            if fake.mode == "die" and i == 1:
                return  # the connection closes without a finish_reason
            self._event(json.dumps({"choices": [{"index": 0, "text": piece, "finish_reason": None}]}))
            time.sleep(fake.delay)
        usage = {"prompt_tokens": 5, "completion_tokens": len(fake.reply)}
        self._event(json.dumps({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}], "usage": usage}))
        self._event("[DONE]")

    def _event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()
