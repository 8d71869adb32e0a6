"""`gateagent status` from a real database: what the daemon published in meta, as JSON
and as the technician's lines (gateagent/status.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateagent import status
from gateagent.store import Store

NOW = datetime(2026, 12, 1, 0, 15, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "taps.db")
    yield opened
    opened.close()


def _uplink_line(facts: dict[str, object]) -> str:
    [line] = [line for line in status.render(facts).splitlines() if line.startswith("uplink")]
    return line


def test_uplink_ok_before_any_answer_says_nothing_was_sent(store: Store) -> None:
    # As a daemon that just started writes it (daemon.py `_open`).
    store.set_meta("pid", str(os.getpid()))
    store.set_meta("uplink_state", "ok")
    store.set_meta("uplink_answered_at", "")
    facts = status.collect(store, NOW)
    assert facts["uplink_state"] == "ok"  # the SPEC'd value, unchanged for fleet scripts
    assert facts["uplink_answered_at"] is None
    assert _uplink_line(facts) == "uplink            ok (nothing sent since start)"


def test_uplink_ok_after_an_answer_is_plain_ok(store: Store) -> None:
    store.set_meta("uplink_state", "ok")
    store.set_meta("uplink_answered_at", "2026-12-01T00:14:59.123Z")
    facts = status.collect(store, NOW)
    assert facts["uplink_answered_at"] == "2026-12-01T00:14:59.123Z"
    assert _uplink_line(facts) == "uplink            ok"


def test_a_database_of_an_older_daemon_has_no_answer_time(store: Store) -> None:
    facts = status.collect(store, NOW)
    assert (facts["uplink_state"], facts["uplink_answered_at"]) == ("ok", None)
    assert _uplink_line(facts) == "uplink            ok (nothing sent since start)"


def test_uplink_retrying_shows_its_message_whether_or_not_anything_answered(store: Store) -> None:
    store.set_meta("uplink_state", "retrying")
    store.set_meta("uplink_message", "connection refused at 127.0.0.1:9")
    facts = status.collect(store, NOW)
    assert facts["uplink_answered_at"] is None
    assert _uplink_line(facts) == "uplink            retrying  connection refused at 127.0.0.1:9"
