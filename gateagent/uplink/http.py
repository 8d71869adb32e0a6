"""The HTTP boundary: one request of one tap in, one `Reply` out.

Everything the HTTP stack can raise is turned into an `Outcome` here, in one place (as
httpx's `map_httpcore_exceptions` does for httpcore), so the scheduler above only ever
sees `Delivered`, `Rejected`, `Paused` or `Retry`, and the token never leaves in an
error text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import httpx

from gateagent import logs
from gateagent.config import Uplink
from gateagent.core.answers import Delivered, Outcome, Retry, classify
from gateagent.core.backoff import retry_after_s
from gateagent.uplink.profiles import Request


@dataclass(frozen=True)
class Reply:
    """What one request came to."""

    outcome: Outcome
    retry_after_s: float | None = None


def client(uplink: Uplink, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The keep-alive client the uploader sends with."""
    limits = httpx.Limits(
        max_connections=uplink.concurrency, max_keepalive_connections=uplink.concurrency
    )
    return httpx.AsyncClient(timeout=uplink.timeout, limits=limits, transport=transport)


async def post(client: httpx.AsyncClient, request: Request, uplink: Uplink) -> Reply:
    """POST one tap and say what the answer means."""
    try:
        response = await client.post(
            request.url, headers=request.headers, json=request.json, data=request.form
        )
    except httpx.ConnectTimeout:
        return Reply(Retry("timeout", f"no connection within {uplink.timeout:g}s"))
    except httpx.TimeoutException:
        # Sent, maybe whole: the server may still be working on it.
        return Reply(Retry("timeout", f"no answer within {uplink.timeout:g}s", ambiguous=True))
    except httpx.ConnectError as exc:
        return Reply(Retry("connection-error", _error_text(exc)))
    except httpx.TransportError as exc:
        # The class name and errno text say enough; the request (and token) stay out.
        return Reply(Retry("connection-error", _error_text(exc), ambiguous=True))
    outcome = classify(
        uplink.profile, response.status_code, response.content, uplink.webhook.statuses
    )
    retry_after = retry_after_s(response.headers.get("retry-after"), datetime.now(UTC))
    return Reply(_without_secrets(outcome), retry_after)


def _without_secrets(outcome: Outcome) -> Outcome:
    """The server's words minus our token: a server may echo the request in an error."""
    if isinstance(outcome, Delivered):
        return outcome
    return replace(outcome, message=logs.redact(outcome.message))


def _error_text(exc: httpx.TransportError) -> str:
    cause = exc.__context__ or exc.__cause__
    detail = str(exc) or (str(cause) if cause else "")
    return f"{type(exc).__name__}: {detail}".rstrip(": ")
