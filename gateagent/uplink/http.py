"""The HTTP boundary: one request of one tap in, one `Reply` out.

Everything the HTTP stack can raise is turned into an `Outcome` here, in one place (as
httpx's `map_httpcore_exceptions` does for httpcore), so the scheduler above only ever
sees `Delivered`, `Rejected`, `Paused` or `Retry`, and the token never leaves in an
error text.

    any failure of a request
     +-- the whole request took longer than [uplink] timeout     Retry timeout
     +-- refused, unreachable, DNS, connect timeout               Retry connection-error
     +-- lost or broken after the request went out                Retry, ambiguous
     +-- the server's certificate is not trusted / not its name   Paused paused-config
     +-- a proxy that refuses us (407, 403), cannot be used       Paused paused-config
     +-- a request that cannot be sent (a header, the URL)        Paused paused-config
     +-- an answer that cannot be read (broken gzip)              Paused paused-config
     +-- anything else                                            Retry

The requests go through httpx's transport layer, httpcore, synchronously: `post` runs on
one of the uploader's worker threads (`uplink/client.py`), and many threads share one
`Client` (httpcore's connection pool is thread-safe). httpx itself parses and checks the
URLs and proxies once per client; its client layer (cookies, redirects, auth flows,
request and response models) is not used, because gateagent needs none of it and it cost
about a third of a request's instructions (README "Performance").

Limits (README "Networks"): `[uplink] timeout` is one deadline for the whole request,
connect to last byte. httpcore's own timeouts are per socket operation, so a server that
drips a byte a second would never trip them: every wait on the socket (connect, TLS
handshake, each write, each read) is bounded here by what is left of the request's
deadline (`Call`), and another thread can end a request at once by shutting its socket
down (`Call.cancel`). An answer is read up to `BODY_MAX` bytes after decompression and
the rest is never read, so a huge error page or a gzip bomb costs at most that much.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpcore
import httpx

from gateagent import logs, network
from gateagent.config import Uplink
from gateagent.core.answers import (
    NOT_THE_API,
    Delivered,
    Outcome,
    Paused,
    Retry,
    classify,
    describe,
    is_transient,
)
from gateagent.core.backoff import retry_after_s
from gateagent.uplink.profiles import Request

# Every profile's answer is a few hundred bytes; 64 KiB is plenty for an error page's
# title and bounds what a wrong or hostile server can make the gate hold.
BODY_MAX = 64 * 1024
# httpx's default: an idle keep-alive connection is closed after this.
KEEPALIVE_S = 5.0

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) that need words of their own.
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_IP_ADDRESS_MISMATCH = 64
# Alerts a server sends when it wants (another) client certificate (mutual TLS).
_CLIENT_CERT_ALERTS = (
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
)


@dataclass(frozen=True)
class Reply:
    """What one request came to."""

    outcome: Outcome
    retry_after_s: float | None = None


class Call:
    """One request's total deadline, and the socket it waits on: `cancel()` (from any
    thread) shuts that socket down, which wakes the thread blocked on it at once."""

    __slots__ = ("_request_line", "_sock", "cancelled", "deadline", "method", "sent")

    def __init__(self, timeout_s: float, method: str = "POST") -> None:
        self.deadline = time.monotonic() + timeout_s
        # Once our request's first bytes went out, the server may act on it: a failure
        # from then on is ambiguous (a proxy's CONNECT is not our request).
        self.sent = False
        self.cancelled = False
        self._sock: socket.socket | None = None
        self.method = method.encode("ascii")
        self._request_line = self.method + b" "

    def cancel(self) -> None:
        self.cancelled = True
        sock = self._sock
        if sock is not None:
            # Already closed: nothing waits on it.
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown, also for an SSLSocket: its override
                # would drop the TLS state under the thread still reading it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def wrote(self, buffer: bytes) -> None:
        # h11 writes a request's line and headers in one piece.
        if not self.sent and buffer.startswith(self._request_line):
            self.sent = True

    def wait_s(self, sock: socket.socket | None, timeout: float | None) -> float:
        """How long the next operation on `sock` may wait: what is left of the deadline.
        Raises `_Ended` once nothing is left or the call was cancelled."""
        # The socket first, then the flag: `cancel()` sets the flag, then reads the
        # socket, so one of the two sees the other.
        self._sock = sock
        if self.cancelled:
            raise _Ended("cancelled")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Ended("deadline")
        return left if timeout is None else min(timeout, left)


class _Ended(Exception):
    """A call's deadline passed or it was cancelled, between two socket operations."""


