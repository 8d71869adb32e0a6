"""A real systemd: a bare Debian 12 booted in a container, gateagent installed as the
README says, and the unit exercised the way systemd runs it on a Pi.

Debian 12 (bookworm) runs systemd 252, as Raspberry Pi OS Bookworm does. The root is
made once with debootstrap and cached in GATEAGENT_TEST_CACHE (default
/var/cache/gateagent-tests); each run boots a fresh copy with `systemd-nspawn -b` and
acts inside it with `nsenter`. The container shares the host's network, so the
endpoint simulator runs in this test process on 127.0.0.1.

Needs root, debootstrap and systemd-nspawn (installed from Debian's packages here when
missing); skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateagent.simulator import Simulator
from tests import secrets_sweep
from tests.system.machines import (
    CACHE,
    ROOT,
    base_root,
    copy_root,
    stamp,
    tools_missing,
    wheelhouse,
)

TOKEN = secrets_sweep.secret("system-test-token-5o8rNh", "tests/system/test_systemd_boot.py TOKEN")
CARD_LINK = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_TEST-if00-port0"
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PID_S = 60
BOOT_S = 120


class Pi:
    """A booted container: `run()` acts inside it as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # What systemd-nspawn says when it cannot start or ends early: the reason shown.
        self._said_path = root.with_name("nspawn.log")
        with self._said_path.open("wb") as said:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "-D", str(root), "--register=no", "--keep-unit", "-b",
                 "--console=passive", f"--machine=gatepi{os.getpid()}"],
                stdin=subprocess.DEVNULL,
                stdout=said,
                stderr=said,
            )  # fmt: skip
        try:
            self.pid = self._init_pid()
            self._wait_booted()
        except BaseException:
            self.nspawn.kill()
            self.nspawn.wait(10)
            raise

    def _wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_S
        last = "no answer yet"
        while (left := deadline - time.monotonic()) > 0:
            self._fail_if_gone("before it booted", last)
            try:
                # Until PID 1 listens on its bus, systemctl cannot even ask: --wait then
                # returns at once, and the question is asked again.
                state = self.run(
                    "systemctl", "is-system-running", "--wait", check=False, timeout=left
                )
            except subprocess.TimeoutExpired:
                last = "`systemctl is-system-running --wait` still waiting"
                break
            if state.stdout.strip() in ("running", "degraded"):
                return
            answer = " ".join((state.stdout + state.stderr).split())
            last = answer or f"no output, exit status {state.returncode}"
            time.sleep(0.1)
        self._fail_if_gone("before it booted", last)
        pytest.fail(
            f"the container's systemd did not reach running in {BOOT_S} s: {last}{self._said()}"
        )

    def _init_pid(self) -> int:
        """The container's PID 1, as this machine numbers it.

        Not simply nspawn's first child: that is an intermediate process which forks
        PID 1 and exits, and taking it made `nsenter` fail with "cannot open
        /proc/N/ns/ipc" (issue 13). PID 1 is the process whose NSpid ends in 1."""
        deadline = time.monotonic() + INIT_PID_S
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                # Before any container ran: this machine cannot run one (not a failure
                # of gateagent's), e.g. no privileges inside another container.
                pytest.skip(
                    f"systemd-nspawn cannot run a container here (exit status"
                    f" {self.nspawn.returncode}){self._said()}"
                )
            for pid in _descendants(self.nspawn.pid):
                if _nspid(pid)[1:] == ["1"]:
                    return pid
            time.sleep(0.05)  # systemd-nspawn forks PID 1 in a moment
        pytest.fail(f"the container's PID 1 did not appear in {INIT_PID_S} s{self._said()}")

    def _fail_if_gone(self, when: str, last: str) -> None:
        if self.nspawn.poll() is not None:
            pytest.fail(
                f"the container ended {when} (systemd-nspawn exit status"
                f" {self.nspawn.returncode}); its systemd last said: {last}{self._said()}"
            )
        if not Path(f"/proc/{self.pid}").exists():
            pytest.fail(f"the container's PID 1 ({self.pid}) is gone {when}: {last}{self._said()}")

    def _said(self) -> str:
        said = self._said_path.read_text(errors="replace").strip()
        return f"; systemd-nspawn said: {said[-1500:]}" if said else ""

    def command(self, *args: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "--",
                "env", "-i", f"PATH={INSIDE_PATH}", "LANG=C.UTF-8", *args]  # fmt: skip

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, input=input,
            check=False,
        )  # fmt: skip
        # The machine's answers (journal, systemctl, install.sh) are what it printed.
        secrets_sweep.output(done.stdout, done.stderr)
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def show(self, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", "gateagent", *(f"-p{p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_journal(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (
            text not in self.run("journalctl", "-u", "gateagent", "--no-pager", "-o", "cat").stdout
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"gateagent's journal did not show {text!r} in {timeout_s:.0f} s")
            time.sleep(0.2)  # the machine's journal, seen from outside

    def wait_show(self, want: dict[str, str], timeout_s: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            shown = self.show(*want)
            if all(shown.get(k) == v for k, v in want.items()):
                return shown
            if time.monotonic() > deadline:
                pytest.fail(f"gateagent.service did not reach {want} in {timeout_s:.0f} s: {shown}")
            time.sleep(0.2)  # systemd's state, seen from outside

    def stop(self) -> None:
        self.run("systemctl", "poweroff", check=False, timeout=30)
        try:
            self.nspawn.wait(30)
        except subprocess.TimeoutExpired:
            self.nspawn.kill()
            self.nspawn.wait(10)


def _descendants(pid: int) -> list[int]:
    """`pid`'s children and theirs (gone ones skipped: they come and go meanwhile)."""
    found: list[int] = []
    waiting = [pid]
    while waiting:
        parent = waiting.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            waiting += children
    return found


def _nspid(pid: int) -> list[str]:
    """The pid in each pid namespace the process is in, outermost first; [] if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


def _copy_source(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pi]:
    reason = tools_missing(
        "systemd-nspawn", "debootstrap", packages=("debootstrap", "systemd-container")
    )
    if reason:
        pytest.skip(reason)
    # A root with the dependencies installed is cached per pyproject.toml; each run
    # installs this checkout on a fresh copy of it.
    installed = CACHE / f"bookworm-installed-{stamp()}"
    # A copy of a machine with this checkout's sources in it, and tests name the token;
    # what the machine printed is swept through Pi.run() instead.
    root = secrets_sweep.exempt(tmp_path_factory.mktemp("pi") / "root")
    copy_root(installed if installed.exists() else base_root(), root)
    source = root / "opt/gateagent/src"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    _copy_source(source)
    shutil.rmtree(root / "opt/wheels", ignore_errors=True)
    wheelhouse(root / "opt/wheels")
    machine = Pi(root)
    try:
        machine.run(
            "env",
            "GATEAGENT_WHEELS=/opt/wheels",
            "/opt/gateagent/src/systemd/install.sh",
            timeout=600,
        )
        if not installed.exists():
            machine.run("systemctl", "stop", "gateagent", check=False)
            copy_root(root, Path(f"{installed}.partial"))
            os.rename(f"{installed}.partial", installed)
        yield machine
        # The whole journal, every unit and field, not only the lines the tests looked at.
        machine.run("journalctl", "--no-pager", "--all", "-o", "verbose", check=False)
    finally:
        machine.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN) as simulator:
        yield simulator


# A pseudo-terminal inside the container stands for a USB serial reader at a by-id
# path; cards written to this helper's stdin come out of it as `lines` frames.
INJECTOR = f"""
import os, sys, tty
master, slave = os.openpty()
tty.setraw(slave)
name = os.ttyname(slave)
os.chmod(name, 0o666)
os.makedirs(os.path.dirname("{CARD_LINK}"), exist_ok=True)
if os.path.lexists("{CARD_LINK}"):
    os.unlink("{CARD_LINK}")
os.symlink(name, "{CARD_LINK}")
print("ready", flush=True)
for line in sys.stdin:
    os.write(master, line.strip().encode() + b"\\r\\n")
"""

CONFIG = """
[device]
name = "gate-system-test"
timezone = "Asia/Jakarta"
require_clock_sync = false

[[readers]]
name = "entrance"
kind = "serial"
path = "{card_link}"
protocol = "lines"

[[readers]]
name = "exit"
kind = "serial"
path = "/dev/serial/by-id/usb-not-plugged-in"

[uplink]
url = "{url}"
gate = 4
flush_interval = "0s"
"""

DROP_IN = """
[Service]
# The test's reader is a pseudo-terminal, not a ttyUSB device.
DeviceAllow=char-pts rw
# Short, so a wedged loop is noticed within the test's time.
WatchdogSec=4s
"""


@pytest.fixture(scope="module")
def configured(pi: Pi, sim: Simulator) -> Iterator[subprocess.Popen[str]]:
    config = CONFIG.format(card_link=CARD_LINK, url=sim.integration_url)
    pi.run("sh", "-c", "cat > /etc/gateagent/config.toml", input=config)
    # README "Installing on a Pi", step 2, word for word.
    pi.run("sh", "-c", f"printf '%s' '{TOKEN}' > /etc/gateagent/token")
    pi.run("mkdir", "-p", "/etc/systemd/system/gateagent.service.d")
    pi.run("sh", "-c", "cat > /etc/systemd/system/gateagent.service.d/test.conf", input=DROP_IN)
    pi.run("systemctl", "daemon-reload")
    injector = subprocess.Popen(
        pi.command("/opt/gateagent/venv/bin/python", "-c", INJECTOR),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert injector.stdout is not None
    assert injector.stdout.readline().strip() == "ready"
    yield injector
    injector.kill()
    injector.wait(10)
    injector.stdin.close()  # type: ignore[union-attr]
    injector.stdout.close()


def tap(injector: subprocess.Popen[str], card: str) -> None:
    assert injector.stdin is not None
    injector.stdin.write(card + "\n")
    injector.stdin.flush()


# README "Installing on a Pi", steps 3 to 8, as a technician types them in a root shell:
# no $CREDENTIALS_DIRECTORY, no extra variable or flag (issue 13).


def test_walkthrough_readers(pi: Pi, configured: subprocess.Popen[str]) -> None:
    done = pi.run("gateagent", "readers")
    assert "Traceback" not in done.stderr
    assert "not listed" not in done.stdout  # Debian's python3-evdev is in the venv


def test_walkthrough_listen_with_a_pty_reader(pi: Pi, configured: subprocess.Popen[str]) -> None:
    # The shell says its PID (in the container) and becomes `gateagent listen`: Ctrl-C
    # is then a SIGINT to that PID (a signal to nsenter would not reach it).
    listening = subprocess.Popen(
        pi.command("sh", "-c", "echo $$; exec gateagent listen"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        pid = int(listening.stdout.readline())
        first = listening.stdout.readline()
        assert first.startswith("listening on entrance (serial"), first
        states = {listening.stdout.readline().strip() for _ in range(2)}
        assert "reader entrance: connected" in states, states
        tap(configured, "0012822001")
        # The bytes first (in one line or more), then the read with the gate's time.
        shown = [listening.stdout.readline().rstrip("\n")]
        while not shown[-1].endswith("entrance: read '0012822001'") and len(shown) < 10:
            shown.append(listening.stdout.readline().rstrip("\n"))
        assert shown[0].startswith("entrance: bytes 30 30 31 32 38"), shown
        assert shown[-1].endswith(" +07:00 entrance: read '0012822001'"), shown
        following = listening.stdout.readline().rstrip("\n")
        assert following == "  as-read      0012822001   <- card_format now", (shown, following)
        pi.run("sh", "-c", f"kill -INT {pid}")  # the shell's own kill: no procps here
        listening.wait(30)
    finally:
        if listening.poll() is None:
            listening.kill()
        out, err = listening.communicate(timeout=30)
        secrets_sweep.output(out, err)
    assert listening.returncode == 0, err
    assert "Traceback" not in err


def test_walkthrough_check_finds_the_token(pi: Pi, configured: subprocess.Popen[str]) -> None:
    done = pi.run("gateagent", "check", check=False, timeout=120)
    lines = done.stdout.splitlines()
    # 1, not 2: the configuration and its token were fine; the unplugged "exit" fails.
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines[0].startswith("OK    config /etc/gateagent/config.toml"), lines
    assert "OK    reader entrance: /dev/serial/by-id/" in "\n".join(lines)
    assert any(line.startswith("FAIL  reader exit: missing") for line in lines), lines
    assert any(line.startswith("OK    server HTTP GET") for line in lines), lines


def test_start_reaches_active_after_ready(pi: Pi, configured: subprocess.Popen[str]) -> None:
    # Step 7; Type=notify: returns on READY=1.
    pi.run("systemctl", "enable", "--now", "gateagent", timeout=60)
    shown = pi.show("ActiveState", "SubState", "StatusText", "NotifyAccess")
    journal = pi.run("journalctl", "-u", "gateagent", "--no-pager", "-o", "cat").stdout
    assert shown["ActiveState"] == "active", journal
    assert shown["SubState"] == "running"
    # "starting" until the uploader is made, just after READY=1.
    assert re.match(r"0 pending, uplink (starting|ok), readers", shown["StatusText"]), (
        shown,
        journal,
    )
    status = pi.run("systemctl", "status", "gateagent", "--no-pager", check=False).stdout
    assert re.search(r'Status: "0 pending, uplink (starting|ok), readers', status)


def test_taps_reach_the_server(pi: Pi, configured: subprocess.Popen[str], sim: Simulator) -> None:
    tap(configured, "0012822001")
    tap(configured, "0006762840")
    accepted = sim.wait_for_accepted(2, timeout_s=30)
    assert {r.body["card_no"] for r in accepted} == {"0012822001", "0006762840"}
    assert all(r.body["token"] == TOKEN for r in accepted)  # the credential reached it
    # Step 8.
    status = pi.run("gateagent", "status").stdout
    assert "Traceback" not in status


def test_reload_rereads_the_config_in_the_same_process(
    pi: Pi, configured: subprocess.Popen[str]
) -> None:
    # README "Installing on a Pi": `systemctl reload gateagent`. ExecReload ran
    # /bin/kill, which this Debian (no procps) does not have: the reload failed (issue 13).
    before = pi.show("MainPID")
    done = pi.run("systemctl", "reload", "gateagent", check=False, timeout=60)
    journal = pi.run("journalctl", "-u", "gateagent", "--no-pager", "-o", "cat").stdout
    assert done.returncode == 0, done.stderr + journal[-2000:]
    deadline = time.monotonic() + 30
    while "configuration reloaded path=/etc/gateagent/config.toml" not in journal:
        assert time.monotonic() < deadline, f"no reload in the journal in 30 s: {journal[-2000:]}"
        time.sleep(0.2)  # the daemon applies it after ExecReload's signal, in its own time
        journal = pi.run("journalctl", "-u", "gateagent", "--no-pager", "-o", "cat").stdout
    assert pi.show("MainPID", "ActiveState") == {**before, "ActiveState": "active"}


def test_journal_warning_shows_the_missing_reader_only(
    pi: Pi, configured: subprocess.Popen[str]
) -> None:
    warnings = pi.run(
        "journalctl", "-u", "gateagent", "-p", "warning", "--no-pager", "-o", "cat"
    ).stdout
    assert (
        "reader disconnected reader=exit error=missing: /dev/serial/by-id/usb-not-plugged-in"
        in warnings
    )
    assert "tap recorded" not in warnings  # info stays out of -p warning
    everything = pi.run("journalctl", "-u", "gateagent", "--no-pager", "-o", "cat").stdout
    assert "tap recorded card_no=0012822001" in everything
    assert TOKEN not in everything


def test_kill_9_restarts_and_loses_nothing(
    pi: Pi, configured: subprocess.Popen[str], sim: Simulator
) -> None:
    before = pi.show("MainPID", "NRestarts")
    tap(configured, "2430030533")
    # Killed only once the tap is recorded: bytes still in the pty when its reader dies
    # are the kernel's to drop, and an unrecorded tap is not one the daemon may lose.
    pi.wait_journal("tap recorded card_no=2430030533", timeout_s=30)
    pi.run("systemctl", "kill", "--signal=SIGKILL", "--kill-whom=main", "gateagent")
    # Right after the kill the unit may still show the old process as running (systemd
    # has not reaped it yet): wait for the restart itself, not for "running".
    restarted = {
        "NRestarts": str(int(before["NRestarts"]) + 1),
        "ActiveState": "active",
        "SubState": "running",
    }
    assert pi.wait_show(restarted, timeout_s=60) == restarted
    cards = {r.body["card_no"] for r in sim.wait_for_accepted(3, timeout_s=60)}
    assert "2430030533" in cards


def test_a_frozen_daemon_stops_the_watchdog_and_systemd_restarts(
    pi: Pi, configured: subprocess.Popen[str]
) -> None:
    before = int(pi.show("NRestarts")["NRestarts"])
    # Nothing from outside wedges the event loop any more (it never waits on SQLite:
    # tests/test_watchdog.py holds the database through a reload and the pings go on), so
    # the whole process is frozen: its pings stop, and systemd must restart it.
    pi.run("systemctl", "kill", "--signal=STOP", "gateagent")
    want = {"NRestarts": str(before + 1), "ActiveState": "active", "SubState": "running"}
    assert pi.wait_show(want, timeout_s=90) == want
    journal = pi.run("journalctl", "-u", "gateagent", "--no-pager", "-o", "cat").stdout
    assert "Watchdog timeout" in journal or "watchdog" in journal.lower()


def test_stop_exits_0_in_time(pi: Pi, configured: subprocess.Popen[str]) -> None:
    started = time.monotonic()
    pi.run("systemctl", "stop", "gateagent", timeout=60)
    assert time.monotonic() - started < 20  # TimeoutStopSec
    shown = pi.show("ActiveState", "Result", "ExecMainStatus")
    assert shown == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}


def test_a_broken_config_exits_2_and_is_not_restarted(
    pi: Pi, configured: subprocess.Popen[str]
) -> None:
    pi.run("sh", "-c", "echo 'flush_intervall = 3' >> /etc/gateagent/config.toml")
    pi.run("systemctl", "start", "gateagent", check=False, timeout=60)
    shown = pi.wait_show({"ActiveState": "failed"}, timeout_s=30)
    assert shown["ActiveState"] == "failed"
    time.sleep(7)  # longer than RestartSec: it must stay down
    shown = pi.show("ActiveState", "ExecMainStatus", "NRestarts")
    assert shown["ActiveState"] == "failed"
    assert shown["ExecMainStatus"] == "2"
    journal = pi.run("journalctl", "-u", "gateagent", "-n", "20", "--no-pager", "-o", "cat").stdout
    assert "flush_intervall: unknown key; did you mean 'flush_interval'?" in journal
