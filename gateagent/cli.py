"""The `gateagent` command (SPEC "Command line").

Each subcommand is a function taking the parsed arguments and returning an exit status.
This module alone turns errors into a message and a status: 0 success, 1 runtime
failure, 2 bad usage or bad configuration, never a traceback for an expected error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gateagent import __version__, config
from gateagent.errors import ConfigError, GateagentError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


def _check(args: argparse.Namespace) -> int:
    path = config.config_path(args.config)
    loaded = config.load(path)
    readers = ", ".join(f"{reader.name} ({reader.kind})" for reader in loaded.readers)
    print(f"OK    config {path}: profile {loaded.uplink.profile}, readers {readers}")
    return EXIT_OK


def _planned(what: str) -> Command:
    def command(args: argparse.Namespace) -> int:
        print(f"gateagent {args.command}: {what}", file=sys.stderr)
        print(
            'This release does not have it yet; see README.md, "Status of the work".',
            file=sys.stderr,
        )
        return EXIT_FAILURE

    return command


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
        _planned("the daemon: readers -> SQLite -> uploader"),
    )
    run.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)

    add(
        "demo",
        "Run the daemon on an embedded default: a local endpoint simulator and scripted taps.",
        "gateagent demo",
        _planned(
            "will start the endpoint simulator on 127.0.0.1, a temporary database and "
            "scripted taps (check-ins, a check-out, an unknown card, a bounce, a short "
            "outage), and show them flowing to the simulator"
        ),
    )

    status = add(
        "status",
        "Show the queue and health, read from the database.",
        "gateagent status --json",
        _planned("queue and health from the database"),
    )
    status.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    add(
        "readers",
        "List input devices and serial ports that look like card readers.",
        "gateagent readers",
        _planned("the input devices and serial ports that look like readers"),
    )

    listen = add(
        "listen",
        "Print cards as they are read, in every card_format; records and sends nothing.",
        "gateagent listen --config /etc/gateagent/config.toml",
        _planned("print each card read, in every card_format"),
    )
    listen.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)

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
        _planned("send rejected taps again"),
    )
    requeue.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)

    export = add(
        "export",
        "Write taps as CSV.",
        "gateagent export --state rejected > rejected.csv",
        _planned("taps as CSV"),
    )
    export.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"gateagent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GateagentError as exc:
        print(f"gateagent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
