"""Card numbers: turn the ID a reader read into the `card_no` the school's database holds.

SPEC "Card numbers". A card number is a string from end to end: it never goes through an
integer on its way out, so leading zeros survive. Bad input is a value (`InvalidCard`),
never an exception, because readers emit noise and the daemon drops it with a warning.

Formats that compute a number (`dec10`, `wiegand26`, `strip-zeros` of non-decimal input,
`hex`, and `as-read` with `reverse_bytes`) read the input as hex bytes:

- separators `:` `-` `.` and space are allowed (readers and technicians print UIDs so);
- an odd number of hex digits gets a leading 0;
- no checksum is guessed: only a reader protocol that carries one (rdm6300's frame,
  `core/frames.py`) has one, and its decoder checks and drops it before the ID gets
  here. Guessing from the digits (12 of them, the last byte the XOR of the first five)
  mangled about one twelve-digit card number in 256 from readers that send none
  (issue 12);
- `reverse_bytes` reverses the byte order of the ID (Mifare UIDs: some databases hold
  the byte-reversed number).
"""

from dataclasses import dataclass
from typing import Final, Literal

CardFormat = Literal["as-read", "dec10", "wiegand26", "hex", "strip-zeros"]
CARD_FORMATS: Final[tuple[CardFormat, ...]] = (
    "as-read",
    "dec10",
    "wiegand26",
    "hex",
    "strip-zeros",
)

MAX_CARD_NO_LEN: Final = 32  # SPEC: "over 32 characters" is not a plausible card number

# Explicit ASCII sets: str.isdigit()/isalnum() and int() accept other scripts' digits.
_DEC_DIGITS: Final = frozenset("0123456789")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_CARD_NO_CHARS: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz,")
_ZERO_CHARS: Final = frozenset("0,")
_SEPARATORS: Final = str.maketrans("", "", ":-. ")


@dataclass(frozen=True)
class InvalidCard:
    """Why a read is not a plausible card number (SPEC "Card numbers").

    `reason` is one of "empty", "too-long", "bad-characters", "not-hex" and "all-zero"
    from `normalize`; frame decoders add "bad-checksum".
    """

    reason: str


def normalize(raw: str, card_format: CardFormat, reverse_bytes: bool = False) -> str | InvalidCard:
    """Return the `card_no` for `raw` in `card_format`, or why it is not one. Never raises."""
    text = raw.strip()
    if card_format == "as-read" and not reverse_bytes:
        return _checked(text)

    digits = _hex_digits(text)
    if isinstance(digits, InvalidCard):
        return digits
    return _checked(_formatted(digits, card_format, reverse_bytes))


def _formatted(digits: str, card_format: CardFormat, reverse_bytes: bool) -> str:
    # SPEC's strip-zeros example is a decimal card number; reversing its "bytes" is
    # meaningless, so reverse_bytes does not apply to it.
    if card_format == "strip-zeros" and set(digits) <= _DEC_DIGITS:
        return digits.lstrip("0") or "0"

    id_bytes = bytes.fromhex(digits.rjust(len(digits) + len(digits) % 2, "0"))
    if reverse_bytes:
        id_bytes = id_bytes[::-1]

    if card_format in ("as-read", "hex"):
        # Without a byte-level change, keep the digits as read (no padding added).
        return id_bytes.hex().upper() if reverse_bytes else digits.upper()
    if card_format == "wiegand26":
        facility, card_hi, card_lo = id_bytes[-3:].rjust(3, b"\0")
        return f"{facility},{card_hi << 8 | card_lo}"
    last4 = int.from_bytes(id_bytes[-4:], "big")
    # strip-zeros of a hex ID is its dec10 value without leading zeros.
    return f"{last4:010d}" if card_format == "dec10" else str(last4)


def all_formats(raw: str, reverse_bytes: bool) -> dict[CardFormat, str | InvalidCard]:
    """Every format of one read, for `gateagent listen` to show a technician."""
    return {fmt: normalize(raw, fmt, reverse_bytes) for fmt in CARD_FORMATS}


def _hex_digits(text: str) -> str | InvalidCard:
    digits = text.translate(_SEPARATORS)
    if not digits:
        return InvalidCard("empty")
    # Checked before parsing so a huge input costs one scan, never a big-int conversion.
    if len(digits) > MAX_CARD_NO_LEN:
        return InvalidCard("too-long")
    if not set(digits) <= _HEX_DIGITS:
        return InvalidCard("not-hex")
    return digits


def _checked(card_no: str) -> str | InvalidCard:
    if not card_no:
        return InvalidCard("empty")
    if len(card_no) > MAX_CARD_NO_LEN:
        return InvalidCard("too-long")
    chars = set(card_no)  # once: every read of every reader comes here
    if not chars <= _CARD_NO_CHARS:
        return InvalidCard("bad-characters")
    if chars <= _ZERO_CHARS:
        return InvalidCard("all-zero")
    return card_no
