"""What a server's answer means for a tap: one table per uplink profile (SPEC "Uplink profiles").

`classify(profile, status, body, statuses, success, content_type)` turns an HTTP status
and body into an `Outcome`; transport failures (timeouts, refused connections) never reach it,
the HTTP boundary (`uplink/http.py`) turns them into `Retry` or `Paused` itself. Nothing
here does I/O.

Only the API's own answer settles a tap (SPEC "What counts as an answer"): a 2xx counts
as delivered when its body has the profile's shape (integration: a JSON object holding
`data`; absensi: a JSON object with `statusCode` and `payload`; webhook: the configured
`success` rule, by default anything but an HTML page). Any other 2xx is a captive
portal, a proxy's page or a wrong URL: the uplink pauses as `paused-config` and the taps
stay pending.

Where SPEC's tables are silent this module errs towards keeping taps: an answer that
says "this endpoint or our credentials are wrong" (401, a redirect, a 404 that is not
the API's own JSON, any other 4xx that is not JSON, i.e. a proxy's HTML page) pauses the
uplink instead of rejecting every tap one by one.

The server's words (`_message`, a walk over up to 800 characters) are worked out only
for an outcome that carries them: a delivered tap's answer is only parsed.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Profile = Literal["integration", "absensi", "webhook"]
PausedState = Literal["paused-auth", "paused-config"]
WebhookAnswer = Literal["delivered", "duplicate", "rejected", "auth", "transient"]
# `[uplink.webhook] success`: what a webhook 2xx must look like to count as delivered:
# not an HTML page (a captive portal's or a proxy's), any 2xx at all, or a JSON body.
WebhookSuccess = Literal["not-html", "any-2xx", "json"]

MESSAGE_MAX = 200
# The start of every "this is not the API answering" pause (README "Networks").
NOT_THE_API = "the server's answer is not the attendance API's: a captive portal or a wrong url?"
# How much of a body is looked at for a message: an error page can be megabytes, and the
# message is one short line (the <title> of an HTML page sits near its top).
_SCAN_MAX = 16 * 1024
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")
_HTML = re.compile(rb"\s*<(!doctype|html|head|body|\?xml)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Delivered:
    student_name: str | None = None
    attendance_status: str | None = None
    # The server already had this tap (webhook "duplicate", e.g. 409 "already checked in").
    duplicate: bool = False


@dataclass(frozen=True)
class Rejected:
    reason: str  # "unknown-card", "future-date", "invalid", or "http-<status>"
    status: int
    message: str
    # The server says the tap lies in the future: the gate's clock is ahead.
    clock_ahead: bool = False


@dataclass(frozen=True)
class Paused:
    state: PausedState
    status: int
    message: str


@dataclass(frozen=True)
class Retry:
    reason: str  # "http-<status>", "timeout", "connection-error"
    message: str
    status: int | None = None
    # The server may still be working on the request (a timeout after sending, nginx's
    # 502/504, a connection lost after sending): its retry must not overlap it (SPEC
    # "What counts as an answer": the seed-000 server makes two check-ins of two
    # overlapping requests for one student).
    ambiguous: bool = False


Outcome = Delivered | Rejected | Paused | Retry


def classify(
    profile: Profile,
    status: int,
    body: bytes,
    statuses: Mapping[str, WebhookAnswer] | None = None,
    success: WebhookSuccess = "not-html",
    *,
    content_type: str = "",
) -> Outcome:
    """The outcome of one POST of one tap. `statuses` is the webhook status map,
    `success` the webhook's rule for a 2xx, `content_type` the answer's Content-Type;
    `body` may be only the start of the answer."""
    document = _json(body)
    if profile == "integration":
        return _integration(status, document, body)
    if profile == "absensi":
        return _absensi(status, document, body)
    # A captive portal or a proxy answers 200 with its HTML page: not the endpoint.
    portal = (success == "not-html" and "html" in content_type.lower()) or (
        success == "json" and document is None
    )
    return _webhook(status, document, body, statuses or {}, portal)


def not_the_api(status: int, message: str) -> Paused:
    """A 2xx (or an HTML 4xx) that is not the attendance API's: the taps stay pending."""
    what = f"{status}: {message}" if message else f"{status}, an empty body"
    return Paused("paused-config", status, f"{NOT_THE_API} ({what})")


def describe(body: bytes) -> str:
    """The server's words in an answer, one short line (for `check` and error texts)."""
    return _message(_json(body), body)


def is_transient(status: int) -> bool:
    """408, 429 and 5xx: the server may take the same request later (SPEC table)."""
    return status in (408, 429) or status >= 500


def _transient(status: int, message: str) -> Retry:
    # 502/504: a gateway (nginx) gave up waiting for the API, which may still be at it.
    return Retry(f"http-{status}", message, status, ambiguous=status in (502, 504))


def _integration(status: int, document: Any, body: bytes) -> Outcome:
    if 200 <= status < 300 and isinstance(document, dict) and "data" in document:
        # Seed 000: `{"data": {...}}`, `{"data": {}}` for a student who is not CURRENT.
        # The common case: no message is needed (nothing shows it).
        return _delivered(document["data"], "studentName", "attendanceStatus")
    message = _message(document, body)
    if 200 <= status < 300:
        return not_the_api(status, message)
    if is_transient(status):
        return _transient(status, message)
    lowered = message.lower()
    if status == 400 and "invalid authentication token" in lowered:
        return Paused("paused-auth", status, message)
    if status == 400 and "tomorrow" in lowered:
        return Rejected("future-date", status, message, clock_ahead=True)
    if status == 404 and "campus gate not found" in lowered:
        return Paused("paused-config", status, message)
    if status == 404 and "no student found" in lowered:
        return Rejected("unknown-card", status, message)
    return _unlisted(status, document, message)


