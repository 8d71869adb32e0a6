"""Serial reader frame decoders: bytes in, `Frame`/`Garbage` values out, no I/O.

SPEC "Readers", `serial`:

- `rdm6300`: STX 0x02, 10 ASCII hex data, 2 ASCII hex checksum, ETX 0x03. The checksum
  is the XOR of the 5 data bytes (RDM6300 datasheet, "Output data format"). ID-12LA and
  ID-20LA send CR LF between checksum and ETX (ID-Innovations ID-2LA/12LA/20LA
  datasheet, "ASCII data format"), so both forms are accepted.
- `lines`: ASCII text terminated by CR and/or LF.

Like h11, a decoder is fed whatever chunk the port returned and answers with what
completed; it works byte by byte, so how a stream is split never changes the output.
Bad input is a `Garbage` value, never an exception (STYLE "Errors").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "Decoder",
    "Frame",
    "Garbage",
    "LinesDecoder",
    "Rdm6300Decoder",
    "decoder_for",
    "looks_like",
    "unframed_hint",
]


@dataclass(frozen=True)
class Frame:
    """A card ID as the reader sent it (rdm6300: 10 upper-case hex, checksum removed)."""

    raw: str


@dataclass(frozen=True)
class Garbage:
    """Bytes that are not a card, with a short kebab-case reason for the log."""

    data: bytes
    reason: str


SerialProtocol = Literal["rdm6300", "lines"]  # `[[readers]] protocol`


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[Frame | Garbage]: ...


STX = 0x02
ETX = 0x03
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_DATA_LEN = 10
_BODY_LEN = _DATA_LEN + 2  # data + checksum
_CRLF = b"\r\n"
# Noise between frames is reported in pieces of this size, so a port that only ever
# sends garbage (wrong baud rate, floating line) cannot grow the buffer.
MAX_NOISE = 64


class Rdm6300Decoder:
    """STX, 10 hex data, 2 hex checksum, [CR LF], ETX; resynchronises on STX."""

    def __init__(self) -> None:
        self._frame = bytearray()  # from STX on; empty while hunting for STX
        self._noise = bytearray()

    def feed(self, chunk: bytes) -> list[Frame | Garbage]:
        out: list[Frame | Garbage] = []
        for byte in chunk:
            if byte == STX:
                # A new STX always wins: a frame cut short by a glitch must not swallow
                # the next, good one.
                self._flush_noise(out)
                if self._frame:
                    out.append(Garbage(bytes(self._frame), "truncated"))
                self._frame = bytearray((STX,))
            elif not self._frame:
                self._noise.append(byte)
                if len(self._noise) >= MAX_NOISE:
                    self._flush_noise(out)
            elif byte == ETX:
                self._frame.append(byte)
                out.append(_check(bytes(self._frame)))
                self._frame.clear()
            elif len(self._frame) > _BODY_LEN + len(_CRLF):
                # No ETX where the longest form has one: give up and hunt for STX.
                self._frame.append(byte)
                out.append(Garbage(bytes(self._frame), "too-long"))
                self._frame.clear()
            else:
                self._frame.append(byte)
        return out

    def _flush_noise(self, out: list[Frame | Garbage]) -> None:
        if self._noise:
            out.append(Garbage(bytes(self._noise), "noise"))
            self._noise.clear()


def _check(frame: bytes) -> Frame | Garbage:
    """Judge a complete STX..ETX frame."""
    body = frame[1:-1]
    if len(body) == _BODY_LEN + len(_CRLF) and body.endswith(_CRLF):
        body = body[:_BODY_LEN]
    if len(body) != _BODY_LEN:
        return Garbage(frame, "truncated" if len(body) < _BODY_LEN else "too-long")
    # bytes.fromhex would skip spaces, so the alphabet is checked first.
    if not _HEX.issuperset(body):
        return Garbage(frame, "not-hex")
    values = bytes.fromhex(body.decode("ascii"))
    checksum = 0
    for value in values[:-1]:
        checksum ^= value
    if checksum != values[-1]:
        return Garbage(frame, "bad-checksum")
    if not any(values[:-1]):
        # Cheap modules report 0000000000 (checksum 00) on a weak or half-seen tag.
        return Garbage(frame, "all-zero")
    return Frame(body[:_DATA_LEN].decode("ascii").upper())


# Longer than any card number a wedge or serial reader types (SPEC "Card numbers"
# allows 32 characters), short enough to bound the buffer.
MAX_LINE = 64
_CR = 0x0D
_LF = 0x0A
_TEXT = bytes(range(0x20, 0x7F))  # printable ASCII, for bytes.translate's delete


class LinesDecoder:
    """ASCII lines ended by CR, LF or CR LF; surrounding whitespace is stripped.

    It works a line at a time (bytes.splitlines breaks at exactly these three), not a
    byte at a time: a Python step per byte cost more than the rest of a tap's reading.
    The result is the same however the stream is split (tests/core/test_frames.py)."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._after_cr = False  # LF right after CR is the same terminator
        self._skipping = False  # an over-long line was reported; drop to its end

    def feed(self, chunk: bytes) -> list[Frame | Garbage]:
        out: list[Frame | Garbage] = []
        if not chunk:
            return out
        pieces = chunk.splitlines(keepends=True)
        if self._after_cr and chunk[0] == _LF:
            del pieces[0]  # the LF of a CR LF split between two chunks
        for piece in pieces:
            body = piece.rstrip(b"\r\n")
            ended = len(body) < len(piece)
            if ended and not self._line and not self._skipping and len(body) <= MAX_LINE:
                self._end_line(body, out)  # a whole line in this chunk, the usual case
                continue
            if not self._skipping:
                room = MAX_LINE + 1 - len(self._line)
                self._line += body[:room]
                if len(body) >= room:
                    out.append(Garbage(bytes(self._line), "too-long"))
                    self._line.clear()
                    self._skipping = True
            if ended:
                if not self._skipping:
                    self._end_line(bytes(self._line), out)
                self._skipping = False
                self._line.clear()
        self._after_cr = chunk[-1] == _CR
        return out

    def _end_line(self, line: bytes, out: list[Frame | Garbage]) -> None:
        text = line.strip()
        if not text:
            return
        if text.translate(None, _TEXT):  # anything left is not printable ASCII
            out.append(Garbage(line, "not-text"))
            return
        out.append(Frame(text.decode("ascii")))


