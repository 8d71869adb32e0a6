"""Serial frame decoders: SPEC "Readers" vectors, split reads, and fuzzing."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateagent.core.frames import (
    MAX_LINE,
    MAX_NOISE,
    Decoder,
    Frame,
    Garbage,
    LinesDecoder,
    Rdm6300Decoder,
    decoder_for,
    looks_like,
    unframed_hint,
)

Out = list[Frame | Garbage]


def checksum(data_hex: str) -> str:
    value = 0
    for byte in bytes.fromhex(data_hex):
        value ^= byte
    return f"{value:02X}"


def rdm(data_hex: str, check: str | None = None, *, crlf: bool = False) -> bytes:
    """An rdm6300 frame; ID-12LA/ID-20LA form with `crlf`."""
    check = checksum(data_hex) if check is None else check
    return b"\x02" + (data_hex + check + ("\r\n" if crlf else "")).encode() + b"\x03"


def feed_all(decoder: Decoder, chunks: list[bytes]) -> Out:
    return [item for chunk in chunks for item in decoder.feed(chunk)]


def tr(make: Callable[[], Decoder], data: bytes, expected: Out, trailing: bytes) -> None:
    """h11's tr(): the same bytes whole, one byte at a time, and with trailing data."""
    assert feed_all(make(), [data]) == expected
    assert feed_all(make(), [bytes([b]) for b in data]) == expected
    # The start of the next frame or line must not change what came before.
    assert feed_all(make(), [data + trailing]) == expected


# SPEC "Card numbers": EM4100 tag 0x0A00C3A5F1; 0A^00^C3^A5^F1 = 9D.
GOOD = b"\x020A00C3A5F19D\x03"

RDM6300 = [
    ("spec-em4100", GOOD, [Frame("0A00C3A5F1")]),
    ("spec-checksum-09", b"\x02070067315809\x03", [Frame("0700673158")]),
    ("lower-case", rdm("0a00c3a5f1", "9d"), [Frame("0A00C3A5F1")]),
    ("id12la-crlf", rdm("0A00C3A5F1", crlf=True), [Frame("0A00C3A5F1")]),
    ("bad-checksum", rdm("0A00C3A5F1", "9E"), [Garbage(rdm("0A00C3A5F1", "9E"), "bad-checksum")]),
    ("all-zero", rdm("0000000000"), [Garbage(rdm("0000000000"), "all-zero")]),
    ("not-hex", rdm("0A00C3A5FG", "9D"), [Garbage(rdm("0A00C3A5FG", "9D"), "not-hex")]),
    # bytes.fromhex() would accept the space.
    ("space-is-not-hex", rdm(" A00C3A5F1", "9D"), [Garbage(rdm(" A00C3A5F1", "9D"), "not-hex")]),
    ("short-at-etx", b"\x020A00\x03", [Garbage(b"\x020A00\x03", "truncated")]),
    ("cr-without-lf", rdm("0A00C3A5F1", "9D\r"), [Garbage(rdm("0A00C3A5F1", "9D\r"), "too-long")]),
    (
        "truncated-then-good",
        b"\x020A00C3" + GOOD,
        [Garbage(b"\x020A00C3", "truncated"), Frame("0A00C3A5F1")],
    ),
    (
        "no-etx-then-good",
        b"\x020A00C3A5F19D\r\nXY" + GOOD,
        [
            Garbage(b"\x020A00C3A5F19D\r\nX", "too-long"),
            Garbage(b"Y", "noise"),
            Frame("0A00C3A5F1"),
        ],
    ),
    (
        "noise-before",
        b"\xff\x00\x03hi" + GOOD,
        [Garbage(b"\xff\x00\x03hi", "noise"), Frame("0A00C3A5F1")],
    ),
    (
        "garbage-between",
        GOOD + b"\r\n\xfe" + b"\x02070067315809\x03",
        [Frame("0A00C3A5F1"), Garbage(b"\r\n\xfe", "noise"), Frame("0700673158")],
    ),
    ("back-to-back", GOOD + GOOD, [Frame("0A00C3A5F1"), Frame("0A00C3A5F1")]),
    ("nothing", b"", []),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in RDM6300], ids=[c[0] for c in RDM6300]
)
def test_rdm6300(data: bytes, expected: Out) -> None:
    tr(Rdm6300Decoder, data, expected, trailing=b"\x020A00C3")


