"""Metrics (issue 16): what the collector reads from a real database, checked by Debian's
`promtool`, served by Debian's `prometheus-node-exporter` from the textfile, and
`/metrics` of a real `gateagent run` while taps flow and while the server is down."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from gateagent import metrics
from gateagent.config import Config
from gateagent.core.answers import Delivered, Rejected
from gateagent.metrics import Exporter, write_atomically
from gateagent.simulator import Simulator
from gateagent.store import Answer, NewTap, Store
from tests import debian
from tests.running import Run
from tests.settings import TOKEN, make_settings, write_config

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """name and labels -> value, parsed by prometheus_client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def promtool() -> str:
    return debian.program("promtool", "prometheus")


def check_metrics(text: str) -> None:
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return str(answer.read().decode())


def tap(card_no: str, reader: str = "desk", at: datetime = NOW) -> NewTap:
    return NewTap(f"id-{card_no}-{at.timestamp()}", card_no, reader, 4, "auto", at, 1.0, "b", True)


@pytest.fixture
def settings(tmp_path: Path) -> Config:
    return make_settings(
        tmp_path,
        "http://127.0.0.1:9/api",
        readers=[
            {"name": "desk", "kind": "stdin"},
            {"name": "exit", "kind": "serial", "path": "/x"},
        ],
    )


@pytest.fixture
def store(settings: Config) -> Iterator[Store]:
    opened = Store.open(settings.storage.path)
    yield opened
    opened.close()


# 2: the taps recorded between two collects are counted in several steps.
@pytest.mark.parametrize("step", [metrics.COUNT_STEP, 2])
def test_the_metrics_say_what_the_database_holds(
    settings: Config, store: Store, step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "COUNT_STEP", step)
    tz = settings.device.tz
    # Before the start: in the queue, not in the counters.
    store.record(tap("0000000099", at=NOW - timedelta(hours=2)), tz, 600.0, False)
    store.record(tap("0000000098", reader="exit", at=NOW - timedelta(hours=1)), tz, 600.0, False)
    exporter = Exporter(settings, wall=lambda: NOW)
    exporter.text()  # the start: counters count from here

    first = store.record(tap("0012822001", at=NOW - timedelta(minutes=30)), tz, 600.0, False)
    store.record(tap("0012822001", at=NOW - timedelta(minutes=29)), tz, 600.0, False)  # too soon
    store.record(tap("0006762840", reader="exit"), tz, 600.0, hold=True)
    dup = store.record(tap("2430030533"), tz, 600.0, False)
    unknown = store.record(tap("0099999999"), tz, 600.0, False)
    store.settle(
        [
            Answer(first.seq, Delivered()),
            Answer(dup.seq, Delivered(duplicate=True)),
            Answer(unknown.seq, Rejected("unknown-card", 404, "not found")),
        ],
        NOW - timedelta(minutes=5),
    )
    # A technician's drop is no upload.
    store.requeue(states=("pending",), card_no="0000000098", drop=True)
    store.set_meta("uplink_state", "paused-auth")
    store.set_meta("clock_synchronized", "0")
    store.set_reader("desk", True, None)
    store.set_reader("exit", False, "no such device")

    text = exporter.text().decode()
    found = samples(text)
    assert value(found, "gateagent_taps_recorded_total", reader="desk", state="pending") == 3
    assert value(found, "gateagent_taps_recorded_total", reader="desk", state="ignored") == 1
    assert value(found, "gateagent_taps_recorded_total", reader="exit", state="held") == 1
    assert value(found, "gateagent_taps_recorded_total", reader="exit", state="pending") == 0
    assert value(found, "gateagent_uploads_total", outcome="delivered") == 1
    assert value(found, "gateagent_uploads_total", outcome="duplicate") == 1
    assert value(found, "gateagent_uploads_total", outcome="rejected") == 1
    assert value(found, "gateagent_queue_taps", state="pending") == 1  # the one before start
    assert value(found, "gateagent_queue_taps", state="held") == 1
    assert value(found, "gateagent_queue_taps", state="rejected") == 2
    assert value(found, "gateagent_oldest_pending_age_seconds") == 7200
    assert (
        value(found, "gateagent_last_delivery_timestamp_seconds")
        == (NOW - timedelta(minutes=5)).timestamp()
    )
    assert value(found, "gateagent_uplink_state", state="paused-auth") == 1
    assert value(found, "gateagent_uplink_state", state="ok") == 0
    assert value(found, "gateagent_clock_synchronized") == 0
    assert value(found, "gateagent_reader_connected", reader="desk") == 1
    assert value(found, "gateagent_reader_connected", reader="exit") == 0
    # A reader's last tap comes from the taps themselves (as in `status`): the latest
    # recorded of each, here both at NOW.
    for reader in ("desk", "exit"):
        assert (
            value(found, "gateagent_reader_last_tap_timestamp_seconds", reader=reader)
            == NOW.timestamp()
        )
    assert value(found, "gateagent_build_info", device="gate-test", profile="integration",
                 version="0.1.0") == 1  # fmt: skip
    fs = os.statvfs(settings.storage.path.parent)
    assert 0 < value(found, "gateagent_disk_free_bytes") <= fs.f_blocks * fs.f_frsize
    assert value(found, "gateagent_database_size_bytes") >= settings.storage.path.stat().st_size
    # SPEC: no card number is ever a label (nor anywhere else); nor the token.
    for card_no in ("0000000099", "0012822001", "0006762840", "2430030533", "0099999999"):
        assert card_no not in text
    assert TOKEN not in text

    # Counters never go down: retention deletes the settled taps.
    assert store.purge(NOW + timedelta(days=400), 0.0, 0.0) == 5
    again = samples(exporter.text().decode())
    assert value(again, "gateagent_uploads_total", outcome="delivered") == 1
    assert value(again, "gateagent_taps_recorded_total", reader="desk", state="pending") == 3
    check_metrics(text)
    exporter.stop()


