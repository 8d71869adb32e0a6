from __future__ import annotations

import signal
import subprocess
import sys
import threading

from tests import secrets_sweep


def test_demo_delivers_to_its_simulator_and_stops_on_sigint() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "demo"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    done = threading.Event()
    # The script ends a few seconds after the outage; the tap made during it is sent at
    # the uplink's next retry, whose backoff (with jitter) can come later than that.
    awaited = {"script done", "tap delivered card_no=2430030533", "checktype=2 student=Budi"}

    def read() -> None:
        assert demo.stderr is not None
        for line in demo.stderr:
            lines.append(line.rstrip("\n"))
            awaited.difference_update({text for text in awaited if text in line})
            if not awaited:
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert done.wait(60), "\n".join(lines)
        assert not awaited, "\n".join(lines)  # the output did not just end
        demo.send_signal(signal.SIGINT)
        assert demo.wait(20) == 0
    finally:
        demo.kill()
        reader.join(10)
        assert demo.stderr is not None
        demo.stderr.close()
    text = "\n".join(lines)
    secrets_sweep.output(text)
    assert "clock sync not required" in text
    assert "tap delivered card_no=0012822001 checktype=1 student=Budi Santoso" in text
    assert "tap delivered card_no=0006762840 checktype=1 student=Siti Rahayu" in text
    assert "tap rejected card_no=0099999999 reason=unknown-card" in text
    assert "uplink retrying" in text
    assert "uplink ok again" in text
    assert "tap delivered card_no=2430030533 checktype=1 student=Agus Wijaya" in text
    assert "tap delivered card_no=0012822001 checktype=2 student=Budi Santoso" in text
    assert text.count("tap recorded card_no=0012822001") == 2  # the bounce was not a tap
    assert "gateagent stopped pending=0" in text