def decoder_for(protocol: SerialProtocol) -> Decoder:
    """The decoder for a `[[readers]] protocol` value (SPEC "Configuration")."""
    if protocol == "rdm6300":
        return Rdm6300Decoder()
    if protocol == "lines":
        return LinesDecoder()
    # Config validation rejects other values; this guards callers that skip it.
    raise ValueError(f"unknown serial protocol {protocol!r}")


# -- what bytes that never form a frame look like ---------------------------------------
#
# A reader set to the wrong `protocol` is otherwise silence: rdm6300 keeps a lines
# reader's digits as noise until 64 bytes have come (five cards or so), and a lines
# decoder sees an RDM6300's STX..ETX frames as one endless line (issue 13).

# Fewer unrecognised bytes than this are a glitch, not a pattern worth a warning.
MIN_NOISE_HINT = 16
_LINE_ENDS = frozenset(b"\r\n")
_PRINTABLE = frozenset(range(0x20, 0x7F))


def looks_like(data: bytes) -> SerialProtocol | None:
    """The serial protocol these bytes look like, or None.

    rdm6300: an STX before an ETX (RDM6300 and ID-12LA frames, SPEC "Readers"); lines:
    printable ASCII with a CR or LF and at least one letter or digit, and no STX/ETX.
    """
    stx = data.find(STX)
    if stx != -1 and data.find(ETX, stx) != -1:
        return "rdm6300"
    if (
        not _LINE_ENDS.isdisjoint(data)
        and (_PRINTABLE | _LINE_ENDS).issuperset(data)
        and any(chr(byte).isalnum() for byte in data)
    ):
        return "lines"
    return None


def unframed_hint(protocol: SerialProtocol, data: bytes) -> str | None:
    """What a technician should change when `data` came from a `protocol` reader and
    formed no frame; None when the bytes look like `protocol` itself (damaged frames,
    which the decoders already report) or are too few to say."""
    looks = looks_like(data)
    if looks is not None and looks != protocol:
        return f'this looks like a `{looks}` reader: set protocol = "{looks}"'
    if looks is None and len(data) >= MIN_NOISE_HINT:
        return (
            "neither rdm6300 frames nor text lines: check baudrate (RDM6300 and ID-12LA"
            " modules send at 9600) and the wiring"
        )
    return None
