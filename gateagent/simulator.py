"""The endpoint simulator: a real HTTP server that imitates the school's attendance servers.

The test suite runs the uploader against it (never against a mock), `gateagent demo` shows
its answers, and the benchmarks add latency to it. It answers the three profiles of SPEC
"Uplink profiles" with the shapes of the API documents:

    POST /api/v1/attendances/integration    integration, NestJS (000_00390d1a767e430c.txt)
    POST /absensi                           absensi (003_55ff775913c2cd77.txt)
    POST /webhook/check-in, /check-out      webhook: `Authorization: Bearer` (004_...) or
                                            `X-API-Key` (001_...), JSON or form body
    anything else                           404 {"statusCode": 404, "message": "Cannot POST /x"}

Every request is recorded in `received` as a `Received`, appended *before* its answer is
written, so a client holding an answer always finds the record there.

- `wait_for(n)` blocks until at least n requests were received, whatever their status
  (dropped ones too); `wait_for_accepted(n)` until at least n were answered 2xx. Both wait
  on a Condition (no polling), return a copy, and raise `TimeoutError`.
- Faults are checked before any endpoint logic, in this order: `fail_next` (answer a
  status), `drop_next` (read the request, close the connection), `stall_next` (answer
  late). Each call replaces that kind's pending count; a count of 0 cancels it.
- `latency_s` delays every answer. A request whose client leaves during a stall or the
  latency, or that `down()` cuts, is not processed and is recorded with status None,
  like a request a proxy gave up on before it reached the application.
- `down()` closes the listening socket and cuts the open keep-alive connections, so new
  connections are refused as in a real outage; `up()` listens again on the same port.
- State (a record per card and local day) lives in memory. The servers timestamp on
  receipt with the real clock and take "today" in `timezone`. `roster` maps card_no to
  a student's name (default `DEMO_ROSTER`); `token`, `gates`, `roster` and `latency_s`
  may be changed at any time.
- GET, PUT, PATCH and DELETE are answered (404) and recorded like POST; other methods
  get http.server's 501 and are not recorded.

`python -m gateagent.simulator --help` runs it standalone, printing a line per request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import selectors
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeGuard
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

INTEGRATION_PATH = "/api/v1/attendances/integration"
ABSENSI_PATH = "/absensi"
WEBHOOK_IN_PATH = "/webhook/check-in"
WEBHOOK_OUT_PATH = "/webhook/check-out"

# Names for SPEC's card test vectors ("Card numbers"), so demo taps show a studentName.
DEMO_ROSTER: Mapping[str, str] = {
    "0012822001": "Budi Santoso",
    "0006762840": "Siti Rahayu",
    "2430030533": "Agus Wijaya",
}

# Seed 000 derives LATE from a LateTimeSetting per level; the simulator has a single one.
LATE_AFTER = dt.time(7, 15)

# serve_forever() notices shutdown() only between polls: this bounds down() and stop().
_POLL_S = 0.01
_JOIN_S = 5.0
_NUMBER = "must be a number conforming to the specified constraints"


@dataclass(frozen=True)
class Received:
    """One request the simulator answered (or dropped)."""

    at_mono: float  # time.monotonic() when the request body was fully read
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names
    body: dict[str, object]  # JSON object, or form fields as str values
    status: int | None  # what was answered; None if dropped, or the client left first

    def __repr__(self) -> str:
        # A failing test's traceback shows its frames' arguments (pytest's funcargs), so
        # a list of these must not carry the credentials they arrived with.
        headers = {k: "***" if k in _CREDENTIAL_HEADERS else v for k, v in self.headers.items()}
        body = {k: "***" if k == "token" else v for k, v in self.body.items()}
        return (
            f"Received(at_mono={self.at_mono!r}, path={self.path!r}, headers={headers!r}, "
            f"body={body!r}, status={self.status!r})"
        )


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, object]
    malformed: str | None  # why the body could not be read
    received_at: dt.datetime  # UTC, when the body was fully read


@dataclass(frozen=True)
class _Drop:
    pass


@dataclass(frozen=True)
class _Stall:
    seconds: float


_Fault = _Answer | _Drop | _Stall  # an _Answer is fail_next's


@dataclass
class _Pending:
    count: int = 0
    fault: _Fault = _Drop()


@dataclass
class _Record:
    """One attendance row: a card's day (integration, absensi) or shift (webhook)."""

    id: int
    check_in: dt.datetime | None = None
    check_out: dt.datetime | None = None


