"""Bad input for the decoders and the config loader: generators and the invariants they
must keep (issue 7, "Bad input"). Not part of the package.

`tests/test_fuzz.py` runs these with hypothesis' default number of examples;
`benchmarks/fuzz_soak.py` runs the same strategies and checks with 100,000 each.

The invariants:

- a decoder never raises, whatever bytes or key events it is fed, in whatever pieces;
- a `Frame` holds only what was really sent (rdm6300: with a good checksum);
- every frame, in every `card_format` with and without `reverse_bytes`, normalizes to a
  card number that SPEC "Card numbers" calls plausible, or to `InvalidCard` (the
  recorder drops those): an invalid card number never becomes a tap;
- the config loader returns a `Config` or raises `ConfigError`, whose message is one
  line naming the file and never shows the token.

The checks count what they saw into a `Counter`, for the soak's figures.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from datetime import UTC, date, datetime, time
from functools import reduce
from itertools import pairwise
from operator import xor
from pathlib import Path
from typing import Any, Literal, get_args

from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from gateagent import config
from gateagent.core import keys
from gateagent.core.cards import CARD_FORMATS, InvalidCard, normalize
from gateagent.core.frames import Frame, Garbage, decoder_for
from gateagent.core.keys import KeyDecoder
from gateagent.errors import ConfigError

# -- card numbers ------------------------------------------------------------------------

# SPEC "Card numbers", read directly rather than through cards.py: 1 to 32 characters of
# 0-9A-Za-z and ",", not an all-zero ID.
PLAUSIBLE_CARD_NO = re.compile(r"[0-9A-Za-z,]{1,32}")
INVALID_REASONS = frozenset({"empty", "too-long", "bad-characters", "not-hex", "all-zero"})


def check_card(raw: str, tally: Counter[str]) -> None:
    """`raw` as the recorder would take it, in every format: a plausible card_no or
    InvalidCard, never anything else."""
    for card_format in CARD_FORMATS:
        for reverse_bytes in (False, True):
            card_no = normalize(raw, card_format, reverse_bytes)
            if isinstance(card_no, InvalidCard):
                assert card_no.reason in INVALID_REASONS, card_no
                tally["rejected"] += 1
            else:
                assert PLAUSIBLE_CARD_NO.fullmatch(card_no), (raw, card_format, card_no)
                assert set(card_no) - {"0", ","}, (raw, card_format, card_no)
                tally["card numbers"] += 1


# -- serial frames -----------------------------------------------------------------------

STX, ETX = b"\x02", b"\x03"
Protocol = Literal["rdm6300", "lines"]


def rdm(data: bytes, *, crlf: bool = False, lower: bool = False, flip: int = 0) -> bytes:
    """An RDM6300 frame of 5 data bytes; `flip` spoils the XOR checksum."""
    text = data.hex() if lower else data.hex().upper()
    checksum = f"{reduce(xor, data, 0) ^ flip:02x}"
    body = text + (checksum if lower else checksum.upper())
    return STX + body.encode() + (b"\r\n" if crlf else b"") + ETX


def _spoiled(frame: bytes, index: int, byte: int) -> bytes:
    """One byte of a frame replaced: the near misses a noisy line produces."""
    index %= len(frame)
    return frame[:index] + bytes([byte]) + frame[index + 1 :]


_card_bytes = st.binary(min_size=5, max_size=5)
_rdm_frames = st.builds(rdm, _card_bytes, crlf=st.booleans(), lower=st.booleans())
_rdm_pieces = st.one_of(
    st.binary(max_size=40),
    # Good frames, which random bytes never produce; a held card repeats its frame.
    _rdm_frames,
    st.lists(_rdm_frames, min_size=2, max_size=4).map(b"".join),
    st.builds(rdm, _card_bytes, crlf=st.booleans(), flip=st.integers(1, 255)),
    st.builds(rdm, st.sampled_from([b"\0" * 5, b"\xff" * 5]), crlf=st.booleans()),
    st.builds(_spoiled, _rdm_frames, st.integers(0, 16), st.integers(0, 255)),
    st.binary(max_size=18).map(lambda body: STX + body + ETX),
    # The bytes the decoder decides on, densely.
    st.lists(st.sampled_from(b"\x02\x03\r\n0aF9 "), max_size=30).map(bytes),
)
_line_ends = st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r"])
_card_text = st.one_of(
    st.text(alphabet="0123456789ABCDEFabcdef", max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(max_size=20),  # any Unicode, UTF-8 encoded: not ASCII, so not a card
)
_lines = st.builds(lambda text, end: text.encode() + end, _card_text, _line_ends)
_line_pieces = st.one_of(
    st.binary(max_size=40),
    _lines,
    st.lists(_lines, min_size=2, max_size=4).map(b"".join),
    st.binary(min_size=60, max_size=140),  # around MAX_LINE
    st.lists(st.sampled_from(b"\r\n\t 0A\x00\x7f\xff"), max_size=30).map(bytes),
)


@st.composite
def serial_input(draw: st.DrawFn, protocol: Protocol) -> list[bytes]:
    """A stream of the protocol's pieces, cut into the chunks the port returns."""
    pieces = _rdm_pieces if protocol == "rdm6300" else _line_pieces
    data = b"".join(draw(st.lists(pieces, max_size=12)))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=8))
    bounds = [0, *sorted(cuts), len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


def check_serial(protocol: Protocol, chunks: list[bytes], tally: Counter[str]) -> None:
    decoder = decoder_for(protocol)
    data = b"".join(chunks)
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, Garbage):
                tally["garbage"] += 1
                continue
            assert isinstance(item, Frame), item
            tally["frames"] += 1
            if protocol == "rdm6300":
                _check_rdm_frame(item.raw, data)
            else:
                _check_line(item.raw, data)
            check_card(item.raw, tally)


