"""`gateagent status`: the queue and health, read from the database (SPEC "Command line").

The daemon publishes what only it knows (uplink state, clock, reader health) in the
database when it changes, so `status` works from another process, as another user, and
while the daemon is stopped. A reader's last tap comes from the taps themselves, so it
shows as soon as the tap is committed. A daemon that is not running (stopped, or
killed) connects no reader, whatever it last published.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from gateagent.store import Store, iso


def collect(store: Store, now: datetime) -> dict[str, Any]:
    counts = store.counts()
    meta = store.meta()
    oldest = store.oldest_pending()
    last = store.last_delivery()
    synced = meta.get("clock_synchronized")
    running = _alive(meta.get("pid"))
    readers = store.readers()
    for reader in readers:
        reader["last_tap_at"] = store.last_tap_at(reader["name"])
        if not running:
            reader["connected"] = False
            reader["last_error"] = reader["last_error"] or "gateagent is not running"
    return {
        "device": meta.get("device"),
        "pending": counts["pending"],
        "delivered": counts["delivered"],
        "rejected": counts["rejected"],
        "ignored": counts["ignored"],
        "held": counts["held"],
        "oldest_pending_age_s": round((now - oldest).total_seconds(), 3) if oldest else None,
        "last_delivery_at": iso(last) if last else None,
        "uplink_state": meta.get("uplink_state", "ok"),
        "uplink_message": meta.get("uplink_message") or None,
        # None until the API answered a request since the daemon started: "ok" before
        # then only means nothing went wrong yet, not that the server is up (issue 13).
        "uplink_answered_at": meta.get("uplink_answered_at") or None,
        "clock_synchronized": None if synced is None else synced == "1",
        "daemon_running": running,
        "database_moved_aside": meta.get("moved_aside"),
        "readers": readers,
    }


def render(status: dict[str, Any]) -> str:
    """The same facts for a technician's terminal."""
    lines = [
        f"device            {status['device'] or '-'}"
        f"{'' if status['daemon_running'] else '  (daemon not running)'}",
        f"pending           {status['pending']}"
        + (f"  (oldest {_age(status['oldest_pending_age_s'])} old)" if status["pending"] else ""),
        f"delivered         {status['delivered']}  (last {status['last_delivery_at'] or 'never'})",
        f"rejected          {status['rejected']}",
        f"ignored           {status['ignored']}",
        f"held              {status['held']}",
        f"uplink            {_uplink(status)}"
        + (f"  {status['uplink_message']}" if status["uplink_message"] else ""),
        f"clock             {_clock(status['clock_synchronized'])}",
    ]
    if status["database_moved_aside"]:
        lines.append(f"database          moved aside {status['database_moved_aside']}")
    for reader in status["readers"]:
        state = "connected" if reader["connected"] else "disconnected"
        extra = f"  {reader['last_error']}" if reader["last_error"] else ""
        last = reader["last_tap_at"] or "no tap yet"
        lines.append(f"reader {reader['name']:<10} {state}, last tap {last}{extra}")
    return "\n".join(lines)


def _uplink(status: dict[str, Any]) -> str:
    state = str(status["uplink_state"])
    if state == "ok" and status["uplink_answered_at"] is None:
        return "ok (nothing sent since start)"
    return state


def _clock(synced: bool | None) -> str:
    if synced is None:
        return "unknown"
    return "synchronized" if synced else "NOT synchronized"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _alive(pid: str | None) -> bool:
    if not pid or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # it exists, as another user (systemd's gateagent)
    except OSError:
        return False
    return True