@dataclass(frozen=True)
class _Tap:
    gate: int | float
    card_no: str
    when: dt.datetime
    token: str
    checktype: int


class Simulator:
    def __init__(
        self,
        *,
        token: str = "demo-token",  # noqa: S107 (the demo's token, not a secret)
        gates: Iterable[int] = (4,),
        roster: Mapping[str, str] | None = None,
        latency_s: float = 0.0,
        timezone: str = "Asia/Jakarta",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        # Settable at any time: tests change them to provoke the servers' refusals.
        self.token = token
        self.gates: set[int] = set(gates)
        self.roster: dict[str, str] = dict(DEMO_ROSTER if roster is None else roster)
        self.latency_s = latency_s
        self.received: list[Received] = []
        self._accepted: list[Received] = []
        # Requests read whole, answered or not yet (a stalled one is in `received` only
        # once its stall ends).
        self._arrived: list[float] = []
        self._tz = ZoneInfo(timezone)
        self._host = host
        self._requested_port = port
        self._port = 0
        # One lock for the records, the faults and the endpoints' state.
        self._changed = threading.Condition()
        self._faults = {kind: _Pending() for kind in ("fail", "drop", "stall")}  # check order
        self._ids = itertools.count(1)
        self._days: dict[tuple[str, str, dt.date], _Record] = {}
        self._idempotent: dict[str, _Answer] = {}
        self._lifecycle = threading.Lock()
        self._started = False
        self._server: _Server | None = None
        self._serving: threading.Thread | None = None

    # -- addresses ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("start() the simulator first")
        return f"http://{self._host}:{self._port}"

    @property
    def integration_url(self) -> str:
        return self.url + INTEGRATION_PATH

    @property
    def absensi_url(self) -> str:
        return self.url + ABSENSI_PATH

    @property
    def webhook_in_url(self) -> str:
        return self.url + WEBHOOK_IN_PATH

    @property
    def webhook_out_url(self) -> str:
        return self.url + WEBHOOK_OUT_PATH

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Simulator:
        with self._lifecycle:
            if self._started:
                raise RuntimeError("the simulator is already started")
            self._listen(self._requested_port)
            self._started = True
        return self

    def stop(self) -> None:
        with self._lifecycle:
            self._close()
            self._started = False

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def down(self) -> None:
        """An outage: connections are refused and open ones are cut."""
        with self._lifecycle:
            self._close()

    def up(self) -> None:
        """Listen again on the same port."""
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("start() the simulator first")
            if self._server is None:
                self._listen(self._port)

    def _listen(self, port: int) -> None:
        server = _Server((self._host, port), self)
        self._port = server.server_port
        self._server = server
        self._serving = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_S},
            name=f"simulator:{self._port}",
            daemon=True,
        )
        self._serving.start()

    def _close(self) -> None:
        server, serving = self._server, self._serving
        if server is None or serving is None:
            return
        self._server = self._serving = None
        server.shutdown()  # serve_forever() returns: nothing more is accepted
        server.server_close()  # the port is closed: connections are refused
        server.cut_connections()  # as in a crash, keep-alive connections end too
        serving.join()

    # -- faults -------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        body: object | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `count` requests with `status`, and `body` as JSON (default
        {"statusCode": status, "message": reason phrase}); `bytes` are sent as they are,
        as text/html, like a proxy's error page."""
        headers = () if retry_after is None else (("Retry-After", retry_after),)
        if isinstance(body, bytes):
            answer = _Answer(status, body, "text/html; charset=utf-8", headers)
        else:
            document = {"statusCode": status, "message": _phrase(status)} if body is None else body
            answer = _json_answer(status, document, headers)
        self._set_fault("fail", count, answer)

    def drop_next(self, count: int) -> None:
        """Read the next `count` requests, then close their connections without answering."""
        self._set_fault("drop", count, _Drop())

    def stall_next(self, count: int, seconds: float) -> None:
        """Answer the next `count` requests only after `seconds` (to provoke timeouts)."""
        self._set_fault("stall", count, _Stall(seconds))

    def _set_fault(self, kind: str, count: int, fault: _Fault) -> None:
        with self._changed:
            self._faults[kind] = _Pending(count, fault)

    def _take_fault(self) -> _Fault | None:
        with self._changed:
            for pending in self._faults.values():
                if pending.count > 0:
                    pending.count -= 1
                    return pending.fault
        return None

    # -- what was received --------------------------------------------------------------

    def accepted(self) -> list[Received]:
        """The requests answered 2xx, in the order they were answered."""
        with self._changed:
            return list(self._accepted)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Block until at least `count` requests were received, whatever their status
        (dropped ones too); a copy of `received`. TimeoutError after `timeout_s`."""
        return self._wait(self.received, count, timeout_s, "received")

    def wait_for_accepted(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Block until at least `count` requests were answered 2xx; a copy of `accepted()`.
        TimeoutError after `timeout_s`."""
        return self._wait(self._accepted, count, timeout_s, "accepted")

    def wait_for_arrived(self, count: int, timeout_s: float = 10.0) -> None:
        """Block until `count` requests have arrived (read whole, maybe not answered yet)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._arrived) >= count, timeout_s):
                raise TimeoutError(f"{len(self._arrived)} of {count} requests arrived")

    def _arrive(self, at_mono: float) -> None:
        with self._changed:
            self._arrived.append(at_mono)
            self._changed.notify_all()

    def _wait(
        self, records: list[Received], count: int, timeout_s: float, what: str
    ) -> list[Received]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(records) >= count, timeout_s):
                raise TimeoutError(f"{len(records)} of {count} requests {what} in {timeout_s} s")
            return list(records)

    def _record(self, record: Received) -> None:
        with self._changed:
            self.received.append(record)
            if record.status is not None and 200 <= record.status < 300:
                self._accepted.append(record)
            self._changed.notify_all()

    # -- the endpoints ------------------------------------------------------------------

    def _answer(self, request: _Request) -> _Answer:
        endpoints: dict[str, Callable[[_Request], _Answer]] = {
            INTEGRATION_PATH: self._integration,
            ABSENSI_PATH: self._absensi,
            WEBHOOK_IN_PATH: lambda request: self._webhook(request, "in"),
            WEBHOOK_OUT_PATH: lambda request: self._webhook(request, "out"),
        }
        # Express routes "/absensi/" as "/absensi".
        endpoint = endpoints.get(request.path.rstrip("/")) if request.method == "POST" else None
        if endpoint is None:
            message = f"Cannot {request.method} {request.path}"
            return _json_answer(404, {"statusCode": 404, "message": message, "error": "Not Found"})
        if request.malformed is not None:
            document = {"statusCode": 400, "message": request.malformed, "error": "Bad Request"}
            return _json_answer(400, document)
        with self._changed:
            return endpoint(request)

    def _integration(self, request: _Request) -> _Answer:
        tap, problems = _read_tap(request.body, self._tz)
        if tap is None:
            document = {"statusCode": 400, "message": problems, "error": "Bad Request"}
            return _json_answer(400, document)
        if tap.token != self.token:
            return _nest(400, "Invalid authentication token")
        if tap.gate not in self.gates:
            return _nest(404, "Campus gate not found")
        name = self.roster.get(tap.card_no)
        if name is None:
            return _nest(404, "No student found with the provided card number")
        day = tap.when.astimezone(self._tz).date()
        if day > request.received_at.astimezone(self._tz).date():
            return _nest(400, "Cannot add attendance for tomorrow onwards")
        first = ("integration", tap.card_no, day) not in self._days
        record = self._day("integration", tap.card_no, day)
        if tap.checktype == 1:
            record.check_in = tap.when
        else:
            # SPEC "Tap decisions": every check-out is sent, the server keeps the latest.
            record.check_out = tap.when
        late = (
            record.check_in is not None and record.check_in.astimezone(self._tz).time() > LATE_AFTER
        )
        data = {
            "id": record.id,
            "classYearId": None,
            "studentId": self._student_id(tap.card_no),
            "studentName": name,
            "classroomName": None,
            "date": day.isoformat(),
            "checkInDate": _iso(record.check_in),
            "checkOutDate": _iso(record.check_out),
            "attendanceStatus": "LATE" if late else "PRESENT",
            "campusGateId": tap.gate,
            "isFirstInserted": first,
            "bySubjectTeacher": False,
            "createdById": None,
            "createdByTeacherId": None,
        }
        return _json_answer(200, {"data": data})

    def _absensi(self, request: _Request) -> _Answer:
        rfid = request.body.get("rfid")
        if rfid is None:
            return _json_answer(400, {"statusCode": 400, "error": "RFID harus disertakan."})
        if not isinstance(rfid, str):
            return _json_answer(400, {"statusCode": 400, "error": "RFID harus berupa teks."})
        if not rfid.strip():
            return _json_answer(400, {"statusCode": 400, "error": "RFID tidak boleh kosong"})
        name = self.roster.get(rfid)
        if name is None:
            unknown = "Kartu RFID tidak terdaftar atau belum terhubung ke murid atau guru"
            return _json_answer(404, {"statusCode": 404, "error": unknown})
        now = request.received_at
        day = now.astimezone(self._tz).date()
        record = self._day("absensi", rfid, day)
        if record.check_in is None:
            record.check_in, status, message = now, 201, "Jam hadir dicatat."
        else:
            record.check_out, status, message = now, 200, "Jam pulang dicatat."
        student = self._student_id(rfid)
        user = {"id": student, "nis": student, "name": name, "noMurid": rfid, "kelasId": 1}
        data = {
            "id": record.id,
            "rfidNumb": rfid,
            "keterangan": "HADIR",
            "tanggal": _iso(dt.datetime.combine(day, dt.time(), self._tz)),
            "jamHadir": _iso(record.check_in),
            "jamPulang": _iso(record.check_out),
            "catatan": None,
        }
        payload = {"user": user, "data": data}
        return _json_answer(status, {"statusCode": status, "message": message, "payload": payload})

    def _webhook(self, request: _Request, direction: Literal["in", "out"]) -> _Answer:
        offered = _bearer(request.headers.get("authorization")), request.headers.get("x-api-key")
        if offered == (None, None):
            message = "Missing credentials: send Authorization: Bearer <token> or X-API-Key"
            return _json_answer(401, {"message": message})
        if self.token not in offered:
            return _json_answer(401, {"message": "Invalid token"})
        key = request.headers.get("idempotency-key")
        if key is not None and key in self._idempotent:
            return self._idempotent[key]  # the first answer again, status and body
        answer = self._shift(request, direction)
        if key is not None:
            self._idempotent[key] = answer
        return answer

    def _shift(self, request: _Request, direction: Literal["in", "out"]) -> _Answer:
        card = request.body.get("card_no", request.body.get("rfid"))
        if card is None:
            return _json_answer(400, {"message": "card_no (or rfid) is required"})
        if not isinstance(card, str) or not card:
            return _json_answer(400, {"message": "card_no must be a non-empty string"})
        if card not in self.roster:
            return _json_answer(404, {"message": "card not found"})
        now = request.received_at
        key = ("webhook", card, now.astimezone(self._tz).date())
        shift = self._days.get(key)  # the card's latest shift today
        if direction == "in":
            if shift is not None and shift.check_out is None:
                return _json_answer(409, {"message": "already checked in"})
            shift = self._days[key] = _Record(next(self._ids), check_in=now)
            status = 201
        else:
            if shift is None:
                return _json_answer(409, {"message": "not checked in"})
            shift.check_out, status = now, 200  # a later check-out replaces an earlier one
        document = {
            "id": f"att_{shift.id:06d}",
            "employeeId": card,
            "checkInAt": _iso(shift.check_in),
            "checkOutAt": _iso(shift.check_out),
            "checkInLocation": None,
        }
        return _json_answer(status, document)

    def _day(self, kind: str, card_no: str, day: dt.date) -> _Record:
        key = (kind, card_no, day)
        if key not in self._days:
            self._days[key] = _Record(next(self._ids))
        return self._days[key]

    def _student_id(self, card_no: str) -> int:
        return list(self.roster).index(card_no) + 1


class _Server(ThreadingHTTPServer):
    """One listening socket; `down()` ends it, `up()` makes a new one on the same port."""

    request_queue_size = 64

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.cut = threading.Event()
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also resolves the host name (getfqdn), which can take
        # seconds on a machine without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: socketserver._RequestType, client_address: Any) -> None:
        # ThreadingMixIn does not keep daemon threads; we keep them to cut and join them.
        thread = threading.Thread(target=self._serve, args=(request, client_address), daemon=True)
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open[request] = thread
        thread.start()

    def _serve(self, request: socketserver._RequestType, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            if isinstance(request, socket.socket):
                with self._open_lock:
                    self._open.pop(request, None)

    def cut_connections(self) -> None:
        self.cut.set()
        with self._open_lock:
            connections = dict(self._open)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in connections.values():
            thread.join(_JOIN_S)

    def handle_error(self, request: socketserver._RequestType, client_address: Any) -> None:
        # A client that leaves, or an outage we caused, is not an error of the simulator.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client's connection pool is exercised
    # Headers and body go out in two writes: without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: `main` and the demo print their own lines."""

    def do_POST(self) -> None:
        self._handle()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _handle(self) -> None:
        simulator = self.server.simulator
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Only Content-Length bodies are read; httpx, curl and requests send one.
            self.close_connection = True
            self._send(_json_answer(411, {"statusCode": 411, "message": "Length Required"}))
            return
        length_text = self.headers.get("Content-Length", "0").strip()
        length = int(length_text) if length_text.isdigit() else 0
        raw = self.rfile.read(length)
        at_mono = time.monotonic()
        if len(raw) < length:  # the client, or down(), ended the connection mid-body
            self._hang_up()
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        body, malformed = _parse_body(headers.get("content-type", ""), raw)
        path = urlsplit(self.path).path
        request = _Request(self.command, path, headers, body, malformed, dt.datetime.now(dt.UTC))
        fault = simulator._take_fault()
        simulator._arrive(at_mono)
        if (
            isinstance(fault, _Drop)
            or (isinstance(fault, _Stall) and not self._client_waits(at_mono + fault.seconds))
            or (simulator.latency_s > 0 and not self._client_waits(at_mono + simulator.latency_s))
            or self.server.cut.is_set()
        ):
            simulator._record(Received(at_mono, path, headers, body, None))
            self._hang_up()
            return
        answer = fault if isinstance(fault, _Answer) else simulator._answer(request)
        simulator._record(Received(at_mono, path, headers, body, answer.status))
        self._send(answer)

    def _client_waits(self, deadline: float) -> bool:
        """Wait until `deadline` (monotonic); False as soon as the client (or `down()`)
        ends the connection. The deadline counts from the request's arrival, so the
        simulator's own work is part of the latency it adds, as on a real server."""
        connection: socket.socket = self.connection
        with selectors.DefaultSelector() as selector:
            selector.register(connection, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(left):
                    continue
                try:
                    if not connection.recv(1, socket.MSG_PEEK):
                        return False  # end of stream: the client left
                except OSError:
                    return False
                # The bytes of a next (pipelined) request: leave them and just wait.
                return not self.server.cut.wait(max(0.0, deadline - time.monotonic()))
        return True

    def _hang_up(self) -> None:
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:  # the client left, or down() cut the connection
            self.close_connection = True


def _parse_body(content_type: str, raw: bytes) -> tuple[dict[str, object], str | None]:
    """The body's fields, and why they could not be read. Like Express, a body is parsed
    by its Content-Type only; any other type leaves the fields empty."""
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}, None
    if not raw or not (kind == "application/json" or kind.endswith("+json")):
        return {}, None
    try:
        document = json.loads(raw)
    except ValueError as error:
        return {}, f"Unexpected JSON: {error}"
    if not isinstance(document, dict):
        return {}, "The JSON body must be an object"
    return {str(name): value for name, value in document.items()}, None


