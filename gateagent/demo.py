"""`gateagent demo`: the daemon on an embedded default, with no config, network or hardware.

The endpoint simulator listens on 127.0.0.1, the database lives in a temporary folder,
and a scripted reader taps cards: check-ins, a bounce inside the debounce window, an
unknown card, a short server outage, and a check-out. What a technician would read in
journald scrolls by; Ctrl-C stops it. Cards typed on the terminal are taps too.

It runs as a host with a real-time clock would (`require_clock_sync = false`), because
many machines that try it report their clock as unsynchronized.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from gateagent import logs
from gateagent.clock import SystemClock
from gateagent.config import Config, Reader
from gateagent.daemon import Daemon
from gateagent.readers import source_for
from gateagent.readers.base import Emit, Health, Source
from gateagent.simulator import Simulator

log = logging.getLogger("gateagent.demo")

TOKEN = "demo-token"  # noqa: S105 (the simulator's, not a secret)
UNKNOWN_CARD = "0099999999"

# (seconds to wait first, what the narrator says, the card, or an action on the server)
Step = tuple[float, str, str | None, Callable[[Simulator], None] | None]


def script(sim: Simulator) -> list[Step]:
    return [
        (1.0, "Budi taps in at the entrance", "0012822001", None),
        (1.0, "Siti taps in", "0006762840", None),
        (
            0.5,
            "Budi's card is read again at once: same presentation, nothing new",
            "0012822001",
            None,
        ),
        (1.5, "an unknown card: the server rejects it, the tap is kept", UNKNOWN_CARD, None),
        (1.5, "the server goes down for a few seconds", None, lambda s: s.down()),
        (0.5, "Agus taps in while the server is down: recorded, retried", "2430030533", None),
        (4.0, "the server is back", None, lambda s: s.up()),
        (
            4.0,
            "Budi taps again, more than min_checkout_after later: a check-out",
            "0012822001",
            None,
        ),
    ]


class ScriptedReader:
    """A reader that taps the demo's cards on schedule."""

    def __init__(self, name: str, sim: Simulator) -> None:
        self.name = name
        self._sim = sim

    def probe(self) -> str | None:
        return None

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        health(True, None)
        for wait_s, says, card, action in script(self._sim):
            if stop.wait(wait_s):
                return
            log.info("demo: %s", says)
            if action is not None:
                action(self._sim)
            if card is not None:
                emit(card)
        if not stop.wait(1.0):
            log.info("demo: script done. Type a card number and Enter to tap, Ctrl-C to stop")


def settings(folder: Path, sim: Simulator, typed: bool) -> Config:
    readers = [{"name": "demo", "kind": "stdin"}]
    if typed:
        readers.append({"name": "entrance", "kind": "stdin"})
    return Config.model_validate(
        {
            "device": {
                "name": "demo-gate",
                "timezone": "Asia/Jakarta",
                "require_clock_sync": False,
            },
            "storage": {"path": str(folder / "taps.db")},
            "taps": {"debounce": "3s", "min_checkout_after": "10s", "card_format": "as-read"},
            # Not the node_exporter textfile of the machine that runs the demo.
            "metrics": {"textfile": ""},
            "readers": readers,
            "uplink": {
                "profile": "integration",
                "url": sim.integration_url,
                "token": TOKEN,
                "gate": 4,
                "flush_interval": "0s",
                "timeout": "2s",
            },
        }
    )


def main() -> int:
    logs.setup()
    typed = sys.stdin.isatty()
    with (
        tempfile.TemporaryDirectory(prefix="gateagent-demo-") as folder,
        Simulator(token=TOKEN) as sim,
    ):
        config = settings(Path(folder), sim, typed)
        log.info(
            "demo: simulator at %s, database %s/taps.db; clock sync not required "
            "(a demo host runs as one with a real-time clock)",
            sim.url,
            folder,
        )

        def sources(reader: Reader) -> Source:
            if reader.name == "demo":
                return ScriptedReader(reader.name, sim)
            return source_for(reader)

        return Daemon("(demo)", config, SystemClock(), sources=sources).run()
