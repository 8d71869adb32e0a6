"""Card numbers: SPEC "Card numbers" vectors, validity rules and properties."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateagent.core.cards import (
    CARD_FORMATS,
    CardFormat,
    InvalidCard,
    all_formats,
    normalize,
)
from gateagent.core.frames import Frame, Rdm6300Decoder

VALID_CARD_NO = re.compile(r"[0-9A-Za-z,]{1,32}")

SPEC_VECTORS: list[tuple[str, CardFormat, bool, str]] = [
    ("0A00C3A5F1", "as-read", False, "0A00C3A5F1"),
    ("0A00C3A5F1", "dec10", False, "0012822001"),
    ("0A00C3A5F1", "wiegand26", False, "195,42481"),
    ("0a:00:c3:a5:f1", "hex", False, "0A00C3A5F1"),
    ("0012822001", "strip-zeros", False, "12822001"),
    ("90D752C5", "dec10", False, "2430030533"),
    ("90D752C5", "hex", True, "C552D790"),
    ("90D752C5", "dec10", True, "3310540688"),
]


@pytest.mark.parametrize(
    ("raw", "card_format", "reverse_bytes", "card_no"),
    SPEC_VECTORS,
    ids=[f"{fmt}{'-reversed' if rev else ''}-{raw}" for raw, fmt, rev, _ in SPEC_VECTORS],
)
def test_spec_vectors(raw: str, card_format: CardFormat, reverse_bytes: bool, card_no: str) -> None:
    assert normalize(raw, card_format, reverse_bytes) == card_no


@pytest.mark.parametrize(
    ("card_format", "card_no"),
    [("dec10", "0006762840"), ("wiegand26", "103,12632"), ("hex", "0700673158")],
)
def test_spec_em4100_vector_with_its_checksum(card_format: CardFormat, card_no: str) -> None:
    # SPEC: EM4100 070067315809 "(with checksum)": the checksum travels in the rdm6300
    # frame, whose decoder checks and drops it; normalize never guesses one.
    [frame] = Rdm6300Decoder().feed(b"\x02070067315809\x03")
    assert isinstance(frame, Frame)
    assert normalize(frame.raw, card_format) == card_no


MORE_VECTORS: list[tuple[str, CardFormat, bool, str]] = [
    # Whitespace around a read (a HID reader's trailing newline) is not part of it.
    (" 0A00C3A5F1\r\n", "as-read", False, "0A00C3A5F1"),
    # as-read keeps the text, case and leading zeros, and the EM4100 checksum.
    ("0a00c3a5f1", "as-read", False, "0a00c3a5f1"),
    ("070067315809", "as-read", False, "070067315809"),
    ("0012822001", "as-read", False, "0012822001"),
    # Every separator readers print.
    ("0A-00-C3-A5-F1", "dec10", False, "0012822001"),
    ("0A.00.C3.A5.F1", "dec10", False, "0012822001"),
    ("0A 00 C3 A5 F1", "wiegand26", False, "195,42481"),
    # 12 digits are a 12-digit number or a 6-byte ID, whatever their last byte: only the
    # rdm6300 frame carries a checksum, and its decoder drops it (issue 12).
    ("070067315809", "hex", False, "070067315809"),
    ("070067315809", "strip-zeros", False, "70067315809"),
    ("07:00:67:31:58:09", "dec10", False, "1731287049"),
    ("070067315808", "dec10", False, "1731287048"),
    ("070067315808", "hex", False, "070067315808"),
    # Issue 12: twelve-digit card numbers whose last byte happens to be the XOR.
    ("100000000010", "strip-zeros", False, "100000000010"),
    ("100000000111", "strip-zeros", False, "100000000111"),
    ("100000000111", "as-read", False, "100000000111"),
    # An odd number of hex digits gets a leading 0 when read as bytes.
    ("ABC", "dec10", False, "0000002748"),
    ("ABC", "wiegand26", False, "0,2748"),
    ("ABC", "hex", False, "ABC"),
    ("ABC", "hex", True, "BC0A"),
    # strip-zeros: decimal input stays decimal; hex input is its dec10 value.
    ("0A00C3A5F1", "strip-zeros", False, "12822001"),
    ("90D752C5", "strip-zeros", True, "3310540688"),
    ("0012822001", "strip-zeros", True, "12822001"),
    # A 7-byte Mifare UID: dec10 and wiegand26 take its last bytes.
    ("04A23B1A7F5C80", "dec10", False, "0444554368"),
    ("04A23B1A7F5C80", "wiegand26", False, "127,23680"),
    ("90D752C5", "as-read", True, "C552D790"),
    # A non-zero ID whose facility is 0 is still a card.
    ("0000C3A5", "wiegand26", False, "0,50085"),
]


@pytest.mark.parametrize(
    ("raw", "card_format", "reverse_bytes", "card_no"),
    MORE_VECTORS,
    ids=[f"{fmt}{'-reversed' if rev else ''}-{raw.strip()}" for raw, fmt, rev, _ in MORE_VECTORS],
)
def test_more_vectors(raw: str, card_format: CardFormat, reverse_bytes: bool, card_no: str) -> None:
    assert normalize(raw, card_format, reverse_bytes) == card_no


INVALID: list[tuple[str, CardFormat, str]] = [
    ("", "as-read", "empty"),
    ("  \r\n", "as-read", "empty"),
    ("", "dec10", "empty"),
    (":-.:", "hex", "empty"),
    ("1" * 33, "as-read", "too-long"),
    ("1" * 33, "strip-zeros", "too-long"),
    ("A" * 33, "dec10", "too-long"),
    ("9" * 5000, "strip-zeros", "too-long"),
    ("0A00C3A5F1?", "as-read", "bad-characters"),
    ("0A00 C3A5F1", "as-read", "bad-characters"),
    ("0a:00:c3:a5:f1", "as-read", "bad-characters"),
    ("0A00\x00C3", "as-read", "bad-characters"),
    ("١٢٣", "as-read", "bad-characters"),  # Arabic-Indic digits are not card digits
    ("0A00G3A5F1", "dec10", "not-hex"),
    ("0A00G3A5F1", "hex", "not-hex"),
    ("١٢٣", "strip-zeros", "not-hex"),
    ("0x0A00C3A5F1", "dec10", "not-hex"),
    ("0000000000", "as-read", "all-zero"),
    ("0,0", "as-read", "all-zero"),
    ("00:00:00", "hex", "all-zero"),
    ("0000000000", "dec10", "all-zero"),
    ("0000000000", "strip-zeros", "all-zero"),
    ("0000000000", "wiegand26", "all-zero"),
    # The card_no is what must not be all zeros: these IDs have zeros where it looks.
    ("0A00000000", "dec10", "all-zero"),
    ("FF000000", "wiegand26", "all-zero"),
]

# With reverse_bytes, as-read reads the input as hex bytes too.
INVALID_REVERSED: list[tuple[str, CardFormat, str]] = [
    ("", "as-read", "empty"),
    ("1" * 33, "as-read", "too-long"),
    ("0A00C3A5F1?", "as-read", "not-hex"),
    ("00:00", "as-read", "all-zero"),
    ("000000000A", "dec10", "all-zero"),
    ("000000FF", "wiegand26", "all-zero"),
]


@pytest.mark.parametrize(
    ("raw", "card_format", "reason"),
    INVALID,
    ids=[f"{reason}-{fmt}-{raw[:12]!r}" for raw, fmt, reason in INVALID],
)
def test_invalid(raw: str, card_format: CardFormat, reason: str) -> None:
    assert normalize(raw, card_format) == InvalidCard(reason)


@pytest.mark.parametrize(
    ("raw", "card_format", "reason"),
    INVALID_REVERSED,
    ids=[f"{reason}-{fmt}-{raw[:12]!r}" for raw, fmt, reason in INVALID_REVERSED],
)
def test_invalid_reversed(raw: str, card_format: CardFormat, reason: str) -> None:
    assert normalize(raw, card_format, reverse_bytes=True) == InvalidCard(reason)


def test_longest_valid_card_no_is_32_characters() -> None:
    assert normalize("1" * 32, "as-read") == "1" * 32
    assert normalize("A" * 32, "hex") == "A" * 32


def test_all_formats_gives_every_format() -> None:
    assert all_formats("0A00C3A5F1", reverse_bytes=False) == {
        "as-read": "0A00C3A5F1",
        "dec10": "0012822001",
        "wiegand26": "195,42481",
        "hex": "0A00C3A5F1",
        "strip-zeros": "12822001",
    }
    assert all_formats("", reverse_bytes=True) == dict.fromkeys(CARD_FORMATS, InvalidCard("empty"))


@given(raw=st.text(), card_format=st.sampled_from(CARD_FORMATS), reverse_bytes=st.booleans())
def test_never_raises_and_gives_a_valid_card_no(
    raw: str, card_format: CardFormat, reverse_bytes: bool
) -> None:
    result = normalize(raw, card_format, reverse_bytes)
    assert isinstance(result, InvalidCard) or VALID_CARD_NO.fullmatch(result)


hex_ids = st.binary(min_size=1, max_size=16).map(bytes.hex)


@given(raw=st.one_of(hex_ids, hex_ids.map(str.upper)), reverse_bytes=st.booleans())
def test_never_raises_on_hex_ids(raw: str, reverse_bytes: bool) -> None:
    for result in all_formats(raw, reverse_bytes).values():
        assert isinstance(result, InvalidCard) or VALID_CARD_NO.fullmatch(result)


@given(raw=hex_ids, reverse_bytes=st.booleans())
def test_dec10_is_always_ten_digits(raw: str, reverse_bytes: bool) -> None:
    result = normalize(raw, "dec10", reverse_bytes)
    assert result == InvalidCard("all-zero") or re.fullmatch(r"[0-9]{10}", str(result))


@given(
    zeros=st.integers(min_value=1, max_value=10),
    rest=st.from_regex(r"[1-9][0-9]{0,15}", fullmatch=True),
)
def test_leading_zeros_survive_as_read(zeros: int, rest: str) -> None:
    assert normalize("0" * zeros + rest, "as-read") == "0" * zeros + rest


@given(
    zeros=st.integers(min_value=1, max_value=10),
    rest=st.from_regex(r"[1-9][0-9]{0,15}", fullmatch=True),
)
def test_strip_zeros_of_a_decimal_drops_only_leading_zeros(zeros: int, rest: str) -> None:
    raw = "0" * zeros + rest
    assert normalize(raw, "strip-zeros") == rest


@given(raw=hex_ids)
def test_reversing_twice_is_identity_for_hex(raw: str) -> None:
    reversed_once = normalize(raw, "hex", reverse_bytes=True)
    if isinstance(reversed_once, InvalidCard):
        assert reversed_once == InvalidCard("all-zero")
        return
    assert normalize(reversed_once, "hex", reverse_bytes=True) == normalize(raw, "hex")


@given(raw=hex_ids)
def test_strip_zeros_of_hex_is_dec10_without_leading_zeros(raw: str) -> None:
    dec10 = normalize(raw, "dec10")
    if isinstance(dec10, str) and not set(raw) <= set("0123456789"):
        assert normalize(raw, "strip-zeros") == dec10.lstrip("0")