class Client:
    """The keep-alive connections of one `[uplink]` setup: its TLS trust and client
    certificate, its proxy or the environment's, and a User-Agent that names the gate.
    Never raises: a setup that cannot work answers every request with a `Paused` that
    says why. Thread-safe."""

    def __init__(self, uplink: Uplink, *, device: str = "") -> None:
        # What every request carries, and the way to each URL: read by `_exchange`.
        self.headers = [
            (b"User-Agent", network.user_agent(device).encode("latin-1")),
            # Only what `_read` can decode within its limit (no br, no zstd).
            (b"Accept-Encoding", b"gzip, deflate"),
        ]
        self._pools: list[httpcore.ConnectionPool] = []
        self.routes: dict[str, _Route] = {}
        urls = uplink.urls()
        # Proxies and trust come from [uplink] and network.py only, as `check` reports.
        proxies = {url: network.proxy_for(url, uplink.proxy) for url in urls}
        tls_for = [*urls, *(proxy.url for proxy in proxies.values() if proxy is not None)]
        tls: ssl.SSLContext | None = None
        problem = None
        # Plain http:// needs no TLS context: loading the system store costs ~250M Ir.
        if any(urlsplit(url).scheme == "https" for url in tls_for):
            try:
                tls = network.tls_context(uplink.ca_file, uplink.cert_file, uplink.key_file)
            except (OSError, ssl.SSLError) as exc:
                # Checked at start (config.load); a file removed or broken since then.
                problem = f"the TLS files of [uplink] cannot be used: {exc}"
        by_proxy: dict[str | None, httpcore.ConnectionPool | str] = {}
        for url in urls:
            proxy = proxies[url]
            key = None if proxy is None else proxy.url
            if problem is None and key not in by_proxy:
                by_proxy[key] = self._pool(uplink.concurrency, tls, proxy)
            self.routes[url] = _route(url, problem or by_proxy[key])

    def _pool(
        self, size: int, tls: ssl.SSLContext | None, proxy: network.Proxy | None
    ) -> httpcore.ConnectionPool | str:
        common: dict[str, Any] = {
            "ssl_context": tls,
            "max_connections": size,
            "max_keepalive_connections": size,
            "keepalive_expiry": KEEPALIVE_S,
            "network_backend": _BACKEND,
        }
        pool: httpcore.ConnectionPool
        if proxy is None:
            pool = httpcore.ConnectionPool(**common)
        elif unusable := network.proxy_problem(proxy.url):
            return f"the proxy from {proxy.source} cannot be used: {unusable}"
        else:
            try:
                # httpx.Proxy takes `user:password@` out of the URL, as httpx sends it.
                described = httpx.Proxy(proxy.url)
                url = _core_url(described.url)
                if described.url.scheme in ("http", "https"):
                    https = described.url.scheme == "https"
                    pool = httpcore.HTTPProxy(
                        proxy_url=url,
                        proxy_auth=described.raw_auth,
                        proxy_ssl_context=tls if https else None,
                        **common,
                    )
                else:
                    pool = httpcore.SOCKSProxy(
                        proxy_url=url, proxy_auth=described.raw_auth, **common
                    )
            except Exception as exc:  # any failure here is the proxy setting's
                return f"the proxy from {proxy.source} cannot be used: {_error_text(exc)}"
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        """Close the connections. A request still running on another thread then fails."""
        for pool in self._pools:
            pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def client(uplink: Uplink, *, device: str = "") -> Client:
    """The keep-alive client the uploader (and `check`) sends with."""
    return Client(uplink, device=device)


