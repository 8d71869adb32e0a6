"""Power-cut soak: `gateagent run` in a qemu VM whose power is cut at random moments while
taps arrive and uploads are in flight. Nothing the daemon logged as recorded may be lost.

    .venv/bin/python benchmarks/power_cut.py [--cycles 20] [--seed 1] [--window 30]

SIGKILL (crash_soak.py) leaves the kernel's page cache intact, so it cannot catch a
missing fsync; killing the VM does: the guest kernel's page cache, and every write it
had not yet handed to its disk, go with it. The VM is Debian 12 with Debian's kernel
(the system tests' cached root) and gateagent installed from a wheelhouse built here
from a clean export of a commit (`--rev`, default HEAD), booted with TCG emulation (KVM
hangs on the development machine). Its disk is one ext4 raw image that lives through
every cycle, attached with `cache=none` (O_DIRECT: the host's page cache keeps nothing
for the VM) or `cache=directsync`. What this cannot catch: a write the guest handed to
the disk but never flushed still reaches the image, since the host itself does not
lose power; only a disk that drops its volatile cache would show a missing flush.

Each boot, `power_cut_in_vm.py` (the VM's init) first prints the database as the cut
left it, read-only, then starts the endpoint simulator and `gateagent run` on it, and
types new card numbers (one per tap) into the daemon's standard input. The daemon logs
to the serial console, which leaves the VM at once: a `tap recorded card_no=...` line
that reached this side was logged after its commit. A random time after the daemon was
launched (uniform in [0, --window] s, so some cuts fall into start-up and recovery) qemu
gets SIGKILL. After the last cycle one more boot only prints the database.

Checked at every boot, for every tap of every earlier cycle:
- lost: logged `tap recorded` but not in the database;
- regressed: logged `tap delivered` (written after the answer's commit) but no longer
  `delivered` in the database;
- gaps: a cycle's taps are committed in the order typed, so a missing tap before one
  that is in the database is lost too, logged or not.
Exit status 1 if any of them happened or a boot failed.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harness import machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.system.machines import tools_missing, vm_root  # noqa: E402

DATABASE = "/var/lib/gateagent/taps.db"
INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /run
mount -t tmpfs tmp /tmp
/opt/venv/bin/python /opt/power_cut_in_vm.py 2>&1
echo o > /proc/sysrq-trigger
sleep 30
"""
CONFIG = f"""[device]
name = "power-cut"
require_clock_sync = false
[storage]
path = "{DATABASE}"
[taps]
debounce = "0s"
min_checkout_after = "0s"
[[readers]]
name = "desk"
kind = "stdin"
[uplink]
url = "http://127.0.0.1:8080/api/v1/attendances/integration"
token = "power-cut-token"
gate = 4
flush_interval = "0s"
concurrency = 4
"""
BOOT_TIMEOUT_S = 600
RECORDED = re.compile(r"tap recorded card_no=(\d{4})(\d{6}) reader=")
DELIVERED = re.compile(r"tap delivered card_no=(\d{4})(\d{6}) checktype=")
DB_LINE = re.compile(r"DB cycle=(\d+) state=(\w+) n=(\d+) seqs=([\d,-]*)\s*$")
DUMP_END = re.compile(r"DUMP END rows=(\d+)")
# A damaged database (the daemon would move it aside) or a daemon that died fails the run;
# other warnings are shown. The terminal log format names the level from WARNING up.
FATAL = re.compile(r"QUICK_CHECK (?!ok)|DUMP ERROR|damaged|DAEMON EXITED|Traceback")
NOTABLE = re.compile(r"WARNING|ERROR|CRITICAL")


