"""The `gateagent` command (SPEC "Command line").

Each subcommand is a function taking the parsed arguments and returning an exit status.
This module alone turns errors into a message and a status: 0 success, 1 runtime
failure, 2 bad usage or bad configuration, never a traceback for an expected error.

A subcommand imports what it needs when it runs: `status` answers in milliseconds
without loading pydantic, httpx, evdev or the simulator, and an idle daemon does not
hold the modules of `demo`, `check` and `listen` in memory (benchmarks/bigdb.py, idle.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from gateagent import __version__, configfile
from gateagent.core.localtime import local_time
from gateagent.errors import ConfigError, GateagentError
from gateagent.store import EXPORT_COLUMNS, STATES, Store, parse_iso

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


class UsageError(GateagentError):
    """A command-line value that cannot be used; exit status 2."""


def _check(args: argparse.Namespace) -> int:
    from gateagent import check, config
    from gateagent.clock import SystemClock

    path = configfile.config_path(args.config)
    settings = config.load(path)
    passed = True
    for result in check.run_checks(settings, path, SystemClock(), check.probe_reader):
        print(result.line(), flush=True)
        passed = passed and result.ok
    return EXIT_OK if passed else EXIT_FAILURE


def _run(args: argparse.Namespace) -> int:
    from gateagent import config, logs
    from gateagent.clock import SystemClock
    from gateagent.daemon import Daemon
    from gateagent.notify import Notifier

    path = configfile.config_path(args.config)
    settings = config.load(path)
    logs.setup(tz=settings.device.tz)
    return Daemon(path, settings, SystemClock(), notifier=Notifier.from_environ()).run()


def _open_store(args: argparse.Namespace) -> Store:
    path = configfile.storage_path(configfile.config_path(args.config))
    _become_owner(path.parent)
    return Store.open_for_reading(path)


def _become_owner(folder: Path) -> None:
    """`sudo gateagent status` must not leave root-owned -wal/-shm files that the
    daemon (user gateagent) could then not open: act as the database's owner."""
    if os.geteuid() != 0:
        return
    try:
        owner = folder.stat()
    except OSError:
        return
    if owner.st_uid != 0:
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)


def _status(args: argparse.Namespace) -> int:
    from gateagent import status

    store = _open_store(args)
    try:
        facts = status.collect(store, datetime.now(UTC))
    finally:
        store.close()
    print(json.dumps(facts) if args.json else status.render(facts))
    return EXIT_OK


# `local_time` beside `tapped_at` (UTC): the tap's time as the gate's people read it.
CSV_COLUMNS = (
    *EXPORT_COLUMNS[: EXPORT_COLUMNS.index("tapped_at") + 1],
    "local_time",
    *EXPORT_COLUMNS[EXPORT_COLUMNS.index("tapped_at") + 1 :],
)
_DURATION = re.compile(r"(\d+)\s*(m|h|d)")
_DURATION_S = {"m": 60, "h": 3600, "d": 86400}


