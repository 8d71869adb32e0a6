"""A small real forward proxy for the tests: CONNECT tunnels (https://) and absolute-URI
requests (http://), as squid or tinyproxy serve them, counting what passed through."""

from __future__ import annotations

import base64
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit


class Proxy:
    def __init__(self, *, credentials: str | None = None) -> None:
        # "user:password" the proxy demands (407 without it), or None.
        self.credentials = credentials
        self.seen: list[str] = []  # "CONNECT host:port" or "POST http://..." per request
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _allowed(self) -> bool:
                with proxy._lock:
                    proxy.seen.append(f"{self.command} {self.path}")
                if proxy.credentials is None:
                    return True
                wanted = "Basic " + base64.b64encode(proxy.credentials.encode()).decode()
                if self.headers.get("Proxy-Authorization") == wanted:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="school"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:
                if not self._allowed():
                    return
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                self.send_response(200, "Connection established")
                self.end_headers()
                _pipe(self.connection, upstream)
                self.close_connection = True

            def _forward(self) -> None:
                if not self._allowed():
                    return
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                upstream = socket.create_connection((target.hostname, target.port or 80))
                path = target.path + (f"?{target.query}" if target.query else "")
                lines = [f"{self.command} {path} HTTP/1.1"]
                for name, value in self.headers.items():
                    if name.lower() not in ("proxy-authorization", "proxy-connection"):
                        lines.append(f"{name}: {value}")
                lines.append("Connection: close")
                upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                with upstream:
                    while chunk := upstream.recv(65536):
                        self.connection.sendall(chunk)
                self.close_connection = True

            do_POST = _forward
            do_GET = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Both ways until either side closes: a blocking select, no polling."""
    with upstream, selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = source.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                try:
                    key.data.sendall(chunk)
                except OSError:
                    return