def post(client: Client, request: Request, uplink: Uplink, call: Call | None = None) -> Reply:
    """POST one tap and say what the answer means. Blocks: run it on a worker thread."""
    if request.json is not None:
        body = json.dumps(
            request.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        content_type: bytes | None = b"application/json"
    elif request.form is not None:
        body = urlencode(list(request.form.items())).encode()
        content_type = b"application/x-www-form-urlencoded"
    else:
        body, content_type = b"", None
    answer = _exchange(
        client,
        call or Call(uplink.timeout),
        request.url,
        uplink,
        headers=request.headers,
        body=body,
        content_type=content_type,
    )
    if isinstance(answer, Reply):
        return answer
    retry_after = None
    if (header := answer.headers.get("retry-after")) is not None:
        retry_after = retry_after_s(header, datetime.now(UTC))
    if answer.unreadable is not None and not is_transient(answer.status):
        # The server may have taken the tap, but its answer cannot say so: keep the tap.
        message = f"the server's answer cannot be read: {answer.unreadable} (a proxy in the way?)"
        return Reply(Paused("paused-config", answer.status, message), retry_after)
    outcome = classify(
        uplink.profile,
        answer.status,
        answer.body,
        uplink.webhook.statuses,
        uplink.webhook.success,
        content_type=answer.headers.get("content-type", ""),
    )
    if isinstance(outcome, Retry):
        outcome = replace(outcome, message=_at(answer.host, outcome.message))
    return Reply(_without_secrets(outcome), retry_after)


@dataclass(frozen=True)
class Probe:
    """What `check` reports of one harmless request (GET [uplink] url)."""

    ok: bool
    detail: str


def probe(uplink: Uplink, *, device: str = "") -> Probe:
    """GET the uplink's URL with the daemon's own client (trust, client certificate,
    proxy, deadline, size limit): never a POST, which would record an attendance."""
    with client(uplink, device=device) as http:
        answer = _exchange(
            http,
            Call(uplink.timeout, "GET"),
            uplink.url,
            uplink,
            headers={},
            body=None,
            content_type=None,
        )
    if isinstance(answer, Reply):
        failed = answer.outcome
        return Probe(False, "" if isinstance(failed, Delivered) else failed.message)
    said = logs.redact(describe(answer.body))
    shown = f"{answer.status}" + (f" {said}" if said else "")
    if answer.unreadable is not None:
        return Probe(False, f"{shown}: the answer cannot be read: {answer.unreadable}")
    html = "html" in answer.headers.get("content-type", "").lower()
    if 300 <= answer.status < 400:
        where = answer.headers.get("location", "?")
        return Probe(False, f"{shown}: redirected to {where}: check [uplink] url")
    if answer.status < 300 and html:
        return Probe(False, f"{shown}: {NOT_THE_API}")
    if answer.status in (401, 407) or is_transient(answer.status):
        return Probe(False, f"{shown}: the server answers, but not as it should")
    return Probe(True, f"the server answers a GET with {shown}")


# -- the network under the deadline ------------------------------------------------------

# The call each worker thread is carrying out: the streams below bound their waits by it.
_current = threading.local()


class _Stream(httpcore.NetworkStream):
    """httpcore's socket stream, with every wait bounded by the current call's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._sock: socket.socket | None = inner.get_extra_info("socket")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            timeout = call.wait_s(self._sock, timeout)
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            timeout = call.wait_s(self._sock, timeout)
            call.wrote(buffer)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            timeout = call.wait_s(self._sock, timeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        call: Call | None = getattr(_current, "call", None)
        if call is not None:
            timeout = call.wait_s(None, timeout)
        stream = _Stream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )
        if call is not None and call.cancelled:
            # Cancelled while resolving the name, which no socket could interrupt.
            stream.close()
            raise _Ended("cancelled")
        return stream

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_BACKEND = _Backend()


# -- one exchange ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    host: str  # as errors name the server
    target: httpcore.URL | None = None
    host_header: bytes = b""
    pool: httpcore.ConnectionPool | None = None
    problem: str = ""  # why there is no pool: every request pauses with it


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )


def _route(url: str, pool: httpcore.ConnectionPool | str) -> _Route:
    host = urlsplit(url).netloc.rpartition("@")[2]
    try:
        # httpx's URL: IDNA host names, the default port, the errors of a bad URL.
        parsed = httpx.URL(url)
        target = _core_url(parsed)
    except Exception as exc:
        return _Route(host, problem=f"the request cannot be sent: {_error_text(exc)}")
    if isinstance(pool, str):
        return _Route(host, problem=pool)
    return _Route(host, target, parsed.netloc, pool)


@dataclass(frozen=True)
class _Answer:
    host: str
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes  # at most BODY_MAX bytes, decoded
    unreadable: str | None  # why the body could not be decoded


def _exchange(
    client: Client,
    call: Call,
    url: str,
    uplink: Uplink,
    *,
    headers: Mapping[str, str],
    body: bytes | None,
    content_type: bytes | None,
) -> _Answer | Reply:
    route = client.routes[url]
    if route.pool is None or route.target is None:
        return Reply(Paused("paused-config", 0, route.problem))
    _current.call = call
    try:
        raw = [(b"Host", route.host_header), *client.headers]
        for name, value in headers.items():
            raw.append((name.encode("ascii"), value.encode("ascii")))
        if body is not None:
            if content_type is not None:
                raw.append((b"Content-Type", content_type))
            raw.append((b"Content-Length", str(len(body)).encode()))
        # httpcore's own timeouts are per operation; the streams bound each by the rest
        # of the deadline, and the pool's wait for a free connection by all of it.
        left = max(0.0, call.deadline - time.monotonic())
        timeouts = {"connect": left, "read": left, "write": left, "pool": left}
        request = httpcore.Request(
            call.method, route.target, headers=raw, content=body, extensions={"timeout": timeouts}
        )
        response = route.pool.handle_request(request)
        try:
            got, unreadable = _read(response)
        finally:
            response.close()
        answered = {
            name.decode("latin-1").lower(): v.decode("latin-1") for name, v in response.headers
        }
        return _Answer(route.host, response.status, answered, got, unreadable)
    except (_Ended, httpcore.TimeoutException) as exc:
        if call.cancelled:
            return Reply(Retry("cancelled", _at(route.host, "cancelled"), ambiguous=True))
        if isinstance(exc, httpcore.ConnectTimeout | httpcore.PoolTimeout) or not call.sent:
            message = _at(route.host, f"no connection within {uplink.timeout:g}s")
            return Reply(Retry("timeout", message))
        message = _at(route.host, f"no complete answer within {uplink.timeout:g}s")
        return Reply(Retry("timeout", message, ambiguous=True))
    except Exception as exc:  # the boundary: every error becomes an Outcome
        if call.cancelled:
            return Reply(Retry("cancelled", _at(route.host, "cancelled"), ambiguous=True))
        return Reply(_without_secrets(_failure(exc, route.host, call.sent, uplink)))
    finally:
        _current.call = None


def _read(response: httpcore.Response) -> tuple[bytes, str | None]:
    """At most BODY_MAX bytes of the decoded body; the rest is never read."""
    encoding = ""
    for name, value in response.headers:
        if name.lower() == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    elif encoding not in ("", "identity"):
        return b"", f"Content-Encoding {encoding!r}, which gateagent does not accept"
    body = bytearray()
    stream = response.stream
    assert isinstance(stream, Iterable)
    try:
        for chunk in stream:
            if decoder is None:
                body += chunk[: BODY_MAX - len(body)]
            else:
                data = chunk
                while data and len(body) < BODY_MAX and not decoder.eof:
                    # max_length: a gzip bomb inflates only as far as the limit.
                    body += decoder.decompress(data, BODY_MAX - len(body))
                    data = decoder.unconsumed_tail
            if len(body) >= BODY_MAX or (decoder is not None and decoder.eof):
                break
    except zlib.error:
        return bytes(body), f"its Content-Encoding {encoding} is broken"
    return bytes(body), None


def _failure(exc: BaseException, host: str, sent: bool, uplink: Uplink) -> Outcome:
    """The outcome of a request that raised `exc`, with words a person can act on."""
    if (tls := _tls_error(exc, host, uplink)) is not None:
        return tls
    if isinstance(exc, httpcore.ProxyError):
        text = str(exc)
        if text.startswith(("407", "403")):
            return Paused(
                "paused-config",
                0,
                f"the proxy refuses us ({text}): set its user and password in [uplink] proxy",
            )
        return Retry("connection-error", _at(host, f"the proxy: {_error_text(exc)}"))
    if isinstance(exc, httpcore.UnsupportedProtocol | httpcore.LocalProtocolError):
        return Paused("paused-config", 0, f"the request cannot be sent: {_error_text(exc)}")
    if isinstance(exc, UnicodeEncodeError):
        # A header value HTTP cannot carry: a token with a BOM or a non-ASCII character.
        return Paused(
            "paused-config",
            0,
            "the request cannot be sent: a header holds a character HTTP cannot carry"
            " (the token? check [uplink] token / token_file)",
        )
    if isinstance(exc, ImportError):
        return Paused("paused-config", 0, f"a library is missing: {exc.name or exc}")
    if isinstance(exc, httpcore.ConnectError):
        return Retry("connection-error", _at(host, _error_text(exc)))
    if isinstance(exc, httpcore.NetworkError | httpcore.ProtocolError):
        return Retry("connection-error", _at(host, _error_text(exc)), ambiguous=sent)
    # Anything else (a bug of ours or a library's, RecursionError, ...): retried, never a
    # lost tap nor a crash of the uploader.
    return Retry("connection-error", _at(host, f"unexpected {_error_text(exc)}"), ambiguous=sent)


def _tls_error(exc: BaseException, host: str, uplink: Uplink) -> Paused | None:
    found = _chained(exc, ssl.SSLError)
    if found is None:
        return None
    trust = network.trust_name(uplink.ca_file)
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if isinstance(found, ssl.SSLCertVerificationError):
        code = found.verify_code
        said = found.verify_message or found.reason or "not verified"
        if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
            return Paused(
                "paused-config",
                0,
                f"the server's certificate is not for {hostname}: check the host name in"
                f" [uplink] url ({said})",
            )
        if code in (_CERT_HAS_EXPIRED, _CERT_NOT_YET_VALID):
            return Paused(
                "paused-config",
                0,
                f"the server's certificate is not valid now ({said}): is this gate's clock"
                " right? else the server's certificate must be renewed",
            )
        return Paused(
            "paused-config",
            0,
            f"the server's certificate is not trusted: set [uplink] ca_file ({said}; trusted:"
            f" {trust})",
        )
    reason = found.reason or ""
    if reason in _CLIENT_CERT_ALERTS:
        return Paused(
            "paused-config",
            0,
            f"the server refuses this gate's client certificate ({reason}): set [uplink]"
            " cert_file and key_file to the certificate the server expects",
        )
    if reason == "WRONG_VERSION_NUMBER":
        return Paused(
            "paused-config",
            0,
            f"{hostname} does not speak TLS on this port: check https:// and the port in"
            " [uplink] url",
        )
    return None


def _chained(exc: BaseException, kind: type[ssl.SSLError]) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _at(host: str, message: str) -> str:
    """The retry warning names the server it could not reach."""
    return f"{host}: {message}" if message else host


def _without_secrets(outcome: Outcome) -> Outcome:
    """The server's words minus our token: a server may echo the request in an error."""
    if isinstance(outcome, Delivered):
        return outcome
    return replace(outcome, message=logs.redact(outcome.message))


def _error_text(exc: BaseException) -> str:
    cause = exc.__context__ or exc.__cause__
    detail = str(exc) or (str(cause) if cause else "")
    detail = " ".join(detail.split())[:300]
    return f"{type(exc).__name__}: {detail}".rstrip(": ")