def test_spec_checksum_vectors() -> None:
    assert checksum("0A00C3A5F1") == "9D"
    assert checksum("0700673158") == "09"
    assert rdm("0A00C3A5F1") == GOOD


def test_noise_is_reported_when_the_next_frame_starts() -> None:
    decoder = Rdm6300Decoder()
    assert decoder.feed(b"\xff\xfe") == []
    assert decoder.feed(GOOD) == [Garbage(b"\xff\xfe", "noise"), Frame("0A00C3A5F1")]


def test_noise_without_stx_is_bounded() -> None:
    decoder = Rdm6300Decoder()
    out = decoder.feed(b"\xff" * 1000)
    assert out == [Garbage(b"\xff" * MAX_NOISE, "noise")] * (1000 // MAX_NOISE)
    assert decoder.feed(b"\x02") == [Garbage(b"\xff" * (1000 % MAX_NOISE), "noise")]


LINES = [
    ("lf", b"0012822001\n", [Frame("0012822001")]),
    ("cr", b"0012822001\r", [Frame("0012822001")]),
    ("crlf-is-one-terminator", b"0012822001\r\n42\r\n", [Frame("0012822001"), Frame("42")]),
    ("lf-cr-is-two", b"12\n\r34\n", [Frame("12"), Frame("34")]),
    ("stripped", b" \t0A00C3A5F1  \r\n", [Frame("0A00C3A5F1")]),
    ("empty-lines", b"\n\r\n\r\r  \n", []),
    ("non-ascii", b"12\xff34\n56\n", [Garbage(b"12\xff34", "not-text"), Frame("56")]),
    ("control", b"12\x0734\n", [Garbage(b"12\x0734", "not-text")]),
    ("longest", b"7" * MAX_LINE + b"\n", [Frame("7" * MAX_LINE)]),
    (
        "too-long-resyncs",
        b"1" * 100 + b"\r\n42\r\n",
        [Garbage(b"1" * (MAX_LINE + 1), "too-long"), Frame("42")],
    ),
    ("nothing", b"", []),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in LINES], ids=[c[0] for c in LINES])
def test_lines(data: bytes, expected: Out) -> None:
    tr(LinesDecoder, data, expected, trailing=b"0012")


def test_decoder_for() -> None:
    assert isinstance(decoder_for("rdm6300"), Rdm6300Decoder)
    assert isinstance(decoder_for("lines"), LinesDecoder)
    with pytest.raises(ValueError, match="wiegand"):
        decoder_for("wiegand")  # type: ignore[arg-type]


DECODERS = pytest.mark.parametrize("make", [Rdm6300Decoder, LinesDecoder], ids=["rdm6300", "lines"])

card_ids = st.binary(min_size=5, max_size=5).filter(any)
rdm_frames = st.builds(
    lambda card, crlf: rdm(card.hex().upper(), crlf=crlf),
    st.binary(min_size=5, max_size=5),
    st.booleans(),
)
# Random bytes alone almost never hold a valid frame; mixing some in exercises both paths.
streams = st.lists(st.one_of(st.binary(max_size=40), rdm_frames), max_size=12).map(b"".join)
no_stx = st.binary(max_size=100).map(lambda b: b.replace(b"\x02", b""))


@DECODERS
@given(data=st.one_of(st.binary(max_size=400), streams))
def test_any_bytes_never_raise(make: Callable[[], Decoder], data: bytes) -> None:
    out = make().feed(data)
    assert all(isinstance(item, Frame | Garbage) for item in out)


@given(data=st.one_of(st.binary(max_size=400), streams))
def test_rdm6300_frames_are_valid(data: bytes) -> None:
    for item in Rdm6300Decoder().feed(data):
        if isinstance(item, Frame):
            assert len(item.raw) == 10
            assert set(item.raw) <= set("0123456789ABCDEF")
            assert item.raw != "0000000000"
            # Only what was really sent, with its checksum, becomes a Frame.
            assert b"\x02" + (item.raw + checksum(item.raw)).encode() in data.upper()


