"""The HTTP boundary against real servers on 127.0.0.1: TLS with a CA made in the test,
a real forward proxy (tests/proxy.py), servers that drip, never end, lie about gzip or
answer a captive portal's page; what NestJS and nginx really send."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import trustme

from gateagent.config import Config
from gateagent.core.answers import NOT_THE_API, Delivered, Outcome, Paused, Rejected, Retry
from gateagent.store import Store
from gateagent.uplink import http
from gateagent.uplink.profiles import Request
from tests.proxy import Proxy
from tests.settings import TOKEN, make_settings
from tests.uplink.uploading import record, states, uploading

API_OK = json.dumps({"data": {"id": 1, "studentName": "Budi", "attendanceStatus": "PRESENT"}})
PORTAL = b"<!DOCTYPE html><html><head><title>Guest Wi-Fi login</title></head><body>...</body>"
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad"
    b" Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
)
NGINX_504 = NGINX_502.replace(b"502 Bad Gateway", b"504 Gateway Time-out")

Answer = Callable[[BaseHTTPRequestHandler, "Server"], None]


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes | str,
    content_type: str = "application/json; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> None:
    data = body.encode() if isinstance(body, str) else body
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def api_ok(handler: BaseHTTPRequestHandler, server: Server) -> None:
    send(handler, 200, API_OK)


class Server:
    """A real HTTP(S) server whose answer is a function; records each request."""

    def __init__(self, answer: Answer = api_ok, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.received = threading.Event()
        self.stop = threading.Event()  # ends the servers that drip or never end
        self.sent_bytes = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                server.requests.append(
                    {"method": self.command, "headers": dict(self.headers), "body": body}
                )
                server.received.set()
                try:
                    server.answer(self, server)
                except OSError:
                    self.close_connection = True  # the client left: what the test wants

            do_POST = _any
            do_GET = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            # The handshake happens in the handler's thread, not in the accept loop.
            self._httpd.socket = tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}/api/v1/attendances/integration"

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def tap_request(url: str, headers: dict[str, str] | None = None) -> Request:
    return Request(
        url,
        headers or {},
        json={
            "gate": 4,
            "card_no": "0012822001",
            "tanggal": "2024-01-15T01:30:00.000Z",
            "token": TOKEN,
            "checktype": 1,
        },
    )


def post(settings: Config, request: Request | None = None) -> http.Reply:
    with http.client(settings.uplink, device=settings.device.name) as client:
        return http.post(client, request or tap_request(settings.uplink.url), settings.uplink)


# -- deadline and size limit -------------------------------------------------------------


def drip(handler: BaseHTTPRequestHandler, server: Server) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.flush()
    # A byte a second, for ever: per-phase (read) timeouts never fire on this.
    while not server.stop.wait(1.0):
        handler.wfile.write(b" ")
        handler.wfile.flush()


def test_a_dripping_server_ends_at_the_total_deadline(tmp_path: Path) -> None:
    with Server(drip) as server:
        settings = make_settings(tmp_path, server.url(), uplink={"timeout": "2.5s"})
        started = time.monotonic()
        reply = post(settings)
        elapsed = time.monotonic() - started
    assert reply.outcome == Retry(
        "timeout", f"127.0.0.1:{server.port}: no complete answer within 2.5s", ambiguous=True
    )
    # At the deadline, not at the first silence longer than it (which never comes).
    assert 2.5 <= elapsed < 30


def drip_headers(handler: BaseHTTPRequestHandler, server: Server) -> None:
    # The status line, then a header a byte every half second: httpcore reads the timeout
    # once for the whole of the headers, so only a bound on each read ends this.
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    handler.wfile.flush()
    while not server.stop.wait(0.5):
        handler.wfile.write(b"x")
        handler.wfile.flush()


def test_a_server_dripping_its_headers_ends_at_the_total_deadline(tmp_path: Path) -> None:
    with Server(drip_headers) as server:
        settings = make_settings(tmp_path, server.url(), uplink={"timeout": "2s"})
        started = time.monotonic()
        reply = post(settings)
        elapsed = time.monotonic() - started
    assert reply.outcome == Retry(
        "timeout", f"127.0.0.1:{server.port}: no complete answer within 2s", ambiguous=True
    )
    assert 2.0 <= elapsed < 3.0


def test_a_call_cancelled_from_another_thread_ends_at_once(tmp_path: Path) -> None:
    # How a stop ends a request that hangs: its socket is shut down under the thread.
    with Server(drip) as server:
        settings = make_settings(tmp_path, server.url(), uplink={"timeout": "60s"})
        call = http.Call(60.0)

        def cancel_once_sent() -> None:
            server.received.wait(10)
            call.cancel()

        threading.Thread(target=cancel_once_sent).start()
        started = time.monotonic()
        with http.client(settings.uplink) as client:
            reply = http.post(client, tap_request(server.url()), settings.uplink, call)
        elapsed = time.monotonic() - started
    assert isinstance(reply.outcome, Retry) and reply.outcome.ambiguous
    assert elapsed < 5.0


def test_a_call_cancelled_during_its_name_lookup_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name lookup cannot be interrupted; a call given up meanwhile (the uploader's
    # backstop, a stop) must not go out once the lookup returns.
    call = http.Call(10.0)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        call.cancel()
        return real_getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Server() as server:
        settings = make_settings(tmp_path, server.url())
        with http.client(settings.uplink) as client:
            reply = http.post(client, tap_request(server.url()), settings.uplink, call)
    assert isinstance(reply.outcome, Retry)
    assert server.requests == []


def test_plain_http_builds_no_tls_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading the system store costs ~250M instructions at every start and reload.
    def no_tls(*args: object) -> ssl.SSLContext:
        raise AssertionError("a TLS context for plain http://")

    monkeypatch.setattr(http.network, "tls_context", no_tls)
    with Server() as server:
        assert post(make_settings(tmp_path, server.url())).outcome == Delivered("Budi", "PRESENT")


def endless(handler: BaseHTTPRequestHandler, server: Server) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(b"<html><head><title>Guest Wi-Fi login</title></head><body>")
    chunk = b"<p>" + b"x" * 65536 + b"</p>"
    while not server.stop.is_set():
        handler.wfile.write(chunk)  # OSError once the client has closed
        server.sent_bytes += len(chunk)


def test_an_endless_body_is_classified_on_its_start_and_never_read_whole(
    tmp_path: Path,
) -> None:
    with Server(endless) as server:
        settings = make_settings(tmp_path, server.url())
        reply = post(settings)
        sent = server.sent_bytes
    assert reply.outcome == Paused("paused-config", 200, f"{NOT_THE_API} (200: Guest Wi-Fi login)")
    # What the kernel's socket buffers took, not the gigabytes a whole read would be.
    assert sent < 64 * 1024 * 1024


def gzip_bomb(handler: BaseHTTPRequestHandler, server: Server) -> None:
    body = gzip.compress(b'{"message": "' + b" " * 30_000_000 + b'"}', compresslevel=9)
    send(handler, 200, body, headers={"Content-Encoding": "gzip"})


def test_a_gzip_bomb_inflates_only_to_the_limit(tmp_path: Path) -> None:
    with Server(gzip_bomb) as server:
        reply = post(make_settings(tmp_path, server.url()))
    assert isinstance(reply.outcome, Paused)
    assert reply.outcome.message.startswith(NOT_THE_API)


def broken_gzip(handler: BaseHTTPRequestHandler, server: Server) -> None:
    send(handler, 200, API_OK, headers={"Content-Encoding": "gzip"})


def good_gzip(handler: BaseHTTPRequestHandler, server: Server) -> None:
    send(handler, 200, gzip.compress(API_OK.encode()), headers={"Content-Encoding": "gzip"})


def test_broken_gzip_pauses_and_good_gzip_delivers(tmp_path: Path) -> None:
    with Server(broken_gzip) as server:
        settings = make_settings(tmp_path, server.url())
        reply = post(settings)
        assert reply.outcome == Paused(
            "paused-config",
            200,
            "the server's answer cannot be read: its Content-Encoding gzip is broken"
            " (a proxy in the way?)",
        )
        server.answer = good_gzip
        assert post(settings).outcome == Delivered("Budi", "PRESENT")
        assert server.requests[0]["headers"]["Accept-Encoding"] == "gzip, deflate"


# -- what real servers answer --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type", "outcome"),
    [
        (
            400,
            json.dumps(
                {
                    "statusCode": 400,
                    "message": ["card_no must be a string"],
                    "error": "Bad Request",
                }
            ),
            "application/json",
            Rejected("http-400", 400, "card_no must be a string"),
        ),
        (
            404,
            json.dumps({"message": "Cannot POST /x", "error": "Not Found", "statusCode": 404}),
            "application/json",
            Paused("paused-config", 404, "not found: check [uplink] url (Cannot POST /x)"),
        ),
        (502, NGINX_502, "text/html", Retry("http-502", "H: 502 Bad Gateway", 502, True)),
        (504, NGINX_504, "text/html", Retry("http-504", "H: 504 Gateway Time-out", 504, True)),
        (
            200,
            PORTAL,
            "text/html",
            Paused("paused-config", 200, f"{NOT_THE_API} (200: Guest Wi-Fi login)"),
        ),
        (
            200,
            b"[" * 200_000,
            "application/json",
            Paused("paused-config", 200, f"{NOT_THE_API} (200: {'[' * 197}...)"),
        ),
    ],
    ids=["validation-pipe", "cannot-post", "nginx-502", "nginx-504", "portal", "deep-json"],
)
def test_real_answer_shapes(
    tmp_path: Path, status: int, body: bytes | str, content_type: str, outcome: Outcome
) -> None:
    def answer(handler: BaseHTTPRequestHandler, server: Server) -> None:
        send(handler, status, body, content_type)

    with Server(answer) as server:
        got = post(make_settings(tmp_path, server.url())).outcome
    assert not isinstance(got, Delivered)
    host = f"127.0.0.1:{server.port}"
    assert replace(got, message=got.message.replace(host, "H")) == outcome


def test_connection_refused_names_the_server_and_is_not_ambiguous(tmp_path: Path) -> None:
    with Server() as server:
        url = server.url()
    reply = post(make_settings(tmp_path, url, uplink={"timeout": "5s"}))
    assert isinstance(reply.outcome, Retry)
    assert reply.outcome.reason == "connection-error"
    assert reply.outcome.message.startswith(f"127.0.0.1:{server.port}: ConnectError")
    assert not reply.outcome.ambiguous


def test_user_agent_names_the_gate(tmp_path: Path) -> None:
    with Server() as server:
        assert post(make_settings(tmp_path, server.url())).outcome == Delivered("Budi", "PRESENT")
    agent = server.requests[0]["headers"]["User-Agent"]
    assert agent.startswith("gateagent/") and agent.endswith(" (gate-test)")


def test_a_header_that_cannot_be_sent_pauses(tmp_path: Path) -> None:
    with Server() as server:
        settings = make_settings(tmp_path, server.url())
        request = tap_request(server.url(), {"Authorization": "Bearer \ufeffabc"})
        reply = post(settings, request)
    assert isinstance(reply.outcome, Paused)
    assert reply.outcome.state == "paused-config"
    assert "a header holds a character HTTP cannot carry" in reply.outcome.message
    assert server.requests == []


# -- a captive portal through the whole uploader -------------------------------------------


@pytest.mark.parametrize("profile", ["integration", "webhook"])
def test_a_captive_portal_keeps_taps_pending_then_they_are_delivered(
    tmp_path: Path, profile: str
) -> None:
    # Issue 14 item 2: the webhook profile's default success rule took the portal's 200.
    def portal(handler: BaseHTTPRequestHandler, server: Server) -> None:
        send(handler, 200, PORTAL, "text/html")

    with Server(portal) as server:
        settings = make_settings(tmp_path, server.url(), uplink={"profile": profile})
        seen: list[str] = []

        async def through_the_portal(store: Store, uploader: Any) -> None:
            await asyncio.to_thread(server.received.wait, 10)
            deadline = asyncio.get_running_loop().time() + 10
            while uploader.state != "paused-config":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            seen.append(uploader.message)
            assert [row[2] for row in states(settings)] == ["pending", "pending"]
            server.answer = api_ok  # the technician logged the gate in

        def done() -> bool:
            return [row[2] for row in states(settings)] == ["delivered", "delivered"]

        asyncio.run(
            uploading(
                settings,
                done,
                before=lambda s: (
                    record(s, settings, "0000000001"),
                    record(s, settings, "0000000002"),
                ),
                during=through_the_portal,
            )
        )
    assert seen == [f"{NOT_THE_API} (200: Guest Wi-Fi login)"]


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return Server(api_ok, tls=context)


def pem(tmp_path: Path, ca: trustme.CA) -> Path:
    path = tmp_path / "school-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def test_tls_trusted_through_ca_file(tmp_path: Path, ca: trustme.CA) -> None:
    with tls_server(ca, "127.0.0.1") as server:
        settings = make_settings(tmp_path, server.url(), uplink={"ca_file": str(pem(tmp_path, ca))})
        assert post(settings).outcome == Delivered("Budi", "PRESENT")


def test_tls_refused_without_ca_file_whatever_ssl_cert_file_says(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An environment that would trust the school's CA is not what the daemon uses:
    # systemd does not pass it, so the test must not either.
    monkeypatch.setenv("SSL_CERT_FILE", str(pem(tmp_path, ca)))
    with tls_server(ca, "127.0.0.1") as server:
        reply = post(make_settings(tmp_path, server.url()))
    assert isinstance(reply.outcome, Paused)
    assert reply.outcome.state == "paused-config"
    assert reply.outcome.message.startswith(
        "the server's certificate is not trusted: set [uplink] ca_file"
    )


def test_tls_refused_on_a_hostname_mismatch(tmp_path: Path, ca: trustme.CA) -> None:
    with tls_server(ca, "attendance.other-school.sch.id") as server:
        settings = make_settings(tmp_path, server.url(), uplink={"ca_file": str(pem(tmp_path, ca))})
        reply = post(settings)
    assert isinstance(reply.outcome, Paused)
    assert reply.outcome.message.startswith(
        "the server's certificate is not for 127.0.0.1: check the host name in [uplink] url"
    )


def test_mutual_tls(tmp_path: Path, ca: trustme.CA) -> None:
    gates = trustme.CA()
    gate = gates.issue_cert("gate-test.gates.school.lan")
    cert, key = tmp_path / "gate.pem", tmp_path / "gate.key"
    gate.cert_chain_pems[0].write_to_path(str(cert))
    gate.private_key_pem.write_to_path(str(key))
    ca_file = str(pem(tmp_path, ca))
    with tls_server(ca, "127.0.0.1", client_ca=gates) as server:
        with_cert = make_settings(
            tmp_path,
            server.url(),
            uplink={"ca_file": ca_file, "cert_file": str(cert), "key_file": str(key)},
        )
        assert post(with_cert).outcome == Delivered("Budi", "PRESENT")
        without = make_settings(tmp_path, server.url(), uplink={"ca_file": ca_file})
        refused = post(without).outcome
    # TLS 1.3 checks the client's certificate after the handshake: the server's alert
    # races its closing of the connection, which may reset it and lose the alert. Then
    # it is a plain connection error (retried), never a delivery.
    assert not isinstance(refused, Delivered)
    if isinstance(refused, Paused):
        assert refused.message.startswith("the server refuses this gate's client certificate")
    else:
        assert isinstance(refused, Retry)
        assert refused.reason == "connection-error"


# -- proxies -------------------------------------------------------------------------------


def test_http_through_the_configured_proxy(tmp_path: Path) -> None:
    with Server() as server, Proxy() as proxy:
        settings = make_settings(tmp_path, server.url(), uplink={"proxy": proxy.url})
        assert post(settings).outcome == Delivered("Budi", "PRESENT")
    assert proxy.seen == [f"POST {server.url()}"]


def test_https_through_a_proxy_from_the_environment(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_server(ca, "127.0.0.1") as server, Proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        settings = make_settings(tmp_path, server.url(), uplink={"ca_file": str(pem(tmp_path, ca))})
        assert post(settings).outcome == Delivered("Budi", "PRESENT")
        assert proxy.seen == [f"CONNECT 127.0.0.1:{server.port}"]
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.0/8")
        assert post(settings).outcome == Delivered("Budi", "PRESENT")
        assert len(proxy.seen) == 1  # bypassed


def test_a_proxy_that_wants_a_password_pauses(tmp_path: Path, ca: trustme.CA) -> None:
    with tls_server(ca, "127.0.0.1") as server, Proxy(credentials="gate:pw") as proxy:
        uplink = {"ca_file": str(pem(tmp_path, ca)), "proxy": proxy.url}
        reply = post(make_settings(tmp_path, server.url(), uplink=uplink))
        assert isinstance(reply.outcome, Paused)
        assert reply.outcome.message.startswith("the proxy refuses us (407")
        uplink["proxy"] = proxy.url.replace("http://", "http://gate:pw@")
        assert post(make_settings(tmp_path, server.url(), uplink=uplink)).outcome == Delivered(
            "Budi", "PRESENT"
        )


def test_a_socks_proxy_from_the_environment_pauses_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if find_spec("socksio") is not None:
        pytest.skip("socksio is installed here: SOCKS proxies work")
    monkeypatch.setenv("ALL_PROXY", "socks5://user:secret@127.0.0.1:1080")
    with Server() as server:
        reply = post(make_settings(tmp_path, server.url()))
    assert isinstance(reply.outcome, Paused)
    assert "needs the socksio package" in reply.outcome.message
    assert "secret" not in reply.outcome.message
    assert server.requests == []


def test_probe_reports_what_the_daemon_meets(tmp_path: Path, ca: trustme.CA) -> None:
    def nest_get(handler: BaseHTTPRequestHandler, server: Server) -> None:
        document = {"message": "Cannot GET /api/v1/attendances/integration", "statusCode": 404}
        send(handler, 404, json.dumps(document))

    with tls_server(ca, "127.0.0.1") as server, Proxy() as proxy:
        server.answer = nest_get
        uplink = {"ca_file": str(pem(tmp_path, ca)), "proxy": proxy.url}
        settings = make_settings(tmp_path, server.url(), uplink=uplink)
        found = http.probe(settings.uplink, device="gate-test")
        assert found == http.Probe(
            True, "the server answers a GET with 404 Cannot GET /api/v1/attendances/integration"
        )
        assert proxy.seen == [f"CONNECT 127.0.0.1:{server.port}"]
        assert server.requests[0]["method"] == "GET"
        server.answer = lambda handler, server: send(handler, 200, PORTAL, "text/html")
        portal = http.probe(settings.uplink)
    assert portal == http.Probe(False, f"200 Guest Wi-Fi login: {NOT_THE_API}")
