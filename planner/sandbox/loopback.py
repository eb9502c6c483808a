"""The lifecycle both emulators share: a threaded HTTP server on loopback, in a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

Self = TypeVar("Self", bound="LoopbackServer")


class LoopbackServer:
    """``start()`` binds ``host:port`` (port 0: any free one) and serves; ``stop()`` ends it.

    A subclass names its request handler; the handler finds the emulator as ``self.server.emulator``.
    """

    handler: ClassVar[type[BaseHTTPRequestHandler]]
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

    def start(self: Self) -> Self:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.port), self.handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        host, port = server.server_address[:2]
        self.port = port
        self.endpoint_url = f"http://{host}:{port}"
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
