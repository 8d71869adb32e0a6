from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateagent.config import Webhook
from gateagent.core.answers import (
    MESSAGE_MAX,
    NOT_THE_API,
    Delivered,
    Outcome,
    Paused,
    Rejected,
    Retry,
    classify,
    webhook_answer,
)


def body(document: object) -> bytes:
    return json.dumps(document).encode()


# Seed 000_00390d1a767e430c.txt, "Response" and "Error Responses".
INTEGRATION_OK = body(
    {
        "data": {
            "id": 123,
            "studentName": "John Doe",
            "attendanceStatus": "PRESENT",
            "campusGateId": 4,
            "checkOutDate": None,
        }
    }
)

INTEGRATION = [
    (200, INTEGRATION_OK, Delivered("John Doe", "PRESENT")),
    (201, INTEGRATION_OK, Delivered("John Doe", "PRESENT")),
    # A student whose status is not CURRENT: "an empty attendance object".
    (200, body({"data": {}}), Delivered()),
    (200, body({"data": None}), Delivered()),
    (
        400,
        body({"statusCode": 400, "message": "Invalid authentication token"}),
        Paused("paused-auth", 400, "Invalid authentication token"),
    ),
    (
        400,
        body({"statusCode": 400, "message": "Cannot add attendance for tomorrow onwards"}),
        Rejected(
            "future-date", 400, "Cannot add attendance for tomorrow onwards", clock_ahead=True
        ),
    ),
    (
        404,
        body({"statusCode": 404, "message": "No student found with the provided card number"}),
        Rejected("unknown-card", 404, "No student found with the provided card number"),
    ),
    (
        404,
        body({"statusCode": 404, "message": "Campus gate not found"}),
        Paused("paused-config", 404, "Campus gate not found"),
    ),
    (
        400,
        body(
            {"statusCode": 400, "message": ["checktype must be a number"], "error": "Bad Request"}
        ),
        Rejected("http-400", 400, "checktype must be a number"),
    ),
    (422, body({"message": "card_no too long"}), Rejected("http-422", 422, "card_no too long")),
    (408, b"", Retry("http-408", "", 408)),
    (429, body({"message": "Too Many Requests"}), Retry("http-429", "Too Many Requests", 429)),
    (
        500,
        body({"message": "Internal server error"}),
        Retry("http-500", "Internal server error", 500),
    ),
    (502, b"<html>Bad Gateway</html>", Retry("http-502", "Bad Gateway", 502, ambiguous=True)),
    (503, b"", Retry("http-503", "", 503)),
    # Beyond the SPEC table (README "Server answers"): answers that would fail every tap.
    (401, body({"message": "Unauthorized"}), Paused("paused-auth", 401, "Unauthorized")),
    (403, body({"message": "Forbidden"}), Paused("paused-auth", 403, "Forbidden")),
    (
        404,
        body(
            {"statusCode": 404, "message": "Cannot POST /api/v1/attendance", "error": "Not Found"}
        ),
        Paused(
            "paused-config", 404, "not found: check [uplink] url (Cannot POST /api/v1/attendance)"
        ),
    ),
    (
        404,
        b"<html><body>404 Not Found</body></html>",
        Paused(
            "paused-config",
            404,
            "not found: check [uplink] url (404 Not Found)",
        ),
    ),
    (
        301,
        b"",
        Paused("paused-config", 301, "redirected: check [uplink] url ()"),
    ),
]


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    INTEGRATION,
    ids=[f"{status}-{i}" for i, (status, _, _) in enumerate(INTEGRATION)],
)
def test_integration(status: int, answer: bytes, outcome: Outcome) -> None:
    assert classify("integration", status, answer) == outcome


