"""What both emulators share: a threaded HTTP server on loopback, in a daemon thread, and its request dispatch.

An emulator subclasses ``LoopbackServer``, names itself (``server_version``, ``thread_name``) and implements one
method, ``handle(method, target, headers, body) -> (status, headers, body)``: ``LoopbackHandler`` reads each
request's body (``Content-Length`` bytes), hands it over, and writes the answer back with its ``Content-Length``
(no body for HEAD).  The handler finds the emulator as ``self.server.emulator``.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

Self = TypeVar("Self", bound="LoopbackServer")


def fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: which runs an emulator fails is the same on every run of a test."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class LoopbackHandler(BaseHTTPRequestHandler):
    """One HTTP request in, ``emulator.handle(...)`` called, its answer written out."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave in two writes; no 40 ms delayed-ACK stall

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        emulator: LoopbackServer = self.server.emulator  # type: ignore[attr-defined]
        status, headers, payload = emulator.handle(self.command, self.path, self.headers, body)
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client stopped waiting (its read timeout, against an injected slow answer): nobody to answer.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def version_string(self) -> str:
        return str(self.server.emulator.server_version)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer:
    """``start()`` binds ``host:port`` (port 0: any free one) and serves; ``stop()`` ends it.

    A subclass implements ``handle`` and names itself with ``server_version`` (the ``Server`` header) and
    ``thread_name``.
    """

    handler: ClassVar[type[BaseHTTPRequestHandler]] = LoopbackHandler
    server_version: ClassVar[str] = "LoopbackServer/1.0"
    thread_name: ClassVar[str] = "loopback-server"
    host: str
    port: int
    endpoint_url: str

    def _init_server(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.endpoint_url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request in (``target`` is the path with its query string), (status, headers, body) out."""
        raise NotImplementedError

    def start(self: Self) -> Self:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.port), self.handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        host, port = server.server_address[:2]
        self.port = port
        self.endpoint_url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self: Self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