class Boot:
    """One qemu run; its serial console's complete lines, each with when it arrived."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[tuple[float, str]] = []
        self._log = log.open("w")
        self._changed = threading.Condition()
        self._reading = threading.Thread(target=self._read, daemon=True)
        self._reading.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if not raw.endswith(b"\n"):
                break  # cut in the middle of a line: that line never fully left the VM
            text = raw.decode(errors="replace").rstrip("\r\n")
            self._log.write(text + "\n")
            with self._changed:
                self.lines.append((time.monotonic(), text))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, word: str, timeout_s: float) -> float | None:
        """When the first line containing `word` arrived; None if qemu ended or timed out."""

        def seen() -> float | None:
            return next((at for at, text in self.lines if word in text), None)

        with self._changed:
            self._changed.wait_for(
                lambda: seen() is not None or not self._reading.is_alive(), timeout_s
            )
            return seen()

    def cut(self) -> float:
        """SIGKILL qemu: the power cut. The monotonic time it was sent."""
        at = time.monotonic()
        self.process.kill()
        self.finish()
        return at

    def finish(self) -> None:
        self.process.wait(60)
        self._reading.join(60)
        assert self.process.stderr is not None
        errors = self.process.stderr.read().decode(errors="replace")
        if errors.strip():
            self._log.write(f"--- qemu stderr ---\n{errors}")
        self._log.close()


@dataclass
class Cycle:
    number: int
    cut_s: float = 0.0  # after the daemon was launched
    started_s: float | None = None  # "gateagent started", if before the cut
    recorded: set[int] = field(default_factory=set)  # seqs logged `tap recorded`
    # (cycle, seq) logged `tap delivered` in this boot: also taps of earlier cycles
    delivered: set[tuple[int, int]] = field(default_factory=set)
    found: int = 0  # of `recorded`, in the database at the next boot
    unlogged: int = 0  # in the database at the next boot, cut before its line left


@dataclass
class Findings:
    lost: set[tuple[int, int]] = field(default_factory=set)
    regressed: set[tuple[int, int]] = field(default_factory=set)
    gaps: set[tuple[int, int]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # each fails the run
    notes: list[str] = field(default_factory=list)

    def scan(self, boot: Boot, label: str) -> None:
        for _, text in boot.lines:
            if FATAL.search(text):
                self.problems.append(f"{label}: {text.strip()}")
            elif NOTABLE.search(text):
                self.notes.append(f"{label}: {text.strip()}")


def expand(text: str) -> list[int]:
    numbers: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return numbers


def read_dump(boot: Boot, label: str, findings: Findings) -> dict[int, dict[int, str]] | None:
    """The database as the boot printed it: cycle -> seq -> state; None if unreadable."""
    db: dict[int, dict[int, str]] = defaultdict(dict)
    rows = 0
    for _, text in boot.lines:
        if match := DB_LINE.search(text):
            seqs = expand(match[4])
            if len(seqs) != int(match[3]):
                findings.problems.append(f"{label}: garbled line {text!r}")
                return None
            db[int(match[1])].update(dict.fromkeys(seqs, match[2]))
            rows += len(seqs)
        elif match := DUMP_END.search(text):
            if int(match[1]) != rows:
                findings.problems.append(f"{label}: {rows} rows read of {match[1]}")
                return None
            return db
    findings.problems.append(f"{label}: no DUMP END")
    return None


def check(db: dict[int, dict[int, str]], cycles: list[Cycle], findings: Findings) -> None:
    for cycle in cycles:
        states = db.get(cycle.number, {})
        findings.lost |= {(cycle.number, seq) for seq in cycle.recorded - states.keys()}
        findings.regressed |= {
            (number, seq)
            for number, seq in cycle.delivered
            if db.get(number, {}).get(seq) != "delivered"
        }
        if states:
            missing = set(range(1, max(states) + 1)) - states.keys()
            findings.gaps |= {(cycle.number, seq) for seq in missing}


def build(work: Path, rev: str, checkout: Path | None) -> tuple[Path, Path, Path, str]:
    """The disk image, kernel and initrd; and what was installed."""
    if checkout is not None:
        source, what = checkout.resolve(), f"the checkout in {checkout.resolve()}"
    else:
        source = work / "src"
        source.mkdir()
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", rev],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        what = f"commit {commit}"
    root = work / "root"
    vm_root(root, source)
    shutil.copy(REPO / "benchmarks/power_cut_in_vm.py", root / "opt/power_cut_in_vm.py")
    (root / "opt/init.sh").write_text(INIT)
    (root / "opt/init.sh").chmod(0o755)
    (root / "etc/gateagent").mkdir(parents=True, exist_ok=True)
    (root / "etc/gateagent/config.toml").write_text(CONFIG)
    (root / "var/lib/gateagent").mkdir(parents=True, exist_ok=True)
    image = work / "disk.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(root), str(image), "2G"],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    kernel = Path(shutil.copy(next((root / "boot").glob("vmlinuz-*")), work / "vmlinuz"))
    initrd = Path(shutil.copy(next((root / "boot").glob("initrd.img-*")), work / "initrd.img"))
    shutil.rmtree(root)
    if checkout is None:
        shutil.rmtree(source)
    return image, kernel, initrd, what


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--window", type=float, default=30.0, help="cut within this many s of the launch"
    )
    parser.add_argument("--rev", default="HEAD", help="the commit installed in the VM")
    parser.add_argument(
        "--source",
        type=Path,
        help="install this checkout instead of --rev (`.` for the working tree)",
    )
    parser.add_argument("--cache", choices=("none", "directsync"), default="none")
    parser.add_argument("--accel", default="tcg", help="tcg, or kvm where it works")
    parser.add_argument("--work", type=Path, help="folder for the image and the logs")
    args = parser.parse_args()
    reason = tools_missing(
        "qemu-system-x86_64", "debootstrap", "mkfs.ext4",
        packages=("qemu-system-x86", "debootstrap", "e2fsprogs"),
    )  # fmt: skip
    if reason:
        print(f"power_cut: {reason}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    # Not /tmp: cache=none opens the image with O_DIRECT, which tmpfs refuses.
    work = args.work or Path(tempfile.mkdtemp(prefix="gateagent-power-cut-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    image, kernel, initrd, installed = build(work, args.rev, args.source)
    built_s = time.monotonic() - began
    print(f"machine: {machine()}")
    print(f"VM: {installed}, -accel {args.accel}, cache={args.cache}; image and logs in {work}")

    def qemu(mode: str, number: int) -> list[str]:
        append = (
            "root=/dev/vda rw console=ttyS0 init=/opt/init.sh quiet panic=-1"
            f" gateagent.mode={mode} gateagent.cycle={number} gateagent.seed={args.seed}"
        )
        return [
            "qemu-system-x86_64", "-accel", args.accel, "-smp", "2", "-m", "1024",
            "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", append,
            "-drive", f"file={image},format=raw,if=virtio,cache={args.cache}",
        ]  # fmt: skip

    cycles: list[Cycle] = []
    findings = Findings()
    boots_s: list[float] = []
    print(
        f"{'cycle':>5} {'cut s':>6} {'started s':>9} {'recorded':>8} {'found':>6} "
        f"{'lost':>5} {'unlogged':>8} {'delivered':>9} {'db rows':>7} {'db delivered':>12}"
    )
    for number in range(args.cycles + 1):
        last = number == args.cycles
        label = "final check" if last else f"cycle {number}"
        boot = Boot(qemu("check" if last else "run", number), work / f"boot-{number:03d}.log")
        word = "DUMP END" if last else "DAEMON LAUNCHED"
        launched = boot.wait_for(word, BOOT_TIMEOUT_S)
        if launched is None:
            boot.cut()
            tail = "\n".join(text for _, text in boot.lines[-40:])
            findings.problems.append(f"{label}: no {word!r} within {BOOT_TIMEOUT_S} s")
            print(f"{label}: the VM did not get to {word!r}; its console:\n{tail}")
            break
        boots_s.append(launched - boot.started)
        db = read_dump(boot, label, findings)
        if db is not None:
            check(db, cycles, findings)
            if cycles:
                previous = cycles[-1]
                states = db.get(previous.number, {})
                previous.found = len(previous.recorded & states.keys())
                previous.unlogged = len(states.keys() - previous.recorded)
                print(
                    f"{previous.number:>5} {previous.cut_s:>6.1f} "
                    f"{'-' if previous.started_s is None else f'{previous.started_s:.1f}':>9} "
                    f"{len(previous.recorded):>8} {previous.found:>6} "
                    f"{len(previous.recorded) - previous.found:>5} {previous.unlogged:>8} "
                    f"{len(previous.delivered):>9} {sum(map(len, db.values())):>7} "
                    f"{sum(s == 'delivered' for c in db.values() for s in c.values()):>12}",
                    flush=True,
                )
        if last:
            boot.cut()
            findings.scan(boot, label)
            break
        cycle = Cycle(number)
        delay_s = rng.uniform(0.0, args.window)
        time.sleep(max(0.0, launched + delay_s - time.monotonic()))  # the random moment
        cycle.cut_s = boot.cut() - launched
        for at, text in boot.lines:
            if match := RECORDED.search(text):
                if int(match[1]) != number:
                    findings.problems.append(f"{label}: a tap of another cycle: {text}")
                cycle.recorded.add(int(match[2]))
            elif match := DELIVERED.search(text):
                cycle.delivered.add((int(match[1]), int(match[2])))
            elif "gateagent started" in text and cycle.started_s is None:
                cycle.started_s = at - launched
        findings.scan(boot, label)
        cycles.append(cycle)

    image.unlink(missing_ok=True)
    recorded = sum(len(cycle.recorded) for cycle in cycles)
    found = sum(cycle.found for cycle in cycles)
    delivered = sum(len(cycle.delivered) for cycle in cycles)
    before_start = sum(cycle.started_s is None for cycle in cycles)
    print(
        f"{len(cycles)} power cuts ({before_start} before `gateagent started`) in "
        f"{time.monotonic() - began - built_s:.0f} s (build {built_s:.0f} s); "
        f"boot to launch median {sorted(boots_s)[len(boots_s) // 2] if boots_s else 0:.1f} s"
    )
    print(
        f"taps logged as recorded {recorded}, found after the cut {found}, "
        f"lost {len(findings.lost)}; in the database but cut before their line left "
        f"{sum(cycle.unlogged for cycle in cycles)}"
    )
    print(
        f"logged as delivered {delivered}, no longer delivered {len(findings.regressed)}; "
        f"gaps {len(findings.gaps)}"
    )
    for problem in findings.problems:
        print(f"  problem: {problem}")
    for note in findings.notes[:20]:
        print(f"  note: {note}")
    for name, taps in (
        ("lost", findings.lost), ("regressed", findings.regressed), ("gaps", findings.gaps)
    ):  # fmt: skip
        if taps:
            print(f"  {name}: " + ", ".join(f"{c:04d}{s:06d}" for c, s in sorted(taps)[:20]))
    failed = bool(findings.lost or findings.regressed or findings.gaps or findings.problems)
    print("RESULT", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