# Seed 003_55ff775913c2cd77.txt.
ABSENSI_ARRIVAL = body(
    {
        "statusCode": 201,
        "message": "Jam hadir dicatat.",
        "payload": {
            "user": {"id": 1, "nis": 1, "name": "murid1", "noMurid": "11111", "kelasId": 1},
            "data": {"id": 59, "rfidNumb": "14", "keterangan": "HADIR", "jamPulang": None},
        },
    }
)
ABSENSI_TEACHER = body(
    {
        "statusCode": 200,
        "message": "Jam pulang dicatat.",
        "payload": {
            "user": {"id": 1, "nik": 1, "name": "guru1", "noGuru": "1"},
            "absensi": {"id": 63, "rfidNumb": "1", "keterangan": "HADIR"},
        },
    }
)
ABSENSI_UNKNOWN = body(
    {
        "statusCode": 404,
        "error": "Kartu RFID tidak terdaftar atau belum terhubung ke murid atau guru",
    }
)

ABSENSI = [
    (201, ABSENSI_ARRIVAL, Delivered("murid1", "HADIR")),
    (200, ABSENSI_TEACHER, Delivered("guru1", "HADIR")),
    (
        404,
        ABSENSI_UNKNOWN,
        Rejected(
            "unknown-card",
            404,
            "Kartu RFID tidak terdaftar atau belum terhubung ke murid atau guru",
        ),
    ),
    (
        400,
        body({"statusCode": 400, "error": "RFID tidak boleh kosong"}),
        Rejected("invalid", 400, "RFID tidak boleh kosong"),
    ),
    (
        500,
        body({"statusCode": 500, "error": "Terjadi kesalahan server."}),
        Retry("http-500", "Terjadi kesalahan server.", 500),
    ),
    (429, b"", Retry("http-429", "", 429)),
    (401, b"", Paused("paused-auth", 401, "")),
    (404, b"Not Found", Paused("paused-config", 404, "not found: check [uplink] url (Not Found)")),
    (418, body({"error": "teapot"}), Rejected("http-418", 418, "teapot")),
]


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    ABSENSI,
    ids=[f"{status}-{i}" for i, (status, _, _) in enumerate(ABSENSI)],
)
def test_absensi(status: int, answer: bytes, outcome: Outcome) -> None:
    assert classify("absensi", status, answer) == outcome


WEBHOOK_DEFAULTS = [
    (200, Delivered()),
    (201, Delivered()),
    (204, Delivered()),
    (409, Delivered(duplicate=True)),
    (401, Paused("paused-auth", 401, "m")),
    (403, Paused("paused-auth", 403, "m")),
    (400, Rejected("http-400", 400, "m")),
    (404, Rejected("http-404", 404, "m")),
    (408, Retry("http-408", "m", 408)),
    (429, Retry("http-429", "m", 429)),
    (500, Retry("http-500", "m", 500)),
    (503, Retry("http-503", "m", 503)),
    (302, Retry("http-302", "m", 302)),
]


@pytest.mark.parametrize(("status", "outcome"), WEBHOOK_DEFAULTS, ids=str)
def test_webhook_defaults(status: int, outcome: Outcome) -> None:
    assert classify("webhook", status, body({"message": "m"})) == outcome


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (403, "rejected"),
        (404, "transient"),
        (409, "transient"),
        (201, "duplicate"),
        (200, "delivered"),
        (503, "transient"),
    ],
)
def test_webhook_map_code_before_class_before_defaults(status: int, expected: str) -> None:
    # Seed 004: a 403 there is a locked payroll period for that day, not our credentials.
    statuses = {"403": "rejected", "4xx": "transient", "201": "duplicate"}
    assert webhook_answer(status, statuses) == expected  # type: ignore[arg-type]


def test_message_is_one_short_line() -> None:
    outcome = classify("integration", 422, body({"message": "a\nb  " + "x" * 500}))
    assert isinstance(outcome, Rejected)
    assert "\n" not in outcome.message
    assert len(outcome.message) == MESSAGE_MAX
    assert outcome.message.startswith("a b x")