@DECODERS
@given(data=streams, cuts=st.lists(st.integers(0, 400), max_size=20))
def test_split_reads_change_nothing(
    make: Callable[[], Decoder], data: bytes, cuts: list[int]
) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    chunks = [data[a:b] for a, b in pairwise(bounds)]
    whole = feed_all(make(), [data])
    assert feed_all(make(), chunks) == whole
    assert feed_all(make(), [bytes([b]) for b in data]) == whole


@given(prefix=no_stx, card=card_ids, lower=st.booleans(), crlf=st.booleans(), suffix=no_stx)
def test_frame_is_found_in_noise(
    prefix: bytes, card: bytes, lower: bool, crlf: bool, suffix: bytes
) -> None:
    data_hex = card.hex() if lower else card.hex().upper()
    check = checksum(data_hex).lower() if lower else checksum(data_hex)
    out = Rdm6300Decoder().feed(prefix + rdm(data_hex, check, crlf=crlf) + suffix)
    assert [item for item in out if isinstance(item, Frame)] == [Frame(card.hex().upper())]


@given(prefix=st.binary(max_size=100), card=card_ids)
def test_frame_survives_any_prefix(prefix: bytes, card: bytes) -> None:
    # A new STX ends whatever unfinished frame the prefix left behind.
    out = Rdm6300Decoder().feed(prefix + rdm(card.hex().upper()))
    assert out[-1] == Frame(card.hex().upper())


# -- what unframed bytes look like (issue 13: a wrong protocol is not silence) ----------

LINES_CARD = b"0012822001\r\n"


@pytest.mark.parametrize(
    ("data", "looks"),
    [
        (GOOD, "rdm6300"),
        (rdm("0A00C3A5F1", crlf=True), "rdm6300"),
        (b"junk" + GOOD[:5] + GOOD, "rdm6300"),
        (LINES_CARD, "lines"),
        (b"90D752C5\r", "lines"),
        (b"0012822001\n0012822001\n", "lines"),
        (b"0012822001", None),  # no line end yet
        (b"\r\n\r\n", None),  # nothing but line ends
        (b"\xff\xfe\x00\x80\r\n", None),  # a wrong baud rate's noise
        (GOOD[:-1], None),  # a frame without its ETX
        (b"\x03\x02", None),  # ETX before STX
    ],
    ids=[
        "rdm6300", "id12la", "after-noise", "lines-crlf", "lines-cr", "two-lines",
        "no-line-end", "only-line-ends", "binary-noise", "no-etx", "etx-first",
    ],
)  # fmt: skip
def test_looks_like(data: bytes, looks: str | None) -> None:
    assert looks_like(data) == looks


@pytest.mark.parametrize(
    ("protocol", "data", "hint"),
    [
        ("rdm6300", LINES_CARD, 'this looks like a `lines` reader: set protocol = "lines"'),
        ("lines", GOOD * 2, 'this looks like a `rdm6300` reader: set protocol = "rdm6300"'),
        ("rdm6300", GOOD, None),  # its own protocol: a damaged frame is reported as such
        ("lines", LINES_CARD, None),
        ("rdm6300", b"\xff" * 15, None),  # too few to say
        ("lines", b"\xff\x80" * 8, "neither rdm6300 frames nor text lines: check baudrate"
         " (RDM6300 and ID-12LA modules send at 9600) and the wiring"),
    ],
    ids=["lines-on-rdm6300", "rdm6300-on-lines", "rdm6300-itself", "lines-itself",
         "few-bytes", "noise"],
)  # fmt: skip
def test_unframed_hint(
    protocol: Literal["rdm6300", "lines"], data: bytes, hint: str | None
) -> None:
    assert unframed_hint(protocol, data) == hint


@given(st.binary(max_size=200))
def test_looks_like_never_raises(data: bytes) -> None:
    assert looks_like(data) in ("rdm6300", "lines", None)
    assert unframed_hint("rdm6300", data) is None or unframed_hint("rdm6300", data)