def _absensi(status: int, document: Any, body: bytes) -> Outcome:
    if 200 <= status < 300:
        # Seed 003: `{"statusCode": 201, "message": ..., "payload": {"user", "data"}}`.
        if not isinstance(document, dict) or "statusCode" not in document:
            return not_the_api(status, _message(document, body))
        payload = document.get("payload")
        if not isinstance(payload, dict):
            return not_the_api(status, _message(document, body))
        user = payload.get("user")
        record = payload.get("data") or payload.get("absensi")
        name = _text(user.get("name")) if isinstance(user, dict) else None
        kept = _text(record.get("keterangan")) if isinstance(record, dict) else None
        return Delivered(name, kept)
    message = _message(document, body)
    if is_transient(status):
        return _transient(status, message)
    if status == 404 and isinstance(document, dict):
        return Rejected("unknown-card", status, message)
    if status == 400:
        return Rejected("invalid", status, message)
    return _unlisted(status, document, message)


def _unlisted(status: int, document: Any, message: str) -> Outcome:
    """Answers outside the profile's table, shared by integration and absensi."""
    if status == 401 or (status == 403 and isinstance(document, dict)):
        return Paused("paused-auth", status, message)
    if 300 <= status < 400:
        return Paused("paused-config", status, f"redirected: check [uplink] url ({message})")
    if status == 404 and (not isinstance(document, dict) or message.startswith("Cannot ")):
        # Not the API answering about this tap but a wrong path (NestJS "Cannot POST /x",
        # a proxy's HTML page): every tap would fail the same way.
        return Paused("paused-config", status, f"not found: check [uplink] url ({message})")
    if 400 <= status < 500 and not isinstance(document, dict):
        # Both APIs answer every error with a JSON object (NestJS, seed 003): a 4xx page
        # that is not one comes from something in front of the API (a proxy's 403, 405
        # or 413 page) and would refuse every tap alike.
        return not_the_api(status, message)
    if 400 <= status < 500:
        return Rejected(f"http-{status}", status, message)
    return _transient(status, message)


_WEBHOOK_DEFAULTS: dict[str, WebhookAnswer] = {
    "2xx": "delivered",
    "409": "duplicate",
    "401": "auth",
    "403": "auth",
    "408": "transient",
    "429": "transient",
    "4xx": "rejected",
    "5xx": "transient",
}


def webhook_answer(status: int, statuses: Mapping[str, WebhookAnswer]) -> WebhookAnswer:
    """The configured answer for a status: the exact code, then its class, then the defaults."""
    code, family = str(status), f"{str(status)[0]}xx"
    for table in (statuses, _WEBHOOK_DEFAULTS):
        for key in (code, family):
            if key in table:
                return table[key]
    return "transient"


def _webhook(
    status: int,
    document: Any,
    body: bytes,
    statuses: Mapping[str, WebhookAnswer],
    portal: bool,
) -> Outcome:
    answer = webhook_answer(status, statuses)
    if portal and answer in ("delivered", "duplicate") and 200 <= status < 300:
        return not_the_api(status, _message(document, body))
    if answer == "delivered":
        return Delivered()
    if answer == "duplicate":
        return Delivered(duplicate=True)
    message = _message(document, body)
    if answer == "rejected":
        return Rejected(f"http-{status}", status, message)
    if answer == "auth":
        return Paused("paused-auth", status, message)
    return _transient(status, message)


def _delivered(data: Any, name_key: str, status_key: str) -> Delivered:
    if not isinstance(data, dict):
        return Delivered()
    return Delivered(_text(data.get(name_key)), _text(data.get(status_key)))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: a deep `[[[[...` is not an answer either (and json raises it).
        return None


def _message(document: Any, body: bytes) -> str:
    """The server's own words, one line and short enough for a log line or a CSV cell."""
    found: Any = None
    if isinstance(document, dict):
        found = document.get("message") or document.get("error")
    if isinstance(found, list):
        # NestJS ValidationPipe: `"message": ["card_no must be a string", ...]`.
        found = "; ".join(str(item) for item in found[:10])
    text = str(found)[:_SCAN_MAX] if found else _first_line(body)
    return _one_line(text)


def _first_line(body: bytes) -> str:
    """What a person would read first: an HTML page's <title> (nginx's "502 Bad
    Gateway", a portal's "Guest Wi-Fi login"), else the first line with text."""
    head = body[:_SCAN_MAX]
    if title := _TITLE.search(head):
        return html.unescape(title[1].decode("utf-8", "replace"))
    text = head.decode("utf-8", "replace")
    if _HTML.match(head):
        text = html.unescape(_TAG.sub("\n", text))
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _one_line(text: str) -> str:
    # One printable line: it goes into the journal and a CSV cell. The input is cut first,
    # so the walk below costs the same on a 200 MB page as on a short message.
    text = text[: MESSAGE_MAX * 4]
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
