"""The endpoint simulator, met by a real client (httpx) over real sockets."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateagent.simulator import (
    ABSENSI_PATH,
    INTEGRATION_PATH,
    WEBHOOK_IN_PATH,
    WEBHOOK_OUT_PATH,
    Simulator,
    main,
)

TOKEN = "s3cret-token"
CARD = "0012822001"
NAME = "Budi Santoso"
JAKARTA = ZoneInfo("Asia/Jakarta")
NUMBER = "must be a number conforming to the specified constraints"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    roster = {CARD: NAME, "0006762840": "Siti Rahayu"}
    with Simulator(token=TOKEN, gates=(4, 7), roster=roster) as simulator:
        yield simulator


def plain_client(sim: Simulator) -> httpx.Client:
    # Plain HTTP to 127.0.0.1: verify=False spares building a TLS context (~30 ms) per test.
    return httpx.Client(base_url=sim.url, timeout=5.0, verify=False)


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with plain_client(sim) as http:
        yield http


def today_at(hour: int, minute: int) -> dt.datetime:
    return dt.datetime.combine(dt.datetime.now(JAKARTA).date(), dt.time(hour, minute), JAKARTA)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tap(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "gate": 4,
        "card_no": CARD,
        "tanggal": iso(today_at(7, 0)),
        "token": TOKEN,
        "checktype": 1,
    }
    return body | changes


BEARER = {"Authorization": f"Bearer {TOKEN}"}


# -- integration (seed 000) ----------------------------------------------------------------


def test_integration_records_check_in_then_check_out(client: httpx.Client) -> None:
    first = client.post(INTEGRATION_PATH, json=tap())
    assert first.status_code == 200
    data = first.json()["data"]
    assert data["studentName"] == NAME
    assert data["attendanceStatus"] == "PRESENT"
    assert data["campusGateId"] == 4
    assert data["date"] == today_at(7, 0).date().isoformat()
    assert data["checkInDate"] == iso(today_at(7, 0))
    assert data["checkOutDate"] is None
    assert data["isFirstInserted"] is True

    second = client.post(INTEGRATION_PATH, json=tap(checktype=2, tanggal=iso(today_at(15, 0))))
    assert second.status_code == 200
    again = second.json()["data"]
    assert again["id"] == data["id"]
    assert again["isFirstInserted"] is False
    assert again["checkInDate"] == iso(today_at(7, 0))
    assert again["checkOutDate"] == iso(today_at(15, 0))


@pytest.mark.parametrize(
    ("hour", "minute", "status"),
    [(7, 15, "PRESENT"), (7, 16, "LATE")],
    ids=["at-0715-present", "after-0715-late"],
)
def test_integration_late_after_0715_local(
    client: httpx.Client, hour: int, minute: int, status: str
) -> None:
    answer = client.post(INTEGRATION_PATH, json=tap(tanggal=iso(today_at(hour, minute))))
    assert answer.json()["data"]["attendanceStatus"] == status


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        (
            {},
            [
                f"gate {NUMBER}",
                "card_no must be a string",
                "tanggal must be a valid ISO 8601 date string",
                "token must be a string",
                f"checktype {NUMBER}",
            ],
        ),
        (tap(card_no=12822001), ["card_no must be a string"]),
        (tap(gate="4"), [f"gate {NUMBER}"]),
        (tap(tanggal="kemarin"), ["tanggal must be a valid ISO 8601 date string"]),
        (tap(checktype=3), ["checktype must be one of the following values: 1, 2"]),
        (tap(checktype=True), [f"checktype {NUMBER}"]),
    ],
    ids=["empty", "card-not-string", "gate-string", "tanggal-not-iso", "checktype-3", "bool"],
)
def test_integration_validation_is_nestjs_style(
    client: httpx.Client, body: dict[str, object], messages: list[str]
) -> None:
    answer = client.post(INTEGRATION_PATH, json=body)
    assert answer.status_code == 400
    assert answer.json() == {"statusCode": 400, "message": messages, "error": "Bad Request"}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (tap(token="wrong"), 400, "Invalid authentication token"),
        (tap(gate=5), 404, "Campus gate not found"),
        (tap(card_no="9999999999"), 404, "No student found with the provided card number"),
        (
            tap(tanggal=iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))),
            400,
            "Cannot add attendance for tomorrow onwards",
        ),
    ],
    ids=["token", "gate", "unknown-card", "future-date"],
)
def test_integration_refusals(
    client: httpx.Client, body: dict[str, object], status: int, message: str
) -> None:
    answer = client.post(INTEGRATION_PATH, json=body)
    assert answer.status_code == status
    assert answer.json() == {"statusCode": status, "message": message}


def test_token_and_gates_can_be_changed(sim: Simulator, client: httpx.Client) -> None:
    sim.token = "rotated"
    assert client.post(INTEGRATION_PATH, json=tap()).json()["message"] == (
        "Invalid authentication token"
    )
    sim.token = TOKEN
    sim.gates.discard(4)
    assert client.post(INTEGRATION_PATH, json=tap()).json()["message"] == "Campus gate not found"


def test_integration_bad_json_is_400(client: httpx.Client) -> None:
    answer = client.post(
        INTEGRATION_PATH, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "Bad Request"


# -- absensi (seed 003) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "RFID harus disertakan."),
        ({"rfid": ""}, 400, "RFID tidak boleh kosong"),
        ({"rfid": 14}, 400, "RFID harus berupa teks."),
        (
            {"rfid": "404"},
            404,
            "Kartu RFID tidak terdaftar atau belum terhubung ke murid atau guru",
        ),
    ],
    ids=["missing", "empty", "not-text", "unknown"],
)
def test_absensi_refusals(
    client: httpx.Client, body: dict[str, object], status: int, error: str
) -> None:
    answer = client.post(ABSENSI_PATH, json=body)
    assert answer.status_code == status
    assert answer.json() == {"statusCode": status, "error": error}


def test_absensi_first_scan_arrives_second_leaves(client: httpx.Client) -> None:
    first = client.post(ABSENSI_PATH, json={"rfid": CARD})
    assert first.status_code == 201
    assert first.json()["message"] == "Jam hadir dicatat."
    payload = first.json()["payload"]
    assert payload["user"]["name"] == NAME
    assert payload["data"]["rfidNumb"] == CARD
    assert payload["data"]["keterangan"] == "HADIR"
    assert payload["data"]["jamHadir"].endswith("Z")
    assert payload["data"]["jamPulang"] is None

    second = client.post(ABSENSI_PATH, json={"rfid": CARD})
    assert second.status_code == 200
    assert second.json()["message"] == "Jam pulang dicatat."
    data = second.json()["payload"]["data"]
    assert data["id"] == payload["data"]["id"]
    assert data["jamPulang"].endswith("Z")


# -- webhook (seeds 004, 001) --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": TOKEN}],
    ids=["none", "wrong-bearer", "wrong-api-key", "no-bearer-scheme"],
)
def test_webhook_needs_the_token(client: httpx.Client, headers: dict[str, str]) -> None:
    answer = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=headers)
    assert answer.status_code == 401
    assert isinstance(answer.json()["message"], str)


def test_webhook_check_in_conflict_check_out(client: httpx.Client) -> None:
    first = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    assert first.status_code == 201
    created = first.json()
    assert created["employeeId"] == CARD
    assert created["checkInAt"].endswith("Z")
    assert created["checkOutAt"] is None

    twice = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    assert twice.status_code == 409
    assert twice.json() == {"message": "already checked in"}

    # X-API-Key and a form body with `rfid` work too.
    out = client.post(WEBHOOK_OUT_PATH, data={"rfid": CARD}, headers={"X-API-Key": TOKEN})
    assert out.status_code == 200
    assert out.json()["id"] == created["id"]
    assert out.json()["checkOutAt"].endswith("Z")

    back = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    assert back.status_code == 201
    assert back.json()["id"] != created["id"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (WEBHOOK_IN_PATH, {"card_no": "9999"}, 404),
        (WEBHOOK_IN_PATH, {"note": "no card"}, 400),
        (WEBHOOK_OUT_PATH, {"card_no": CARD}, 409),
    ],
    ids=["unknown-card", "no-card", "out-before-in"],
)
def test_webhook_refusals(
    client: httpx.Client, path: str, body: dict[str, object], status: int
) -> None:
    answer = client.post(path, json=body, headers=BEARER)
    assert answer.status_code == status
    assert isinstance(answer.json()["message"], str)


def test_webhook_idempotency_key_replays_the_first_answer(
    sim: Simulator, client: httpx.Client
) -> None:
    headers = BEARER | {"Idempotency-Key": "tap-1"}
    first = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=headers)
    replay = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json()
    assert [r.status for r in sim.received] == [201, 201]
    fresh = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    assert fresh.status_code == 409


# -- other paths, keep-alive, records ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/api/v2/nope"), ("GET", ABSENSI_PATH)], ids=["path", "method"]
)
def test_anything_else_is_nestjs_404(client: httpx.Client, method: str, path: str) -> None:
    answer = client.request(method, path)
    assert answer.status_code == 404
    expected = {"statusCode": 404, "message": f"Cannot {method} {path}", "error": "Not Found"}
    assert answer.json() == expected


def test_answers_are_json_over_one_keep_alive_connection(client: httpx.Client) -> None:
    first = client.post(ABSENSI_PATH, json={"rfid": CARD})
    second = client.post(ABSENSI_PATH, json={"rfid": CARD})
    assert first.http_version == "HTTP/1.1"
    assert first.headers["content-type"].startswith("application/json")
    assert int(first.headers["content-length"]) == len(first.content)

    def local_address(response: httpx.Response) -> object:
        return response.extensions["network_stream"].get_extra_info("client_addr")

    assert local_address(first) == local_address(second)


def test_received_records_each_request(sim: Simulator, client: httpx.Client) -> None:
    before = time.monotonic()
    client.post(
        WEBHOOK_IN_PATH + "?x=1", data={"card_no": CARD, "gate": "4"}, headers={"X-API-Key": TOKEN}
    )
    (record,) = sim.received
    assert before <= record.at_mono <= time.monotonic()
    assert record.path == WEBHOOK_IN_PATH
    assert record.headers["x-api-key"] == TOKEN
    assert record.headers["content-type"] == "application/x-www-form-urlencoded"
    assert record.body == {"card_no": CARD, "gate": "4"}
    assert record.status == 201
    assert sim.accepted() == [record]


def test_a_received_requests_repr_hides_its_credentials(
    sim: Simulator, client: httpx.Client
) -> None:
    # pytest prints a failing frame's arguments, e.g. a list of these, in its report.
    client.post(INTEGRATION_PATH, json=tap())
    client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers={"X-API-Key": TOKEN})
    shown = repr(sim.received)
    assert TOKEN not in shown
    assert shown.count("'***'") == 3
    assert f"'card_no': '{CARD}'" in shown  # the rest is still shown


# -- faults --------------------------------------------------------------------------------


def test_fail_next_answers_the_status_then_recovers(sim: Simulator, client: httpx.Client) -> None:
    sim.fail_next(2, 503, retry_after="7")
    for _ in range(2):
        answer = client.post(ABSENSI_PATH, json={"rfid": CARD})
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "7"
        assert answer.json() == {"statusCode": 503, "message": "Service Unavailable"}
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 201
    assert [r.status for r in sim.received] == [503, 503, 201]


def test_fail_next_with_a_json_or_an_html_body(sim: Simulator, client: httpx.Client) -> None:
    sim.fail_next(1, 429, body={"message": "slow down"})
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).json() == {"message": "slow down"}
    sim.fail_next(1, 502, body=b"<html>Bad Gateway</html>")
    answer = client.post(ABSENSI_PATH, json={"rfid": CARD})
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.content == b"<html>Bad Gateway</html>"


def test_drop_next_closes_without_answering(sim: Simulator, client: httpx.Client) -> None:
    sim.drop_next(1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    assert sim.received[-1].status is None
    # The dropped request was not processed: this check-in is the first one.
    answer = client.post(WEBHOOK_IN_PATH, json={"card_no": CARD}, headers=BEARER)
    assert answer.status_code == 201


def test_faults_are_checked_fail_then_drop_then_stall(sim: Simulator, client: httpx.Client) -> None:
    sim.stall_next(1, 0.01)
    sim.drop_next(1)
    sim.fail_next(1, 500)
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 500
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(ABSENSI_PATH, json={"rfid": CARD})
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 201  # stalled, answered
    assert [r.status for r in sim.received] == [500, None, 201]


def test_stall_next_provokes_a_client_timeout(sim: Simulator, client: httpx.Client) -> None:
    sim.stall_next(1, 5.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post(ABSENSI_PATH, json={"rfid": CARD}, timeout=0.2)
    # The server notices that the client left, records no answer and processes nothing.
    assert sim.wait_for(1, timeout_s=2.0)[0].status is None
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 201


def test_down_refuses_connections_and_up_listens_on_the_same_port(
    sim: Simulator, client: httpx.Client
) -> None:
    url = sim.url
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 201
    sim.down()
    with pytest.raises(httpx.ConnectError):
        client.post(ABSENSI_PATH, json={"rfid": CARD})
    sim.up()
    assert sim.url == url
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 200
    assert [r.status for r in sim.received] == [201, 200]


def test_latency_delays_the_answer(sim: Simulator, client: httpx.Client) -> None:
    sim.latency_s = 0.02
    assert client.post(ABSENSI_PATH, json={"rfid": CARD}).status_code == 201


def test_url_needs_a_started_simulator() -> None:
    with pytest.raises(RuntimeError):
        _ = Simulator().url


# -- waiting -------------------------------------------------------------------------------


def test_wait_for_blocks_until_requests_arrive(sim: Simulator) -> None:
    def post() -> None:
        with plain_client(sim) as http:
            http.post(ABSENSI_PATH, json={"rfid": "unknown"})
            http.post(ABSENSI_PATH, json={"rfid": CARD})

    poster = threading.Thread(target=post)
    poster.start()
    try:
        accepted = sim.wait_for_accepted(1, timeout_s=5.0)
        received = sim.wait_for(2, timeout_s=5.0)
    finally:
        poster.join()
    assert [r.status for r in received] == [404, 201]
    assert accepted == received[1:] == sim.accepted()


def test_wait_for_raises_timeout_error(sim: Simulator, client: httpx.Client) -> None:
    with pytest.raises(TimeoutError):
        sim.wait_for(1, timeout_s=0.05)
    client.post(ABSENSI_PATH, json={"rfid": "unknown"})
    assert len(sim.wait_for(1, timeout_s=0.05)) == 1
    with pytest.raises(TimeoutError):
        sim.wait_for_accepted(1, timeout_s=0.05)


# -- standalone ----------------------------------------------------------------------------


def test_main_serves_and_prints_a_line_per_request() -> None:
    command = [sys.executable, "-m", "gateagent.simulator", "--port", "0"]
    command += ["--token", TOKEN, "--card", "0099=Ani"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("simulator listening on http://127.0.0.1:")
        url = banner.split()[-1]
        lines = [process.stdout.readline() for _ in range(4)]
        assert "0099 Ani" in lines[-1]
        answer = httpx.post(url + ABSENSI_PATH, json={"rfid": "0099"}, timeout=5.0)
        assert answer.status_code == 201
        line = process.stdout.readline()
        assert f"{ABSENSI_PATH} rfid=0099 -> 201" in line
        process.send_signal(signal.SIGINT)
        # A bound for a hang, not a speed: it failed once at 5 s on a machine at load 8.
        assert process.wait(timeout=30.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_main_refuses_a_bad_card_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--card", "no-equals-sign"])
    assert exited.value.code == 2
    assert "CARD_NO=NAME" in capsys.readouterr().err
