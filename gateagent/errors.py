"""The exception tree of gateagent.

    GateagentError
     +-- ConfigError(path, key, reason)   a configuration that cannot run; exit status 2
     +-- ReaderError                      a reader that cannot be opened or read
     +-- StoreError                       the tap database cannot be used
     |    +-- DiskFull                    SQLITE_FULL: keep the tap in memory and retry
     +-- UplinkError                      the attendance server cannot be used

Expected bad input is not an exception: garbage from a reader comes back from the
decoders as `Garbage`, and a server's "no" as an `Outcome` (see `gateagent.core`).
Only `cli.py` turns these exceptions into a message and an exit status.
"""

import re


class GateagentError(Exception):
    """Base of every error gateagent raises on purpose."""


# C0 and C1 control characters, DEL among them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ConfigError(GateagentError):
    """The configuration file (or an environment override) is not usable.

    `key` names the section and key as a technician reads them in the file, for
    example `[uplink] flush_interval` or `[[readers]] #2 (exit) path`.
    """

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}: " if key else f"{path}: "
        # One line (README "Configuration"): a key or value quoted from the file may hold
        # a newline or a terminal escape, so control characters are shown escaped.
        super().__init__(_CONTROL.sub(lambda match: repr(match[0])[1:-1], where + reason))


class ReaderError(GateagentError):
    """A reader could not be opened or read."""


class StoreError(GateagentError):
    """The tap database could not be opened or written."""


class DiskFull(StoreError):
    """The disk holding the tap database is full (SQLITE_FULL)."""


class UplinkError(GateagentError):
    """The attendance server could not be used."""