def _check_rdm_frame(raw: str, data: bytes) -> None:
    assert re.fullmatch(r"[0-9A-F]{10}", raw), raw
    values = bytes.fromhex(raw)
    assert any(values), raw
    sent = STX + f"{raw}{reduce(xor, values):02X}".encode()
    assert re.search(re.escape(sent) + rb"(\r\n)?\x03", data.upper()), (raw, data)


def _check_line(raw: str, data: bytes) -> None:
    assert raw, raw
    assert raw == raw.strip(), raw
    assert all(" " <= char <= "~" for char in raw), raw
    assert raw.encode() in data, (raw, data)


# -- HID key events ----------------------------------------------------------------------

_CHAR_CODES = sorted(keys.CHARS)
_KEY_CODES = [*_CHAR_CODES, *keys.ENTERS, *keys.SHIFTS]
KEY_MAX = 0x2FF  # linux/input-event-codes.h
GAP_US = 200_000


@st.composite
def _typed_card(draw: st.DrawFn) -> list[tuple[int, int, int, bool]]:
    """A card typed as a wedge does (down and up per key, Enter last), perhaps slowly."""
    codes = draw(st.lists(st.sampled_from(_CHAR_CODES), max_size=keys.MAX_KEYS + 6))
    codes.append(draw(st.sampled_from(sorted(keys.ENTERS))))
    step_us = draw(st.sampled_from([2_000, 8_000, GAP_US - 1, GAP_US + 1]))
    script = []
    for code in codes:
        script += [(code, keys.VALUE_DOWN, step_us, False), (code, keys.VALUE_UP, 0, False)]
    return script


_raw_event = st.tuples(
    st.one_of(st.sampled_from(_KEY_CODES), st.integers(0, KEY_MAX), st.integers()),
    st.one_of(st.sampled_from([keys.VALUE_UP, keys.VALUE_DOWN, keys.VALUE_REPEAT]), st.integers()),
    st.one_of(st.integers(0, 2 * GAP_US), st.just(GAP_US), st.just(GAP_US + 1)),
    st.booleans(),  # the reader loop's read timed out before this event
)
key_scripts = st.lists(st.one_of(_typed_card(), st.lists(_raw_event, max_size=20)), max_size=8).map(
    lambda parts: [event for part in parts for event in part]
)


