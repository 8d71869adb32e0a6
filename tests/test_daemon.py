"""`gateagent run` as a real subprocess: taps on stdin reach a real HTTP server."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import time
import tty
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateagent.simulator import Simulator
from gateagent.store import Store
from tests.running import Run, command, states
from tests.settings import TOKEN, make_settings, write_config

ROSTER = {f"{n:010d}": f"Student {n}" for n in range(1, 200)}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, roster=ROSTER) as simulator:
        yield simulator


def test_taps_on_stdin_reach_the_server_and_sigterm_exits_0(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    run = Run(write_config(tmp_path / "config.toml", settings))
    run.wait_for_line("gateagent started")
    run.tap("0000000001", "0000000002", "not a card!", "0000000003")
    sim.wait_for_accepted(3)
    run.wait_for_line("tap delivered", 3)
    assert run.stop() == 0
    assert states(settings.storage.path) == [
        ("0000000001", "delivered"),
        ("0000000002", "delivered"),
        ("0000000003", "delivered"),
    ]
    assert "read dropped: not a card number" in run.output
    assert "gateagent stopped pending=0" in run.output
    assert TOKEN not in run.output


def test_journald_lines_carry_a_priority(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    run = Run(write_config(tmp_path / "config.toml", settings), journal=True)
    run.wait_for_line("gateagent started")
    run.tap("0000000001", "junk!")
    run.wait_for_line("tap delivered")
    assert run.stop() == 0
    assert run.lines
    for line in run.lines:
        assert re.match(r"<[0-7]>\S", line), line
    assert any(line.startswith("<4>read dropped") for line in run.lines)
    assert any(line.startswith("<6>tap delivered") for line in run.lines)


# `gateagent run` as cli.py runs it, telling which of the libraries recording never needs
# were imported when READY=1 went out, and at the end (evdev: no reader is hid;
# pydantic-settings: no GATEAGENT_* variable; click: httpx's command line, never).
IMPORTED_AT_READY = """
import json, sys
from gateagent import config, logs
from gateagent.clock import SystemClock
from gateagent.daemon import Daemon
from gateagent.notify import Notifier

def imported(when):
    watched = ("httpx", "prometheus_client", "sqlite_utils", "evdev", "pydantic_settings", "click")
    found = [name for name in watched if name in sys.modules]
    print(f"imported {when}: {json.dumps(found)}", file=sys.stderr, flush=True)

class Notifying(Notifier):
    def ready(self):
        imported("at READY=1")
        return super().ready()

