"""Faults the daemon must survive without losing a recorded tap: a damaged database at
start, and a disk that fills up (a real, small file system)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateagent.simulator import Simulator
from tests.running import Run, command, states
from tests.settings import TOKEN, make_settings, write_config


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN) as simulator:
        yield simulator


def test_a_damaged_database_is_moved_aside_and_status_says_so(
    tmp_path: Path, sim: Simulator
) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    settings.storage.path.write_bytes(b"\x00garbage, not SQLite" * 500)
    Path(f"{settings.storage.path}-wal").write_bytes(b"a wal that may hold taps")
    config = write_config(tmp_path / "config.toml", settings)
    run = Run(config)
    run.wait_for_line("gateagent started")
    run.tap("0012822001")
    sim.wait_for_accepted(1)
    run.wait_for_line("tap delivered")
    assert run.stop() == 0
    assert "tap database damaged, moved aside and a new one started" in run.output

    aside = sorted(tmp_path.glob("taps.db.damaged-*"))
    assert [p.name.rsplit("Z", 1)[-1] for p in aside] == ["", "-shm", "-wal"]
    assert Path(f"{aside[0]}-wal").read_bytes() == b"a wal that may hold taps"
    status = command("status", "--json", "--config", str(config), check=True)
    facts = json.loads(status.stdout)
    assert str(aside[0]) in facts["database_moved_aside"]
    assert facts["delivered"] == 1


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs) for the database, so SQLite really gets SQLITE_FULL."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    folder = Path(tempfile.mkdtemp(prefix="gateagent-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)
    folder.rmdir()


def test_a_full_disk_keeps_taps_in_memory_until_there_is_room(
    tmp_path: Path, sim: Simulator, small_disk: Path
) -> None:
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        storage={"path": str(small_disk / "taps.db")},
        uplink={"flush_interval": "1h"},  # nothing is delivered (nor deleted) meanwhile
    )
    run = Run(write_config(tmp_path / "config.toml", settings))
    run.wait_for_line("gateagent started")
    run.tap("0000000001")
    run.wait_for_line("tap recorded card_no=0000000001")

    filler = small_disk / "filler"
    with filler.open("wb") as file, pytest.raises(OSError):  # ENOSPC: the disk is full
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    run.tap("0000000002", "0000000003")
    run.wait_for_line("is full: taps kept in memory and retried")
    assert "0000000002" not in [card for card, _ in states(settings.storage.path)]

    filler.unlink()  # room again: the housekeeping records the kept taps, in order
    run.wait_for_line("tap recorded card_no=0000000003")
    assert run.stop() == 0
    assert [card for card, _ in states(settings.storage.path)] == [
        "0000000001",
        "0000000002",
        "0000000003",
    ]
    assert "database takes taps again" in run.output


def test_a_disk_full_at_start_reads_keeps_taps_and_records_them_when_there_is_room(
    tmp_path: Path, sim: Simulator, small_disk: Path
) -> None:
    # Issue 11, item 1: `run` exited 1 and systemd restarted it every 5 s; readers never
    # opened, and taps presented meanwhile were neither recorded nor kept.
    settings = make_settings(
        tmp_path, sim.integration_url, storage={"path": str(small_disk / "taps.db")}
    )
    config = write_config(tmp_path / "config.toml", settings)
    filler = small_disk / "filler"
    with filler.open("wb") as file, pytest.raises(OSError):
        while True:
            file.write(b"\0" * 65536)
            file.flush()

    run = Run(config)
    try:
        run.wait_for_line("tap database cannot be used: .*full")
        run.wait_for_line("gateagent started")
        run.tap("0012822001", "0006762840")
        filler.unlink()
        run.wait_for_line("tap database open")
        run.wait_for_line("tap recorded card_no=0006762840")
        sim.wait_for_accepted(2)
    finally:
        code = run.stop()
    assert code == 0
    assert states(settings.storage.path) == [
        ("0012822001", "delivered"),
        ("0006762840", "delivered"),
    ]
    assert len(re.findall("tap database cannot be used", run.output)) <= 2