def check_keys(script: list[tuple[int, int, int, bool]], tally: Counter[str]) -> None:
    """(keycode, value, microseconds since the previous event, timed out) as the HID
    reader loop passes them: `feed` per event, `expire` when a read timed out."""
    decoder = KeyDecoder()
    at_us = 1_700_000_000_000_000
    for code, value, delta_us, timed_out in script:
        at_us += delta_us
        results = [decoder.feed(code, value, at_us / 1e6)]
        if timed_out:
            results.insert(0, decoder.expire(at_us / 1e6))
        for item in results:
            if item is None:
                continue
            if isinstance(item, Garbage):
                tally["garbage"] += 1
                continue
            assert isinstance(item, Frame), item
            assert re.fullmatch(f"[0-9A-F]{{1,{keys.MAX_KEYS}}}", item.raw), item
            tally["frames"] += 1
            check_card(item.raw, tally)


# -- configuration files -----------------------------------------------------------------

TOKEN = "fuzz-T0KEN-q8Zr2VxL5mNc7Wt"  # long and unlike any other value, so a leak shows
# token_file values name these files in the folder the check runs in, known only then.
FOLDER = "@FOLDER@"
TOKEN_FILES = {"token": TOKEN.encode(), "empty-token": b"\n", "latin1-token": b"\xe9t\xe9"}

_GOOD_READERS: list[dict[str, Any]] = [
    {"name": "entrance", "kind": "serial", "path": "/dev/serial0", "baudrate": 9600},
    {"name": "exit", "kind": "hid", "path": "/dev/input/event0", "direction": "out"},
    {"name": "desk", "kind": "stdin", "gate": 2},
]
_GOOD: dict[str, Any] = {
    "device": {"name": "gate-4", "timezone": "Asia/Jakarta", "require_clock_sync": True},
    "storage": {"path": "/var/lib/gateagent/taps.db", "keep_sent": "30d", "keep_rejected": 90},
    "taps": {
        "debounce": "3s",
        "min_checkout_after": "10m",
        "card_format": "dec10",
        "reverse_bytes": False,
    },
    "readers": _GOOD_READERS,
    "uplink": {
        "profile": "integration",
        "url": "https://api.example.sch.id/api/v1/attendances/integration",
        "token": TOKEN,
        "token_file": f"{FOLDER}/token",
        "auth": "none",
        "gate": 4,
        "flush_interval": "30s",
        "concurrency": 4,
        "timeout": "10s",
        "webhook": {
            "url_out": "https://hr.example.com/out",
            "encoding": "json",
            "fields": {"rfid": "card_no", "at": "tapped_at"},
            "idempotency_header": "Idempotency-Key",
            "statuses": {"409": "duplicate", "5xx": "transient"},
        },
    },
}