def _read_tap(body: Mapping[str, object], tz: ZoneInfo) -> tuple[_Tap | None, list[str]]:
    """CreateAttendanceIntegrationDto's checks with class-validator's messages, in field order.
    Strings are not numbers (no implicit conversion), so a form body fails here."""
    gate, card_no, tanggal, token, checktype = (
        body.get(name) for name in ("gate", "card_no", "tanggal", "token", "checktype")
    )
    when = _instant(tanggal, tz) if isinstance(tanggal, str) else None
    problems = []
    if not _is_number(gate):
        problems.append(f"gate {_NUMBER}")
    if not isinstance(card_no, str):
        problems.append("card_no must be a string")
    if when is None:
        problems.append("tanggal must be a valid ISO 8601 date string")
    if not isinstance(token, str):
        problems.append("token must be a string")
    if not _is_number(checktype):
        problems.append(f"checktype {_NUMBER}")
    elif checktype not in (1, 2):
        problems.append("checktype must be one of the following values: 1, 2")
    if problems or not (_is_number(gate) and isinstance(card_no, str) and when is not None):
        return None, problems
    return _Tap(gate, card_no, when, str(token), 2 if checktype == 2 else 1), []


def _instant(text: str, tz: ZoneInfo) -> dt.datetime | None:
    """An ISO 8601 string as JavaScript's Date reads it: a date alone is UTC midnight, a
    date and time without an offset is the server's local time."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC if len(text) <= len("2024-01-15") else tz)
    return parsed


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


def _iso(moment: dt.datetime | None) -> str | None:
    """JavaScript's Date.toISOString(): UTC, milliseconds, `Z`."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Injected failure"