@given(
    st.sampled_from(["integration", "absensi", "webhook"]),
    st.integers(min_value=100, max_value=599),
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["data", "payload", "message", "error", "user", "name"]),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=10,
        ).map(body),
    ),
)
def test_any_answer_has_an_outcome(profile: str, status: int, answer: bytes) -> None:
    outcome = classify(profile, status, answer)  # type: ignore[arg-type]
    assert isinstance(outcome, Delivered | Rejected | Paused | Retry)
    if 200 <= status < 300:
        # Delivered only on the profile's own shape; anything else keeps the tap.
        assert isinstance(outcome, Delivered) or (
            outcome == Paused("paused-config", status, outcome.message)
            and outcome.message.startswith(NOT_THE_API)
        )
    if status in (408, 429) or status >= 500:
        assert isinstance(outcome, Retry)
    if not isinstance(outcome, Delivered):
        # The server's words, at most MESSAGE_MAX, in at most a short sentence of ours.
        assert len(outcome.message) <= MESSAGE_MAX + len(NOT_THE_API) + len(" (200: )")
        assert outcome.message.isprintable()


def not_api(status: int, first_line: str) -> Paused:
    return Paused("paused-config", status, f"{NOT_THE_API} ({status}: {first_line})")


PORTAL = (
    b"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>\n"
    b"<title>Guest Wi-Fi &ndash; Login</title></head>\n<body><form>...</form></body></html>"
)
# nginx's own error pages (ngx_http_special_response.c), as a proxy in front of NestJS.
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
NGINX_504 = NGINX_502.replace(b"502 Bad Gateway", b"504 Gateway Time-out")
NGINX_413 = NGINX_502.replace(b"502 Bad Gateway", b"413 Request Entity Too Large")
SQUID_403 = b"<html><head><title>ERROR: The requested URL could not be retrieved</title>"

# Answers that are not the API's (SPEC "What counts as an answer", issue 12).
NOT_THE_APIS = [
    ("integration", 200, PORTAL, not_api(200, "Guest Wi-Fi \u2013 Login")),
    ("integration", 200, b"", Paused("paused-config", 200, f"{NOT_THE_API} (200, an empty body)")),
    ("integration", 204, b"", Paused("paused-config", 204, f"{NOT_THE_API} (204, an empty body)")),
    ("integration", 200, body({"ok": True}), not_api(200, '{"ok": true}')),
    ("integration", 200, body([{"data": {}}]), not_api(200, '[{"data": {}}]')),
    ("integration", 200, b"OK\nmore", not_api(200, "OK")),
    (
        "integration",
        405,
        NGINX_502.replace(b"502 Bad Gateway", b"405 Not Allowed"),
        not_api(405, "405 Not Allowed"),
    ),
    ("integration", 413, NGINX_413, not_api(413, "413 Request Entity Too Large")),
    (
        "integration",
        403,
        SQUID_403,
        not_api(403, "ERROR: The requested URL could not be retrieved"),
    ),
    ("integration", 400, b"<html><title>400 Bad Request</title>", not_api(400, "400 Bad Request")),
    ("absensi", 200, PORTAL, not_api(200, "Guest Wi-Fi \u2013 Login")),
    ("absensi", 201, body({"data": {"id": 1}}), not_api(201, '{"data": {"id": 1}}')),
    ("absensi", 200, body({"statusCode": 200, "message": "ok"}), not_api(200, "ok")),
    ("absensi", 403, SQUID_403, not_api(403, "ERROR: The requested URL could not be retrieved")),
]


@pytest.mark.parametrize(
    ("profile", "status", "answer", "outcome"),
    NOT_THE_APIS,
    ids=[f"{p}-{s}-{i}" for i, (p, s, _, _) in enumerate(NOT_THE_APIS)],
)
def test_answers_that_are_not_the_apis_pause(
    profile: str, status: int, answer: bytes, outcome: Outcome
) -> None:
    assert classify(profile, status, answer) == outcome  # type: ignore[arg-type]


