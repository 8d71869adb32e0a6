"""The quick start on a bare Debian 12 (issue 13): a fresh clone runs `./dev demo` to the
end and `./dev test` to a green summary in a root that has nothing but what debootstrap's
minbase variant brings and python3, python3-venv, git and ca-certificates.

    python3 tests/system/bare_root.py [--user] [--apt-online] [--demo-only] [--keep]
                                      [-- ./dev test's arguments]

Run by hand as root, with the machine's python3 (the standard library only), on a
machine with debootstrap and systemd-nspawn; not collected by pytest, since it runs the
whole suite inside (README "Tests" has its cost and its last result). The root is made
once with debootstrap and cached in FOLDER/bookworm-minbase (its packages in
FOLDER/debs; FOLDER is GATEAGENT_BARE_ROOT, default /var/tmp/bareroot); each run works
on a fresh copy, FOLDER/run, with a clone of this checkout's HEAD (committed work only)
and no pip cache, and removes it at the end unless --keep.

The commands run in `systemd-nspawn` as a plain shell (not booted), root's or, with
--user, an ordinary user's; the container shares the machine's network. Two things come
from the machine that runs it, not from the project:

- its trust: the machine's CA bundle is bound over the root's, so where the way to PyPI
  goes through an intercepting proxy with its own CA, the root's pip gets through as the
  machine's own does. No pip configuration or PIP_* variable is passed in.
- apt: unless --apt-online, apt in the root is sent to a closed port, so the root is a
  machine whose apt cannot reach its mirror, and the tests that need Debian's packages
  (tests/debian.py) must skip with that reason, never fail.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SOURCE = Path(__file__).parents[2]
FOLDER = Path(os.environ.get("GATEAGENT_BARE_ROOT", "/var/tmp/bareroot"))
PACKAGES = "python3,python3-venv,git,ca-certificates"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
USER = "gate"
# Port 9 (discard) on the loopback: nothing listens, so every fetch is refused at once.
APT_OFFLINE = (
    'Acquire::http::Proxy "http://127.0.0.1:9/";\nAcquire::https::Proxy "http://127.0.0.1:9/";\n'
)

# A first `./dev` installs from PyPI before the demo's first line.
INSTALL_S = 900
# From the demo's first line to the end of its script: about 16 s of taps, then the
# retried tap's backoff.
DEMO_S = 120
STOP_S = 30
TEST_S = 3600
# The demo's script has ended: its last taps are delivered and it says so.
DEMO_END = (
    "tap delivered card_no=2430030533 checktype=1",
    "tap delivered card_no=0012822001 checktype=2",
    "demo: script done",
)
# What the demo warns of by design: the unknown card, the server's outage.
DEMO_WARNINGS = ("WARNING tap rejected card_no=0099999999 ", "WARNING uplink retrying: ")
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d ")
SUMMARY = re.compile(r"^=*\s*(\d+ \w+(, )?)+.* in [\d.]+s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", action="store_true", help="run as an ordinary user, not root")
    parser.add_argument("--apt-online", action="store_true", help="leave apt its mirror")
    parser.add_argument("--demo-only", action="store_true", help="skip ./dev test")
    parser.add_argument("--keep", action="store_true", help=f"keep {FOLDER}/run afterwards")
    parser.add_argument("test_args", nargs="*", help="passed to ./dev test (after --)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (debootstrap, systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "git"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} on this machine")

    took: dict[str, float] = {}
    problems: list[str] = []
    skips: list[str] = []
    summary = "not run"
    base = base_root(took)
    with timed(took, "copy of the root"):
        run = fresh_copy(base)
    try:
        with timed(took, "clone"):
            home = prepare(run, user=args.user, apt_online=args.apt_online)
        machine = Machine(run, home, user=args.user)
        problems += demo(machine, took)
        if not args.demo_only and not problems:
            summary, skips, failed = test(machine, args.test_args, took)
            problems += failed
    finally:
        if not args.keep:
            with timed(took, "removal of the copy"):
                shutil.rmtree(run, ignore_errors=True)

    who = USER if args.user else "root"
    print(f"\nbare root, as {who}, apt {'online' if args.apt_online else 'offline'}:")
    for step, seconds in took.items():
        print(f"  {step}: {seconds:.0f} s")
    print(f"  ./dev test: {summary}")
    for skip in skips:
        print(f"  {skip}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


@contextmanager
def timed(took: dict[str, float], step: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    took[step] = time.monotonic() - start


def base_root(took: dict[str, float]) -> Path:
    """The bare Debian 12, made by debootstrap the first time (a crash leaves no half)."""
    done = FOLDER / "bookworm-minbase"
    if done.exists():
        return done
    partial = done.with_name(f"{done.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (FOLDER / "debs").mkdir(parents=True, exist_ok=True)
    print(f"debootstrap: a bare Debian 12 in {done} (a few minutes the first time)")
    with timed(took, "debootstrap"):
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}",
             f"--cache-dir={FOLDER / 'debs'}", "bookworm", str(partial)],
            check=True, capture_output=True, timeout=1800,
        )  # fmt: skip
    partial.rename(done)
    return done


def fresh_copy(base: Path) -> Path:
    run = FOLDER / "run"
    shutil.rmtree(run, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(run)], check=True, timeout=600)
    return run


def prepare(run: Path, user: bool, apt_online: bool) -> str:
    """A clone of this checkout's HEAD in the root; the checkout's home inside it."""
    if not apt_online:
        (run / "etc/apt/apt.conf.d/99bare-root-offline").write_text(APT_OFFLINE)
    home = "/root"
    if user:
        subprocess.run(["chroot", str(run), "useradd", "--create-home", USER], check=True)
        home = f"/home/{USER}"
    git = ["git", "-C", str(SOURCE)]
    dirty = subprocess.run(
        [*git, "status", "--porcelain"], capture_output=True, text=True, check=True
    )
    if dirty.stdout.strip():
        print("note: the clone has the committed HEAD only, not the uncommitted changes")
    branch = subprocess.run(
        [*git, "symbolic-ref", "--short", "-q", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    clone = run / home.lstrip("/") / "gateagent"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", *(["--branch", branch] if branch else []),
         str(SOURCE), str(clone)],
        check=True, timeout=300,
    )  # fmt: skip
    if user:
        subprocess.run(
            ["chroot", str(run), "chown", "-R", f"{USER}:", f"{home}/gateagent"], check=True
        )
    return home


class Machine:
    """The root as systemd-nspawn runs it: a login shell in the clone."""

    def __init__(self, run: Path, home: str, user: bool) -> None:
        self.run = run
        self.home = home
        self.user = user

    def shell(self, command: str) -> subprocess.Popen[str]:
        binds = [f"--bind-ro={HOST_CA}"] if HOST_CA.exists() else []
        users = [f"--user={USER}"] if self.user else []
        return subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe",
             f"--directory={self.run}", *binds, *users, f"--chdir={self.home}/gateagent",
             "bash", "-lc", f"exec {command} 2>&1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip


def demo(machine: Machine, took: dict[str, float]) -> list[str]:
    """`./dev demo` from a fresh clone to the end of its script, then Ctrl-C."""
    start = time.monotonic()
    process = machine.shell("./dev demo")
    lines = _lines(process)
    seen: list[str] = []
    waiting = set(DEMO_END)
    problems: list[str] = []
    try:
        first = _next(lines, INSTALL_S)
        if first is None:
            return [f"./dev demo printed nothing in {INSTALL_S} s{_said(process)}"]
        took["install (first ./dev demo, until its first line)"] = time.monotonic() - start
        started = time.monotonic()
        line: str | None = first
        while line is not None and waiting:
            seen.append(line)
            waiting -= {end for end in waiting if end in line}
            line = _next(lines, DEMO_S - (time.monotonic() - started)) if waiting else None
        if waiting:
            problems.append(f"the demo did not reach {sorted(waiting)} in {DEMO_S} s")
        took["demo (first line to the script's end)"] = time.monotonic() - started
        demo_pid = _demo_process(process.pid)
        if demo_pid is None:
            problems.append("no gateagent demo process to stop")
        else:
            os.kill(demo_pid, signal.SIGINT)  # what Ctrl-C on its terminal sends
        while (line := _next(lines, STOP_S)) is not None:
            seen.append(line)
        status = process.wait(STOP_S)
        if status != 0:
            problems.append(f"./dev demo exited with {status} after Ctrl-C{_said(process)}")
    finally:
        process.kill()
        process.wait()
    if not any("gateagent stopped pending=0" in line for line in seen):
        problems.append("the demo did not stop with every tap delivered")
    problems += [f"./dev demo printed: {line}" for line in _unexpected(seen)]
    print("\n".join(seen))
    return problems


def _unexpected(seen: list[str]) -> list[str]:
    """Lines a quiet install and the demo must not print: anything but gateagent's log
    lines (pip's or Python's warnings, a traceback), and warnings the demo does not
    stage."""
    found = []
    for line in seen:
        text = LOG_LINE.sub("", line, count=1)
        if text == line or (
            text.startswith(("WARNING", "ERROR", "CRITICAL")) and not text.startswith(DEMO_WARNINGS)
        ):
            found.append(line)
    return found


def test(
    machine: Machine, test_args: list[str], took: dict[str, float]
) -> tuple[str, list[str], list[str]]:
    """`./dev test` in the clone: its summary, its skips, and what went wrong."""
    log = FOLDER / "test.log"
    start = time.monotonic()
    process = machine.shell(shlex.join(["./dev", "test", *test_args]))
    lines = _lines(process)
    seen: list[str] = []
    try:
        with log.open("w") as written:
            while (line := _next(lines, TEST_S - (time.monotonic() - start))) is not None:
                print(line, flush=True)
                written.write(line + "\n")
                seen.append(line)
        status = process.wait(STOP_S)
    finally:
        process.kill()
        process.wait()
    took["./dev test"] = time.monotonic() - start
    summaries = [line for line in seen if SUMMARY.match(line)]
    summary = summaries[-1].strip("= ") if summaries else "no summary"
    skips = [line for line in seen if line.startswith("SKIPPED ")]
    problems = []
    if status != 0:
        problems.append(f"./dev test exited with {status}: {summary} (all of it in {log})")
    if re.search(r"\b(failed|errors?|warnings?)\b", summary):
        problems.append(f"./dev test: {summary}")
    # The venv is installed by the demo before: ruff's line comes first.
    if seen and seen[0] != "All checks passed!":
        problems.append(f"./dev test began with {seen[0]!r}, not ruff's line")
    return summary, skips, problems


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's output lines as they come; None at its end."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.put(line.rstrip("\n"))
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    return found


def _next(lines: queue.Queue[str | None], timeout_s: float) -> str | None:
    try:
        return lines.get(timeout=max(timeout_s, 0))
    except queue.Empty:
        return None


def _said(process: subprocess.Popen[str]) -> str:
    """What systemd-nspawn itself said, if it ended."""
    if process.poll() is None or process.stderr is None:
        return ""
    said = process.stderr.read().strip()
    return f"; systemd-nspawn said: {said[-1000:]}" if said else ""


def _demo_process(nspawn: int) -> int | None:
    """The `gateagent demo` process under systemd-nspawn, as this machine numbers it."""
    waiting = [nspawn]
    while waiting:
        pid = waiting.pop()
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        if any(arg.endswith(b"/bin/gateagent") for arg in argv) and b"demo" in argv:
            return pid
        for task in tasks:
            try:
                waiting += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return None


if __name__ == "__main__":
    sys.exit(main())