def _nest(status: int, message: str) -> _Answer:
    return _json_answer(status, {"statusCode": status, "message": message})


def _json_answer(
    status: int, document: object, headers: tuple[tuple[str, str], ...] = ()
) -> _Answer:
    body = json.dumps(document, ensure_ascii=False).encode()
    return _Answer(status, body, headers=headers)


# -- standalone -------------------------------------------------------------------------


def _card(text: str) -> tuple[str, str]:
    card_no, equals, name = text.partition("=")
    if not equals or not card_no or not name:
        raise argparse.ArgumentTypeError(f"expected CARD_NO=NAME, got {text!r}")
    return card_no, name


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"unknown time zone {name!r}") from error
    return name


def _describe(record: Received) -> str:
    """One line per request; never the token."""
    fields = ("card_no", "rfid", "gate", "checktype", "tanggal")
    shown = "".join(f" {name}={record.body[name]}" for name in fields if name in record.body)
    answer = "dropped" if record.status is None else str(record.status)
    return f"{time.strftime('%H:%M:%S')} {record.path}{shown} -> {answer}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateagent.simulator",
        description="Imitate the school's attendance servers (integration, absensi, webhook) "
        "so a gate can be tested without them. Prints one line per request; Ctrl-C stops.",
        epilog="Example: python -m gateagent.simulator --host 0.0.0.0 --port 8080 "
        "--token T --card 0012822001=Budi",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for a gate on the LAN"
    )
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--token", default="demo-token", help="the token the servers accept")
    parser.add_argument(
        "--gate", type=int, action="append", help="a campus gate id that exists (repeatable; 4)"
    )
    parser.add_argument(
        "--card",
        type=_card,
        action="append",
        metavar="CARD_NO=NAME",
        help="a known card (repeatable; default: the SPEC's test cards)",
    )
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--timezone", type=_zone, default="Asia/Jakarta")
    args = parser.parse_args(argv)
    simulator = Simulator(
        token=args.token,
        gates=args.gate or (4,),
        roster=dict(args.card) if args.card else None,
        latency_s=args.latency,
        timezone=args.timezone,
        host=args.host,
        port=args.port,
    )
    try:
        simulator.start()
    except OSError as error:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"simulator listening on {simulator.url}", flush=True)
    print(f"  integration  POST {simulator.integration_url}  gates {sorted(simulator.gates)}")
    print(f"  absensi      POST {simulator.absensi_url}")
    print(f"  webhook      POST {simulator.webhook_in_url}, {simulator.webhook_out_url}")
    cards = ", ".join(f"{card_no} {name}" for card_no, name in simulator.roster.items())
    print(f"  cards        {cards}", flush=True)
    shown = 0
    try:
        while True:
            try:
                records = simulator.wait_for(shown + 1, timeout_s=60.0)
            except TimeoutError:
                continue
            for record in records[shown:]:
                print(_describe(record), flush=True)
            shown = len(records)
    except KeyboardInterrupt:
        return 0
    finally:
        simulator.stop()


if __name__ == "__main__":
    sys.exit(main())