# What NestJS answers by itself, before the application's own errors.
NESTJS = [
    (
        400,
        body(
            {
                "statusCode": 400,
                "message": ["card_no must be a string", "gate must be a number"],
                "error": "Bad Request",
            }
        ),
        Rejected("http-400", 400, "card_no must be a string; gate must be a number"),
    ),
    (
        404,
        body({"message": "Cannot POST /x", "error": "Not Found", "statusCode": 404}),
        Paused("paused-config", 404, "not found: check [uplink] url (Cannot POST /x)"),
    ),
    (502, NGINX_502, Retry("http-502", "502 Bad Gateway", 502, ambiguous=True)),
    (504, NGINX_504, Retry("http-504", "504 Gateway Time-out", 504, ambiguous=True)),
    (503, b"Service Unavailable\r\n", Retry("http-503", "Service Unavailable", 503)),
]


@pytest.mark.parametrize(
    ("status", "answer", "outcome"), NESTJS, ids=[str(i) for i in range(len(NESTJS))]
)
def test_nestjs_and_nginx_shapes(status: int, answer: bytes, outcome: Outcome) -> None:
    assert classify("integration", status, answer) == outcome


@pytest.mark.parametrize(
    ("success", "answer", "content_type", "delivered"),
    [
        # Issue 14 item 2: the default counted a captive portal's page as delivered.
        ("not-html", PORTAL, "text/html; charset=utf-8", False),
        ("not-html", PORTAL, "application/xhtml+xml", False),
        ("not-html", b"OK", "text/plain", True),
        ("not-html", b"", "", True),
        ("not-html", body({"id": "att_000001"}), "application/json", True),
        # The site says any 2xx is its endpoint's, an HTML page too.
        ("any-2xx", PORTAL, "text/html", True),
        ("any-2xx", b"", "", True),
        ("json", body({"id": "att_000001"}), "application/json", True),
        ("json", body([1]), "application/json", True),
        ("json", PORTAL, "text/html", False),
        ("json", PORTAL, "", False),
        ("json", b"", "", False),
    ],
)
def test_webhook_success_rule(
    success: str, answer: bytes, content_type: str, delivered: bool
) -> None:
    outcome = classify("webhook", 200, answer, {}, success, content_type=content_type)  # type: ignore[arg-type]
    if delivered:
        assert outcome == Delivered()
    else:
        assert isinstance(outcome, Paused)
        assert outcome.message.startswith(NOT_THE_API)


def test_webhook_html_pauses_by_default() -> None:
    outcome = classify("webhook", 200, PORTAL, content_type="text/html")
    assert outcome == not_api(200, "Guest Wi-Fi \u2013 Login")
    assert Webhook().success == "not-html"
    # Only a 2xx is taken for a delivery: an HTML 409 is still the map's duplicate.
    assert classify("webhook", 409, PORTAL, content_type="text/html") == Delivered(duplicate=True)


def test_webhook_duplicate_follows_the_success_rule_only_on_2xx() -> None:
    assert classify("webhook", 409, PORTAL, {}, "json") == Delivered(duplicate=True)


def test_a_big_page_is_cheap_and_gives_its_title() -> None:
    # 16 MB of page: the message is found in the first bytes, never by walking the rest.
    page = b"<html><head><title>Bad Gateway</title></head><body>" + b"x\x00 " * 5_000_000
    outcome = classify("integration", 502, page)
    assert outcome == Retry("http-502", "Bad Gateway", 502, ambiguous=True)


def test_a_huge_message_is_cut_before_it_is_walked() -> None:
    outcome = classify("integration", 422, body({"message": "\u200b" * 3_000_000}))
    assert outcome == Rejected("http-422", 422, "")


@pytest.mark.parametrize("deep", [b"[" * 100_000, b'{"a":' * 100_000])
def test_deep_json_is_no_answer(deep: bytes) -> None:
    assert classify("integration", 200, deep) == not_api(
        200, deep[: MESSAGE_MAX - 3].decode() + "..."
    )