def _key_paths(doc: dict[str, Any], prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths: list[tuple[Any, ...]] = []
    for key, value in doc.items():
        path = (*prefix, key)
        paths.append(path)
        if isinstance(value, dict):
            paths += _key_paths(value, path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                paths += _key_paths(item, (*path, index))
    return paths


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for candidate in (field.annotation, *get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= _field_names(candidate)
    return names


_PATHS = _key_paths(_GOOD)
# Every key of the model, and the keyword arguments pydantic-settings reads as its own
# options rather than as settings.
_NAMES = sorted(
    _field_names(config.Config)
    | {name for name in inspect.signature(BaseSettings.__init__).parameters if name != "values"}
)
_names = st.one_of(st.sampled_from(_NAMES), st.text(max_size=12))
_strings = st.one_of(
    st.text(max_size=24),
    st.sampled_from(
        [
            "", " ", "0", "-1", "1e999", "nan", "inf", "30s", "500ms", "-5s", "1 0s", "30x",
            "http://", "https://x", "ftp://x", "http://[::1", "Asia/Jakarta", "../..", "/",
            "UTC", "Europe/Nowhere", "stdin", "serial", "hid", "usb", "rdm6300", "lines",
            "auto", "in", "out", "as-read", "dec10", "hex", "absensi", "webhook", "bearer",
            "4xx", "409", "40", "card_no", "tapped_at", "duplicate", "\n", "\x1b[31m",
            f"{FOLDER}/token", f"{FOLDER}/empty-token", f"{FOLDER}/latin1-token",
            f"{FOLDER}/missing", FOLDER,
        ]
    ),
)  # fmt: skip
_scalars = st.one_of(
    _strings,
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.times(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A good document, then a few keys set to anything, removed, or added."""
    doc: dict[str, Any] = _copy(_GOOD)
    doc["uplink"]["profile"] = draw(st.sampled_from(["integration", "absensi", "webhook"]))
    readers = st.lists(
        st.sampled_from(_GOOD_READERS), min_size=1, max_size=3, unique_by=lambda r: r["name"]
    )
    doc["readers"] = _copy(draw(readers))
    uplink = doc["uplink"]
    uplink["auth"] = draw(st.sampled_from(["none", "bearer", "x-api-key"]))
    # The token from the file, a token file (which `token` would override), or neither.
    source = draw(st.sampled_from(["token", "token_file", "none"]))
    if source != "token":
        del uplink["token"]
    if source == "token_file":
        uplink["token_file"] = draw(st.sampled_from([f"{FOLDER}/{name}" for name in TOKEN_FILES]))
    else:
        del uplink["token_file"]
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_PATHS))
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part] if _has(parent, part) else None
            if not isinstance(parent, dict | list):
                break
        else:
            key = path[-1]
            if action == "add" and isinstance(parent, dict):
                parent[draw(_names)] = draw(_values)
            elif action == "delete" and _has(parent, key):
                del parent[key]
            elif _has(parent, key) or isinstance(parent, dict):
                parent[key] = draw(_values)
    return doc


def _has(parent: Any, key: Any) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def to_toml(doc: dict[str, Any]) -> str:
    """TOML text as a technician writes it: [section] and [[readers]] tables."""
    return "\n".join(_table_lines((), doc)) + "\n"


def _table_lines(name: tuple[str, ...], table: dict[str, Any]) -> list[str]:
    # Plain keys first: after a table header they would belong to that table.
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not _table(v)]
    for key, value in table.items():
        header = ".".join(_key(part) for part in (*name, key))
        if isinstance(value, dict):
            lines += [f"[{header}]", *_table_lines((*name, key), value)]
        elif _table(value):
            for item in value:
                lines += [f"[[{header}]]", *_table_lines((*name, key), item)]
    return lines


def _table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    escaped = "".join(
        "\\" + char
        if char in '"\\'
        else f"\\u{ord(char):04x}"
        if char < " " or char == "\x7f"
        else char
        for char in text
    )
    return f'"{escaped}"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # "inf", "nan" and "1e+16" are TOML too
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


_SEEDS = [
    to_toml(_GOOD).encode(),
    (Path(__file__).parents[1] / "config.example.toml").read_bytes(),
]


def _mutated(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """A file with a few bytes replaced, inserted or deleted (a bad edit, a bad disk)."""
    data = bytearray(seed)
    for position, byte, action in edits:
        index = position % (len(data) + 1)
        if action == 0:
            data[index : index + 1] = bytes([byte])
        elif action == 1:
            data.insert(index, byte)
        else:
            del data[index : index + 1]
    return bytes(data)


# (position, byte, 0 replace | 1 insert | 2 delete)
_edits = st.lists(
    st.tuples(st.integers(0, 5000), st.integers(0, 255), st.integers(0, 2)), max_size=4
)
_documents = config_documents().map(to_toml).map(str.encode)
config_texts = st.one_of(
    _documents,
    st.builds(_mutated, _documents, _edits),
    st.builds(_mutated, st.sampled_from(_SEEDS), _edits),
    st.binary(max_size=300),
)


class ConfigCheck:
    """Loads each document from a file in `folder`, as `gateagent run` does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for name, content in TOKEN_FILES.items():
            (folder / name).write_bytes(content)
        self.path = folder / "config.toml"

    def __call__(self, text: bytes, tally: Counter[str]) -> None:
        self.path.write_bytes(text.replace(FOLDER.encode(), str(self.folder).encode()))
        try:
            loaded = config.load(self.path)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(f"{self.path}: "), message
            assert "\n" not in message, message
            assert TOKEN not in message, message
            tally["refused"] += 1
        else:
            # A loaded config keeps its token secret (SecretStr) wherever it is shown.
            assert TOKEN not in repr(loaded), loaded
            tally["loaded"] += 1
