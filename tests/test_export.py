"""`gateagent export`: the exact CSV, `local_time` in the gate's zone, the effective gate,
and --since/--until/--card/--state/--last (issue 13). A real SQLite file in tmp_path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateagent.cli import main
from gateagent.store import NewTap, Store

JAKARTA = ZoneInfo("Asia/Jakarta")
DAY = datetime(2026, 12, 1, 0, 15, 2, 731000, tzinfo=UTC)  # 07:15:02 in Jakarta
HEADER = (
    "tap_id,card_no,reader,gate,checktype,state,reason,tapped_at,local_time,clock_synced,"
    "attempts,last_error,student_name,attendance_status,recorded_at,settled_at"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Three taps: card A in at the entrance (no gate of its own), card B at the side
    door (gate 7), card A out an hour later."""
    store = Store.open(tmp_path / "taps.db")
    taps = [
        ("t1", "0012822001", "entrance", None, DAY),
        ("t2", "0006762840", "side", 7, DAY + timedelta(minutes=5)),
        ("t3", "0012822001", "entrance", None, DAY + timedelta(hours=1)),
    ]
    try:
        for tap_id, card_no, reader, gate, at in taps:
            store.record(
                NewTap(tap_id, card_no, reader, gate, "auto", at, 1.0, "boot", True),
                JAKARTA,
                600.0,
                False,
            )
    finally:
        store.close()
    path = tmp_path / "config.toml"
    # Only what export reads; the rest of the file may be missing or wrong.
    path.write_text(
        f'[device]\ntimezone = "Asia/Jakarta"\n[storage]\npath = "{tmp_path / "taps.db"}"\n'
        "[uplink]\ngate = 4\n"
    )
    return path


ROWS = {
    "t1": "t1,0012822001,entrance,4,1,pending,,2026-12-01T00:15:02.731Z,2026-12-01 07:15:02 +07:00,"
    "1,0,,,,2026-12-01T00:15:02.731Z,",
    "t2": "t2,0006762840,side,7,1,pending,,2026-12-01T00:20:02.731Z,2026-12-01 07:20:02 +07:00,"
    "1,0,,,,2026-12-01T00:20:02.731Z,",
    "t3": "t3,0012822001,entrance,4,2,pending,,2026-12-01T01:15:02.731Z,2026-12-01 08:15:02 +07:00,"
    "1,0,,,,2026-12-01T01:15:02.731Z,",
}


def export(capsys: pytest.CaptureFixture[str], config: Path, *options: str) -> list[str]:
    assert main(["export", "--config", str(config), *options]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == HEADER
    return lines[1:]


def test_every_tap_with_local_time_and_its_effective_gate(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    assert export(capsys, config) == [ROWS["t1"], ROWS["t2"], ROWS["t3"]]


@pytest.mark.parametrize(
    ("options", "ids"),
    [
        (["--card", "0012822001"], ["t1", "t3"]),
        (["--last", "2"], ["t2", "t3"]),
        (["--card", "0012822001", "--last", "1"], ["t3"]),
        (["--since", "2026-12-01 07:20"], ["t2", "t3"]),  # the gate's zone
        (["--since", "2026-12-01T00:20:02.731Z"], ["t2", "t3"]),  # inclusive
        (["--until", "2026-12-01 08:00"], ["t1", "t2"]),
        (["--until", "2026-12-01T07:20:02.731+07:00"], ["t1"]),  # exclusive
        (["--since", "2026-12-01", "--until", "2026-12-02"], ["t1", "t2", "t3"]),
        (["--since", "2026-12-02"], []),
        (["--state", "delivered"], []),
        (["--state", "pending", "--card", "0006762840"], ["t2"]),
    ],
    ids=[
        "card", "last", "card-last", "since-local", "since-utc-inclusive", "until-local",
        "until-exclusive", "a-local-day", "nothing-since", "state", "state-card",
    ],
)  # fmt: skip
def test_filters(
    capsys: pytest.CaptureFixture[str], config: Path, options: list[str], ids: list[str]
) -> None:
    assert export(capsys, config, *options) == [ROWS[tap_id] for tap_id in ids]


def test_since_an_age(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    # An age counts back from now: two days more than the taps' age reaches them all.
    days = (datetime.now(UTC) - DAY).days
    assert export(capsys, config, "--since", f"{abs(days) + 2}d") == list(ROWS.values())


def test_a_bad_time_is_a_usage_error(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert main(["export", "--config", str(config), "--since", "yesterday"]) == 2
    assert capsys.readouterr().err == (
        'gateagent: --since "yesterday": not a time ("2026-12-01", "2026-12-01 07:15",'
        ' "2026-12-01T00:15:00Z") or an age ("90m", "1h", "7d")\n'
    )