def test_the_counters_start_where_the_daemon_opened_the_database(
    settings: Config, store: Store
) -> None:
    # The exporter is made after READY=1 (its import aside): what the daemon recorded
    # and delivered meanwhile is its doing too. It was left out when the counters began
    # at the first collect (a flaky test_metrics_endpoint_of_a_running_gate: 1, not 2).
    tz = settings.device.tz
    store.record(tap("0000000099", at=NOW - timedelta(hours=2)), tz, 600.0, False)
    since = store.watermarks()
    recorded = store.record(tap("0012822001"), tz, 600.0, False)
    store.settle([Answer(recorded.seq, Delivered())], NOW)
    exporter = Exporter(settings, wall=lambda: NOW, since=since)
    found = samples(exporter.text().decode())
    assert value(found, "gateagent_taps_recorded_total", reader="desk", state="pending") == 1
    assert value(found, "gateagent_uploads_total", outcome="delivered") == 1
    exporter.stop()


def test_the_textfile_is_replaced_whole_and_readable_by_node_exporter(
    settings: Config, store: Store
) -> None:
    path = Path(settings.metrics.textfile)
    old = os.umask(0o077)  # the unit's UMask=
    try:
        write_atomically(path, b"a 1\n")
        write_atomically(path, b"a 2\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"a 2\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir() if "prom" in p.name) == [path.name]


