"""The HTTP boundary: one request of one tap in, one `Reply` out.

Everything the HTTP stack can raise is turned into an `Outcome` here, in one place (as
httpx's `map_httpcore_exceptions` does for httpcore), so the scheduler above only ever
sees `Delivered`, `Rejected`, `Paused` or `Retry`, and the token never leaves in an
error text. Only `asyncio.CancelledError` passes through.

    any failure of a request
     +-- the whole request took longer than [uplink] timeout     Retry timeout
     +-- refused, unreachable, DNS, connect timeout               Retry connection-error
     +-- lost or broken after the request went out                Retry, ambiguous
     +-- the server's certificate is not trusted / not its name   Paused paused-config
     +-- a proxy that refuses us (407, 403), cannot be used       Paused paused-config
     +-- a request that cannot be sent (a header, the URL)        Paused paused-config
     +-- an answer that cannot be read (broken gzip)              Paused paused-config
     +-- anything else                                            Retry

Limits (README "Networks"): `[uplink] timeout` is one deadline for the whole request,
connect to last byte, so a server that drips a byte a second cannot hold a request (and
the watchdog) for ever; an answer is read up to `BODY_MAX` bytes after decompression and
the rest is never read, so a huge error page or a gzip bomb costs at most that much.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

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


def client(
    uplink: Uplink, transport: httpx.AsyncBaseTransport | None = None, *, device: str = ""
) -> httpx.AsyncClient:
    """The keep-alive client the uploader (and `check`) sends with: the TLS trust and
    client certificate of `[uplink]`, its proxy or the environment's, and a User-Agent
    that names the gate (`device`). Never raises: a setup that cannot work answers every
    request with a `Paused` that says why."""
    limits = httpx.Limits(
        max_connections=uplink.concurrency, max_keepalive_connections=uplink.concurrency
    )
    headers = {
        "User-Agent": network.user_agent(device),
        # Only what `_read` can decode within its limit (no br, no zstd).
        "Accept-Encoding": "gzip, deflate",
    }
    common: dict[str, Any] = {
        "timeout": uplink.timeout,
        "limits": limits,
        "headers": headers,
        # Proxies and trust come from [uplink] and network.py only: httpx's own reading
        # of the environment (certifi, $SSL_CERT_FILE, .netrc) would differ from `check`.
        "trust_env": False,
    }
    if transport is not None:
        return httpx.AsyncClient(transport=transport, **common)
    verify: ssl.SSLContext | bool = False  # plain http:// only: no TLS to verify
    try:
        if any(urlsplit(url).scheme == "https" for url in uplink.urls()):
            verify = network.tls_context(uplink.ca_file, uplink.cert_file, uplink.key_file)
    except (OSError, ssl.SSLError) as exc:
        # Checked at start (config.load); a file removed or broken since then.
        problem = f"the TLS files of [uplink] cannot be used: {exc}"
        return httpx.AsyncClient(transport=_Unusable(problem), **common)
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for url in uplink.urls():
        proxy = network.proxy_for(url, uplink.proxy)
        if proxy is None:
            continue
        parts = urlsplit(url)
        pattern = f"{parts.scheme}://{parts.hostname}"
        if unusable := network.proxy_problem(proxy.url):
            why = f"the proxy from {proxy.source} cannot be used: {unusable}"
            mounts[pattern] = _Unusable(why)
            continue
        try:
            mounts[pattern] = httpx.AsyncHTTPTransport(
                proxy=proxy.url, verify=verify, limits=limits
            )
        except Exception as exc:  # any failure here is the proxy setting's
            problem = f"the proxy from {proxy.source} cannot be used: {_error_text(exc)}"
            mounts[pattern] = _Unusable(problem)
    base = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    return httpx.AsyncClient(transport=base, mounts=mounts, **common)


async def post(client: httpx.AsyncClient, request: Request, uplink: Uplink) -> Reply:
    """POST one tap and say what the answer means."""
    answer = await _exchange(
        client,
        "POST",
        request.url,
        uplink,
        headers=request.headers,
        json=request.json,
        data=request.form,
    )
    if isinstance(answer, Reply):
        return answer
    retry_after = retry_after_s(answer.headers.get("retry-after"), datetime.now(UTC))
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
    )
    if isinstance(outcome, Retry):
        outcome = replace(outcome, message=_at(answer.host, outcome.message))
    return Reply(_without_secrets(outcome), retry_after)


@dataclass(frozen=True)
class Probe:
    """What `check` reports of one harmless request (GET [uplink] url)."""

    ok: bool
    detail: str


async def probe(uplink: Uplink, *, device: str = "") -> Probe:
    """GET the uplink's URL with the daemon's own client (trust, client certificate,
    proxy, deadline, size limit): never a POST, which would record an attendance."""
    async with client(uplink, device=device) as http:
        answer = await _exchange(http, "GET", uplink.url, uplink)
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


# -- one exchange ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    host: str
    status: int
    headers: Mapping[str, str]
    body: bytes  # at most BODY_MAX bytes, decoded
    unreadable: str | None  # why the body could not be decoded


class _Unusable(httpx.AsyncBaseTransport):
    """A transport for a setup that cannot work (a SOCKS proxy without socksio, TLS files
    gone): every request fails with the reason, which `post` turns into a pause."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise _SetupError(self.problem)