path = sys.argv[1]
settings = config.load(path)
logs.setup(tz=settings.device.tz)
code = Daemon(path, settings, SystemClock(), notifier=Notifying(None)).run()
imported("at exit")
sys.exit(code)
"""


def test_the_uploader_and_the_metrics_are_imported_after_ready(
    tmp_path: Path, sim: Simulator
) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    Store.open(settings.storage.path).close()  # a restart: no migration due
    run = Run(write_config(tmp_path / "config.toml", settings), script=IMPORTED_AT_READY)
    run.wait_for_line(re.escape("imported at READY=1: []"))
    run.tap("0000000001")
    run.wait_for_line("tap delivered")
    assert run.stop() == 0
    assert 'imported at exit: ["httpx", "prometheus_client"]' in run.output
    assert "gateagent_queue_taps" in Path(settings.metrics.textfile).read_text()


def test_metrics_off_import_no_prometheus_client_until_a_reload_turns_them_on(
    tmp_path: Path, sim: Simulator
) -> None:
    path = tmp_path / "config.toml"
    textfile = tmp_path / "gateagent.prom"
    settings = make_settings(tmp_path, sim.integration_url, metrics={"textfile": ""})
    Store.open(settings.storage.path).close()  # no migration due: sqlite-utils stays out
    run = Run(write_config(path, settings), script=IMPORTED_AT_READY)
    run.wait_for_line("gateagent started")
    run.tap("0000000001")
    run.wait_for_line("tap delivered")
    assert run.stop() == 0
    assert 'imported at exit: ["httpx"]' in run.output

    run = Run(path, script=IMPORTED_AT_READY)
    run.wait_for_line("gateagent started")
    write_config(path, make_settings(tmp_path, sim.integration_url))  # its textfile
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_line("configuration reloaded")
    assert run.stop() == 0
    assert 'imported at exit: ["httpx", "prometheus_client"]' in run.output
    # The exporter's last word at the stop, as a daemon that had them on from the start.
    assert "gateagent_queue_taps" in textfile.read_text()


# `gateagent run` with prometheus_client broken (an upgrade gone wrong): importing it fails.
BROKEN_METRICS = """
import sys
sys.modules["prometheus_client"] = None
from gateagent import cli
sys.exit(cli.main(["run", "--config", sys.argv[1]]))
"""


def test_metrics_that_cannot_be_imported_are_retried_and_the_gate_goes_on(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path / "config.toml", make_settings(tmp_path, sim.integration_url))
    run = Run(config, script=BROKEN_METRICS)
    run.wait_for_line("component failed: ModuleNotFoundError: .* name=metrics restart_in_s=")
    run.tap("0000000001")
    run.wait_for_line("tap delivered")
    # A reload that keeps them on neither fails nor starts a second attempt beside it.
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_line("configuration reloaded")
    assert run.stop() == 0
    assert run.output.count("Traceback") == 1  # the first failure, once
    assert not (tmp_path / "gateagent.prom").exists()


def test_sighup_reloads_and_refuses_a_bad_config(tmp_path: Path, sim: Simulator) -> None:
    path = tmp_path / "config.toml"
    write_config(
        path, make_settings(tmp_path, sim.integration_url, uplink={"flush_interval": "1h"})
    )
    run = Run(path)
    run.wait_for_line("gateagent started")
    run.tap("0000000001")
    run.wait_for_line("tap recorded")

    path.write_text(path.read_text().replace("[uplink]", "[uplink]\nflush_intervall = 3"))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_line(r"new configuration refused.*flush_intervall: unknown key")

    write_config(path, make_settings(tmp_path, sim.integration_url))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_line("configuration reloaded")
    sim.wait_for_accepted(1)  # flush_interval 0s now: the pending tap goes at once
    # A reload that changed no reader leaves the readers as status shows them.
    conn = sqlite3.connect(tmp_path / "taps.db")
    try:
        assert conn.execute("SELECT name FROM readers").fetchall() == [("desk",)]
    finally:
        conn.close()
    assert run.stop() == 0
    assert states(tmp_path / "taps.db") == [("0000000001", "delivered")]


def test_sighup_adds_changes_and_removes_readers(tmp_path: Path, sim: Simulator) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    link.symlink_to(os.ttyname(slave))
    path = tmp_path / "config.toml"
    write_config(path, make_settings(tmp_path, sim.integration_url))
    run = Run(path)
    try:
        run.wait_for_line("gateagent started")
        entrance = {"name": "entrance", "kind": "serial", "path": str(link), "protocol": "lines"}
        readers = [{"name": "desk", "kind": "stdin"}, entrance]
        write_config(path, make_settings(tmp_path, sim.integration_url, readers=readers))
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_line("reader connected reader=entrance")
        os.write(master, b"0000000001\r\n")
        run.wait_for_line("tap recorded card_no=0000000001 reader=entrance")

        # A changed reader is reopened with its new settings (now a fixed "out"), and a
        # removed one (desk) is gone from the readers status shows.
        changed = [{**entrance, "direction": "out"}]
        settings = make_settings(tmp_path, sim.integration_url, readers=changed)
        write_config(path, settings)
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_line("readers_restarted=1", 1)
        run.wait_for_line("reader connected reader=entrance", 2)
        os.write(master, b"0000000002\r\n")
        run.wait_for_line("tap recorded card_no=0000000002 reader=entrance checktype=2")
        sim.wait_for_accepted(2)
        assert run.stop() == 0
    finally:
        os.close(master)
        os.close(slave)
    conn = sqlite3.connect(tmp_path / "taps.db")
    try:
        assert conn.execute("SELECT name FROM readers").fetchall() == [("entrance",)]
    finally:
        conn.close()


def test_offline_then_online(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    sim.down()
    run = Run(write_config(tmp_path / "config.toml", settings))
    run.wait_for_line("gateagent started")
    run.tap(*[f"{n:010d}" for n in range(1, 21)])
    run.wait_for_line("tap recorded", 20)
    run.wait_for_line("uplink retrying")
    sim.up()
    sim.wait_for_accepted(20, timeout_s=60)
    run.wait_for_line("uplink ok again")
    assert run.stop() == 0
    assert {state for _, state in states(settings.storage.path)} == {"delivered"}


def test_crash_loop_loses_no_recorded_tap(tmp_path: Path, sim: Simulator) -> None:
    """SIGKILL at random moments while taps arrive and uploads are in flight.

    The soak version (200 cycles) is benchmarks/crash_soak.py; this short loop runs in
    the test command.
    """
    rng = random.Random(20241124)
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        taps={"debounce": "0s", "min_checkout_after": "0s"},
    )
    config = write_config(tmp_path / "config.toml", settings)
    sim.latency_s = 0.005
    cards = [f"{n:010d}" for n in range(1, 9)]
    typed = 0
    recorded: list[str] = []
    for _ in range(8):
        run = Run(config)
        run.wait_for_line("gateagent started")
        for _ in range(rng.randint(3, 12)):
            run.tap(cards[typed % len(cards)])
            typed += 1
            time.sleep(rng.uniform(0, 0.02))  # taps arrive while uploads are in flight
        time.sleep(rng.uniform(0, 0.1))
        run.kill()
        recorded += [
            line.split("card_no=")[1].split()[0] for line in run.lines if "tap recorded" in line
        ]

    final = Run(config)
    [started] = final.wait_for_line("gateagent started")
    pending = int(started.split("pending=")[1].split()[0])
    if pending:
        final.wait_for_line("tap delivered", pending, timeout_s=60)
    assert final.stop() == 0
    db_taps = states(settings.storage.path)

    # Every tap the daemon said it recorded is in the database (a tap committed just
    # before the kill may miss its log line, never the other way round).
    assert not Counter(recorded) - Counter(card for card, _ in db_taps)
    assert {state for _, state in states(settings.storage.path)} == {"delivered"}
    conn = sqlite3.connect(settings.storage.path)
    tap_times = {
        (card, at) for card, at in conn.execute("SELECT card_no, tapped_at FROM taps").fetchall()
    }
    conn.close()
    first_arrival: dict[tuple[str, str], int] = {}
    for index, received in enumerate(sim.accepted()):
        key = (str(received.body["card_no"]), str(received.body["tanggal"]))
        first_arrival.setdefault(key, index)
    assert tap_times <= set(first_arrival)
    # Per card, the first deliveries come in the order the taps happened.
    for card in cards:
        arrivals = sorted((at, first_arrival[(c, at)]) for c, at in tap_times if c == card)
        assert [index for _, index in arrivals] == sorted(index for _, index in arrivals)
    duplicates = len(sim.accepted()) - len(first_arrival)
    print(f"crash loop: {len(recorded)} recorded, {len(first_arrival)} delivered,", end=" ")
    print(f"{duplicates} duplicates")


def test_status_json_has_the_spec_fields(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateagent.cli import main

    settings = make_settings(tmp_path, sim.integration_url)
    config = write_config(tmp_path / "config.toml", settings)
    run = Run(config)
    run.wait_for_line("gateagent started")
    run.tap("0000000001", "0000099999")
    run.wait_for_line("tap (delivered|rejected)", 2)

    assert main(["status", "--config", str(config), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert run.stop() == 0
    for key in (
        "pending",
        "delivered",
        "rejected",
        "ignored",
        "oldest_pending_age_s",
        "last_delivery_at",
        "uplink_state",
        "clock_synchronized",
        "readers",
    ):
        assert key in status
    assert (status["pending"], status["delivered"], status["rejected"]) == (0, 1, 1)
    assert status["uplink_state"] == "ok"
    assert status["daemon_running"] is True
    assert status["readers"] == [
        {
            "name": "desk",
            "connected": True,
            "last_tap_at": status["readers"][0]["last_tap_at"],
            "last_error": None,
        }
    ]
    assert TOKEN not in json.dumps(status)
    # The reader's last tap comes from the taps themselves (issue 11, item 10): it is
    # there as soon as the tap is committed, not at the next housekeeping tick.
    last_tap_at = status["readers"][0]["last_tap_at"]
    age_s = (datetime.now(UTC) - datetime.fromisoformat(last_tap_at)).total_seconds()
    assert 0 <= age_s < 600, last_tap_at
    # A stopped daemon connects no reader.
    assert main(["status", "--config", str(config), "--json"]) == 0
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["daemon_running"] is False
    assert stopped["readers"][0]["connected"] is False
    assert stopped["readers"][0]["last_tap_at"] == last_tap_at

    assert main(["export", "--config", str(config), "--state", "rejected"]) == 0
    exported = capsys.readouterr().out.splitlines()
    assert exported[0].startswith("tap_id,card_no,reader,gate,checktype,state,reason,tapped_at")
    assert len(exported) == 2
    assert ",0000099999," in exported[1]
    assert ",unknown-card," in exported[1]
    # No tap in that state: the header alone, so a script still reads the columns.
    assert main(["export", "--config", str(config), "--state", "held"]) == 0
    assert capsys.readouterr().out == exported[0] + "\n"

    assert main(["requeue", "--config", str(config), "--reason", "unknown-card"]) == 0
    assert capsys.readouterr().out == "1 tap queued to be sent again\n"
    assert states(settings.storage.path)[1] == ("0000099999", "pending")


def test_status_shows_a_readers_tap_at_once(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url, uplink={"flush_interval": "1h"})
    config = write_config(tmp_path / "config.toml", settings)
    run = Run(config)
    run.wait_for_line("gateagent started")
    run.tap("0000000001")
    run.wait_for_line("tap recorded card_no=0000000001")
    status = json.loads(command("status", "--json", "--config", str(config), check=True).stdout)
    assert run.stop() == 0
    [reader] = status["readers"]
    assert reader["connected"] is True
    assert reader["last_tap_at"] is not None  # within a second of the commit


def test_status_after_a_kill_connects_no_reader(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path / "config.toml", make_settings(tmp_path, sim.integration_url))
    run = Run(config)
    run.wait_for_line("gateagent started")
    run.wait_for_line("reader connected")
    run.kill()  # no stop marker written: status sees the pid is gone
    status = json.loads(command("status", "--json", "--config", str(config), check=True).stdout)
    assert status["daemon_running"] is False
    assert [r["connected"] for r in status["readers"]] == [False]


def test_status_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateagent.cli import main

    config = write_config(tmp_path / "config.toml", make_settings(tmp_path, "http://127.0.0.1:9/x"))
    assert main(["status", "--config", str(config)]) == 1
    assert "no tap database at" in capsys.readouterr().err


def test_daemon_survives_a_missing_reader_and_a_bad_config_exits_2(
    tmp_path: Path, sim: Simulator
) -> None:
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        readers=[
            {"name": "desk", "kind": "stdin"},
            {"name": "door", "kind": "serial", "path": str(tmp_path / "ttyUSB-missing")},
        ],
    )
    config = write_config(tmp_path / "config.toml", settings)
    run = Run(config)
    run.wait_for_line("reader disconnected reader=door")
    run.tap("0000000001")
    sim.wait_for_accepted(1)
    assert run.stop() == 0

    config.write_text(config.read_text().replace('kind = "serial"', 'kind = "usb"'))
    bad = command("run", "--config", str(config))
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "[[readers]] #2 (door) kind" in bad.stderr


def test_sigint_exits_0(tmp_path: Path, sim: Simulator) -> None:
    run = Run(write_config(tmp_path / "config.toml", make_settings(tmp_path, sim.integration_url)))
    run.wait_for_line("gateagent started")
    assert run.stop(signal.SIGINT) == 0


def test_a_token_over_plain_http_is_warned_of_at_start(tmp_path: Path) -> None:
    # No tap is read, so nothing is sent to the name (which does not exist anyway).
    url = "http://attendance.school.invalid/api/v1/attendances/integration"
    run = Run(write_config(tmp_path / "config.toml", make_settings(tmp_path, url)))
    [line] = run.wait_for_line("the token travels in clear text")
    assert "over http:// to attendance.school.invalid" in line
    run.wait_for_line("gateagent started")
    assert run.stop() == 0
    assert TOKEN not in run.output


def test_status_says_the_uplink_is_untested_until_the_api_answers(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path / "config.toml", make_settings(tmp_path, sim.integration_url))

    def status() -> tuple[dict[str, object], str]:
        facts = json.loads(command("status", "--json", "--config", str(config), check=True).stdout)
        lines = command("status", "--config", str(config), check=True).stdout.splitlines()
        [uplink] = [line for line in lines if line.startswith("uplink")]
        return facts, uplink

    run = Run(config)
    # pending=0: the database is open, so this run's state is written (daemon.py `_open`).
    run.wait_for_line("gateagent started.* pending=0")
    fresh, fresh_line = status()
    run.tap("0000000001")
    run.wait_for_line("tap delivered")
    assert run.stop() == 0
    answered, answered_line = status()

    assert (fresh["uplink_state"], fresh["uplink_answered_at"]) == ("ok", None)
    assert fresh_line == "uplink            ok (nothing sent since start)"
    assert answered["uplink_state"] == "ok"
    assert isinstance(answered["uplink_answered_at"], str)
    age_s = datetime.now(UTC) - datetime.fromisoformat(answered["uplink_answered_at"])
    assert 0 <= age_s.total_seconds() < 600, answered["uplink_answered_at"]
    assert answered_line == "uplink            ok"

    # A restart: the last run's answer says nothing about the server now.
    run = Run(config)
    run.wait_for_line("gateagent started.* pending=0")
    restarted, restarted_line = status()
    assert run.stop() == 0
    assert restarted["uplink_answered_at"] is None
    assert restarted_line == "uplink            ok (nothing sent since start)"