def test_a_textfile_that_cannot_be_written_is_a_warning_never_a_stop(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "node-exporter"
    settings = make_settings(tmp_path, "http://127.0.0.1:9/api",
                             metrics={"textfile": str(folder / "gateagent.prom")})  # fmt: skip
    exporter = Exporter(settings)
    caplog.set_level(logging.INFO, "gateagent.metrics")
    exporter.start()
    start = time.monotonic()  # start() wrote (or tried to) at about this time
    for now in range(15, 600, 15):  # no node_exporter: one line, not one per interval
        exporter.tick(start + now)
    assert [r.getMessage() for r in caplog.records] == [
        f"metrics textfile not written: no folder {folder} (install prometheus-node-exporter,"
        ' or set [metrics] textfile = "")'
    ]
    caplog.clear()
    (folder / "gateagent.prom").mkdir(parents=True)  # in the way of the rename
    for now in range(600, 1300, 15):
        exporter.tick(start + now)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"metrics textfile folder found path={folder / 'gateagent.prom'}"
    assert messages[1].startswith("metrics textfile not written path=")
    assert len(messages) == 3 and "more times in the last 10 min" in messages[2], messages
    caplog.clear()
    (folder / "gateagent.prom").rmdir()
    exporter.tick(start + 1400)
    assert caplog.records[0].getMessage().startswith("metrics textfile written path=")
    assert "gateagent_queue_taps" in (folder / "gateagent.prom").read_text()
    exporter.stop()


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({"textfile": "/var/lib/prometheus/node-exporter/gateagent.txt"}, "ending in .prom"),
        ({"textfile": "gateagent.prom"}, "absolute path"),
        ({"listen": "9920"}, "is not HOST:PORT"),
        ({"listen": "127.0.0.1:99999"}, "is not HOST:PORT"),
        ({"textfile_interval": "0s"}, "greater than or equal to 1"),
    ],
    ids=["not-prom", "relative", "no-host", "port", "interval"],
)
def test_bad_metrics_keys_are_refused(
    tmp_path: Path, metrics: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        make_settings(tmp_path, "http://127.0.0.1:9/api", metrics=metrics)


def test_node_exporter_serves_the_textfile(settings: Config, store: Store) -> None:
    exporter = Exporter(settings)
    exporter.start()
    node_exporter = debian.program("prometheus-node-exporter", "prometheus-node-exporter")
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            node_exporter,
            # Only the textfile collector: the others read /proc and /sys for seconds.
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={Path(settings.metrics.textfile).parent}",
            f"--web.listen-address={address}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listening = threading.Event()

        def watch() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                if "Listening on" in line:
                    listening.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert listening.wait(20), "node_exporter did not start"
        found = samples(scrape(f"http://{address}/metrics"))
    finally:
        process.terminate()
        process.wait(10)
        watcher.join(10)
        assert process.stderr is not None
        process.stderr.close()
    assert value(found, "node_textfile_scrape_error") == 0
    mtimes = [labels for name, labels in found if name == "node_textfile_mtime_seconds"]
    assert any(dict(labels)["file"].endswith("gateagent.prom") for labels in mtimes), mtimes
    assert value(found, "gateagent_queue_taps", state="pending") == 0
    assert value(found, "gateagent_build_info", device="gate-test", profile="integration",
                 version="0.1.0") == 1  # fmt: skip
    assert value(found, "gateagent_uplink_state", state="ok") == 1
    exporter.stop()


def test_metrics_endpoint_of_a_running_gate(tmp_path: Path) -> None:
    with Simulator(token=TOKEN, roster={"0000000001": "A", "0000000002": "B"}) as sim:
        port = free_port()
        settings = make_settings(
            tmp_path, sim.integration_url, metrics={"listen": f"127.0.0.1:{port}"}
        )
        run = Run(write_config(tmp_path / "config.toml", settings))
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            run.wait_for_line(f"metrics endpoint listening listen=127.0.0.1:{port}")
            run.wait_for_line("gateagent started")
            run.tap("0000000001", "0000000002")
            run.wait_for_line("tap delivered", 2)
            text = scrape(url)
            found = samples(text)
            assert (
                value(found, "gateagent_taps_recorded_total", reader="desk", state="pending") == 2
            )
            assert value(found, "gateagent_uploads_total", outcome="delivered") == 2
            assert value(found, "gateagent_queue_taps", state="pending") == 0
            assert value(found, "gateagent_uplink_state", state="ok") == 1
            assert value(found, "gateagent_clock_synchronized") in (0, 1)
            assert value(found, "gateagent_unsaved_taps") == 0
            check_metrics(text)

            sim.down()
            run.tap("0000000003")
            run.wait_for_line("uplink retrying: connection-error")
            run.tap("0000000004")
            run.wait_for_line("tap recorded card_no=0000000004")
            # The uplink state reaches the database by the daemon's status publisher, a
            # moment after its log line, and no line says when: scrape until it shows.
            deadline = time.monotonic() + 10
            while True:
                found = samples(scrape(url))
                shown = value(found, "gateagent_uplink_state", state="retrying")
                if shown == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # another scrape; nothing to wait on in between
            assert value(found, "gateagent_queue_taps", state="pending") == 2
            assert value(found, "gateagent_uplink_state", state="retrying") == 1
            assert value(found, "gateagent_uplink_state", state="ok") == 0
            assert (
                value(found, "gateagent_taps_recorded_total", reader="desk", state="pending") == 4
            )
            assert value(found, "gateagent_uploads_total", outcome="delivered") == 2
            assert value(found, "gateagent_oldest_pending_age_seconds") >= 0
        finally:
            assert run.stop() == 0
        # The textfile's last word is the state at the stop.
        last = samples(Path(settings.metrics.textfile).read_text())
        assert value(last, "gateagent_queue_taps", state="pending") == 2
        assert TOKEN not in run.output


def test_the_unit_lets_the_daemon_write_the_default_textfile() -> None:
    from gateagent.config import DEFAULT_METRICS_TEXTFILE
    from tests.test_systemd import settings as unit_settings

    folder = str(Path(DEFAULT_METRICS_TEXTFILE).parent)
    assert f"-{folder}" in unit_settings()["ReadWritePaths"]
    install = (Path(__file__).parents[1] / "systemd" / "install.sh").read_text()
    assert f"textfiles={folder}\n" in install