def _moment(text: str, tz: tzinfo, now: datetime, option: str) -> datetime:
    """`--since`/`--until`: a time ("2026-12-01", "2026-12-01 07:15", with or without
    an offset; without one in the gate's zone) or an age ("90m", "1h", "7d": so long ago)."""
    if match := _DURATION.fullmatch(text.strip()):
        return now - timedelta(seconds=int(match[1]) * _DURATION_S[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f'{option} "{text}": not a time ("2026-12-01", "2026-12-01 07:15", '
            '"2026-12-01T00:15:00Z") or an age ("90m", "1h", "7d")'
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def _export(args: argparse.Namespace) -> int:
    where = configfile.config_path(args.config)
    data = configfile.read_toml(where)
    tz = configfile.device_timezone(where, data=data)
    # A tap of a reader without its own gate goes to [uplink] gate: that is its gate.
    default_gate = configfile.uplink_gate(where, data=data)
    now = datetime.now(UTC)
    since = _moment(args.since, tz, now, "--since") if args.since else None
    until = _moment(args.until, tz, now, "--until") if args.until else None
    store = _open_store(args)
    try:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()  # also when no tap matches: a script reads the columns
        rows = store.export(
            args.state or STATES, since=since, until=until, card_no=args.card, last=args.last
        )
        for row in rows:
            if row["gate"] is None:
                row["gate"] = default_gate
            row["local_time"] = local_time(parse_iso(row["tapped_at"]), tz)
            writer.writerow(row)
    finally:
        store.close()
    return EXIT_OK


def _requeue(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        count = store.requeue(
            states=("held",) if args.held else ("rejected",),
            reason=args.reason,
            card_no=args.card,
            drop=args.drop,
        )
    finally:
        store.close()
    what = "dropped" if args.drop else "queued to be sent again"
    print(f"{count} tap{'s' if count != 1 else ''} {what}")
    return EXIT_OK


def _listen(args: argparse.Namespace) -> int:
    from gateagent import config, listen, logs
    from gateagent.core.cards import CardFormat

    card_format: CardFormat = "as-read"
    reverse_bytes = args.reverse_bytes
    where = configfile.config_path(args.config)
    tz: tzinfo | None = None
    if args.path:
        kind = args.kind or ("hid" if args.path.startswith("/dev/input") else "serial")
        # Named after its device (e.g. event7, usb-FTDI_...-port0): the lines say which
        # reader read a card when several are tried one after another
        # (/dev/pts/3 is itself).
        name = Path(args.path).name
        name = args.path if name.isdigit() or not name else name
        given = {"name": name, "kind": kind, "path": args.path}
        given.update(baudrate=args.baudrate, protocol=args.protocol)
        readers = [config.reader(given, "gateagent listen")]
        # The gate's zone when there is a configuration already, else this machine's.
        if os.path.exists(where):
            tz = configfile.device_timezone(where)
    else:
        # Only what reading needs: listen sends nothing, so [uplink] may be incomplete.
        settings = config.load_readers(where)
        tz = settings.device.tz
        card_format = settings.taps.card_format
        reverse_bytes = reverse_bytes or settings.taps.reverse_bytes
        readers = [r for r in settings.readers if args.reader in (None, r.name)]
        if not readers:
            names = ", ".join(r.name for r in settings.readers)
            print(
                f"gateagent: no reader named {args.reader!r} (configured: {names})", file=sys.stderr
            )
            return EXIT_USAGE
    logs.setup(tz=tz)
    local = datetime.now().astimezone().tzinfo
    assert local is not None  # astimezone() always gives a zone
    if args.feedback and args.path:
        print("gateagent: --feedback needs the configuration, not --path", file=sys.stderr)
        return EXIT_USAGE
    sound = None
    if args.feedback:
        from gateagent.feedback import Feedback

        sound = Feedback(settings)
        sound.start()
    try:
        return listen.listen(readers, card_format, reverse_bytes, tz or local, feedback=sound)
    finally:
        if sound is not None:
            sound.close()


def _demo(args: argparse.Namespace) -> int:
    from gateagent import demo

    return demo.main()


def _readers(args: argparse.Namespace) -> int:
    from gateagent.readers import discover

    return discover.main()


_CONFIG_HELP = (
    "the configuration file (default: $GATEAGENT_CONFIG, else /etc/gateagent/config.toml)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateagent",
        description="The edge daemon at an RFID attendance gate: reads card taps, records "
        "them durably in SQLite and delivers them to the attendance server.",
        epilog="Example: gateagent check --config /etc/gateagent/config.toml",
    )
    parser.add_argument("--version", action="version", version=f"gateagent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str, example: str, handler: Command) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary, epilog=f"Example: {example}"
        )
        sub.set_defaults(handler=handler)
        return sub

    run = add(
        "run",
        "Run the daemon in the foreground (systemd runs this).",
        "gateagent run --config /etc/gateagent/config.toml",
        _run,
    )
    run.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)

    add(
        "demo",
        "Run the daemon on an embedded default: a local endpoint simulator and scripted taps.",
        "gateagent demo",
        _demo,
    )

    status = add(
        "status",
        "Show the queue and health, read from the database.",
        "gateagent status --json",
        _status,
    )
    status.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    add(
        "readers",
        "List input devices and serial ports that look like card readers.",
        "gateagent readers",
        _readers,
    )

    listening = add(
        "listen",
        "Print cards as they are read, in every card_format; records and sends nothing.",
        "gateagent listen --config /etc/gateagent/config.toml",
        _listen,
    )
    listening.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    listening.add_argument("--reader", metavar="NAME", help="only this configured reader")
    listening.add_argument(
        "--path", help="a reader not in the configuration yet, e.g. /dev/serial/by-id/usb-..."
    )
    listening.add_argument(
        "--kind", choices=("hid", "serial"), help="with --path (default: by path)"
    )
    listening.add_argument(
        "--protocol", choices=("rdm6300", "lines"), default="rdm6300", help="with --path, serial"
    )
    listening.add_argument("--baudrate", type=int, default=9600, help="with --path, serial")
    listening.add_argument(
        "--reverse-bytes", action="store_true", help="show the byte-reversed numbers too"
    )
    listening.add_argument(
        "--feedback",
        action="store_true",
        help="sound each read on the [feedback] outputs (recorded or unreadable)",
    )

    check = add(
        "check",
        "Validate the configuration, open the readers and reach the server.",
        "gateagent check --config /etc/gateagent/config.toml",
        _check,
    )
    check.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)

    requeue = add(
        "requeue",
        "Send rejected (or held) taps again, after a fix on the server.",
        "gateagent requeue --reason unknown-card",
        _requeue,
    )
    requeue.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    requeue.add_argument("--reason", help="only taps rejected for this reason (e.g. unknown-card)")
    requeue.add_argument("--card", metavar="CARD_NO", help="only taps of this card")
    requeue.add_argument(
        "--held",
        action="store_true",
        help="held taps of an earlier boot (reason clock-unknown) instead of rejected ones",
    )
    requeue.add_argument(
        "--drop", action="store_true", help="settle them as rejected (reason dropped) instead"
    )

    export = add(
        "export",
        "Write taps as CSV.",
        "gateagent export --card 0012822001 --since 7d; gateagent export --last 20",
        _export,
    )
    export.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    export.add_argument(
        "--state",
        action="append",
        choices=STATES,
        help="only taps in this state (repeatable; default: all)",
    )
    export.add_argument(
        "--since",
        metavar="TIME",
        help='only taps at or after TIME: "2026-12-01", "2026-12-01 07:00" (the gate\'s zone'
        ' unless an offset is given), or an age such as "1h", "90m", "7d"',
    )
    export.add_argument("--until", metavar="TIME", help="only taps before TIME (as --since)")
    export.add_argument("--card", metavar="CARD_NO", help="only taps of this card")
    export.add_argument(
        "--last", metavar="N", type=_count, help="only the newest N of the matching taps"
    )
    return parser


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of taps")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # here, so a closed pipe is caught below, not at exit
        return code
    except BrokenPipeError:
        # Whoever read our output stopped (`gateagent export | head`): not our failure.
        # Python would try to flush stdout again at exit and print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (ConfigError, UsageError) as exc:
        print(f"gateagent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GateagentError as exc:
        print(f"gateagent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