class _SetupError(Exception):
    pass


async def _exchange(
    client: httpx.AsyncClient, method: str, url: str, uplink: Uplink, **content: Any
) -> _Answer | Reply:
    host = urlsplit(url).netloc.rpartition("@")[2]
    sent = False

    async def trace(event: str, info: Mapping[str, Any]) -> None:
        # Once our request's headers start out, the server may act on it: a failure from
        # then on is ambiguous (a proxy's CONNECT is not our request).
        nonlocal sent
        if event.endswith("send_request_headers.started"):
            request = info.get("request")
            sent = sent or getattr(request, "method", b"") != b"CONNECT"

    try:
        async with (
            asyncio.timeout(uplink.timeout),
            client.stream(method, url, extensions={"trace": trace}, **content) as response,
        ):
            body, unreadable = await _read(response)
            return _Answer(host, response.status_code, response.headers, body, unreadable)
    except (TimeoutError, httpx.TimeoutException) as exc:
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) or not sent:
            message = _at(host, f"no connection within {uplink.timeout:g}s")
            return Reply(Retry("timeout", message))
        message = _at(host, f"no complete answer within {uplink.timeout:g}s")
        return Reply(Retry("timeout", message, ambiguous=True))
    except Exception as exc:  # the boundary: every error becomes an Outcome
        return Reply(_without_secrets(_failure(exc, host, sent, uplink)))


async def _read(response: httpx.Response) -> tuple[bytes, str | None]:
    """At most BODY_MAX bytes of the decoded body; the rest is never read."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    elif encoding not in ("", "identity"):
        return b"", f"Content-Encoding {encoding!r}, which gateagent does not accept"
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
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
    if isinstance(exc, _SetupError):
        return Paused("paused-config", 0, str(exc))
    if (tls := _tls_error(exc, host, uplink)) is not None:
        return tls
    if isinstance(exc, httpx.ProxyError):
        text = str(exc)
        if text.startswith(("407", "403")):
            return Paused(
                "paused-config",
                0,
                f"the proxy refuses us ({text}): set its user and password in [uplink] proxy",
            )
        return Retry("connection-error", _at(host, f"the proxy: {_error_text(exc)}"))
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
        return Paused("paused-config", 0, f"the request cannot be sent: {_error_text(exc)}")
    if isinstance(exc, UnicodeEncodeError):
        # A header value httpx cannot encode: a token with a BOM or a non-ASCII character.
        return Paused(
            "paused-config",
            0,
            "the request cannot be sent: a header holds a character HTTP cannot carry"
            " (the token? check [uplink] token / token_file)",
        )
    if isinstance(exc, ImportError):
        return Paused("paused-config", 0, f"a library is missing: {exc.name or exc}")
    if isinstance(exc, httpx.ConnectError):
        return Retry("connection-error", _at(host, _error_text(exc)))
    if isinstance(exc, httpx.TransportError):
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
