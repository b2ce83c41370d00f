"""GSM-7 / UCS-2 detection, sizes and part splitting (3GPP TS 23.038 / 23.040).

The property tests compare against a reference written here from the standard's code table
(GSM code -> Unicode code point, as in the Unicode consortium's GSM0338 mapping), counting
and splitting one character at a time: slow, short and independent of the module's tricks.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.campaign.encoding import BodyInfo, analyze, body_length, split_parts
from dispatcher.sinch.limits import MAX_BODY_CHARS

# ------------------------------------------------------------------ reference implementation
# GSM 03.38 default alphabet by code 0x00..0x7F; None at 0x1B (the escape to the extension).
_DEFAULT_CODE_POINTS = [
    0x0040, 0x00A3, 0x0024, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC,
    0x00F2, 0x00C7, 0x000A, 0x00D8, 0x00F8, 0x000D, 0x00C5, 0x00E5,
    0x0394, 0x005F, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8,
    0x03A3, 0x0398, 0x039E, None, 0x00C6, 0x00E6, 0x00DF, 0x00C9,
    0x0020, 0x0021, 0x0022, 0x0023, 0x00A4, 0x0025, 0x0026, 0x0027,
    0x0028, 0x0029, 0x002A, 0x002B, 0x002C, 0x002D, 0x002E, 0x002F,
    *range(0x0030, 0x0040),
    0x00A1, *range(0x0041, 0x005B), 0x00C4, 0x00D6, 0x00D1, 0x00DC, 0x00A7,
    0x00BF, *range(0x0061, 0x007B), 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0,
]  # fmt: skip
# Extension table: code after the escape -> code point.
_EXTENSION_CODE_POINTS = {
    0x0A: 0x000C, 0x14: 0x005E, 0x28: 0x007B, 0x29: 0x007D, 0x2F: 0x005C,
    0x3C: 0x005B, 0x3D: 0x007E, 0x3E: 0x005D, 0x40: 0x007C, 0x65: 0x20AC,
}  # fmt: skip
REF_DEFAULT = {chr(cp) for cp in _DEFAULT_CODE_POINTS if cp is not None}
REF_EXTENSION = {chr(cp) for cp in _EXTENSION_CODE_POINTS.values()}
assert len(_DEFAULT_CODE_POINTS) == 128 and len(REF_DEFAULT) == 127
assert len(REF_EXTENSION) == 10


def ref_split(text: str) -> tuple[str, int, list[str]]:
    """(encoding, size, parts) by counting each character and filling parts greedily."""
    if all(c in REF_DEFAULT or c in REF_EXTENSION for c in text):
        encoding, single, per_part = "GSM-7", 160, 153
        costs = [2 if c in REF_EXTENSION else 1 for c in text]
    else:
        encoding, single, per_part = "UCS-2", 70, 67
        costs = [len(c.encode("utf-16-le")) // 2 for c in text]
    size = sum(costs)
    if size <= single:
        return encoding, size, [text]
    parts: list[str] = []
    current = ""
    used = 0
    for char, cost in zip(text, costs, strict=True):
        if used + cost > per_part:
            parts.append(current)
            current, used = "", 0
        current += char
        used += cost
    parts.append(current)
    return encoding, size, parts


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def septets(text: str) -> int:
    return sum(2 if c in REF_EXTENSION else 1 for c in text)


# ------------------------------------------------------------------ boundary table
EURO = "€"
EMOJI = "😀"  # outside the BMP: a surrogate pair, 2 UTF-16 units
CASES = [
    # (text, encoding, characters, parts)
    ("", "GSM-7", 0, 1),
    ("a", "GSM-7", 1, 1),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("a" * 1061, "GSM-7", 1061, 7),  # seed 003's table says 7 up to 1061 ...
    ("a" * 1062, "GSM-7", 1062, 7),  # ... and 8 from 1062: the rule says 7 x 153 = 1071
    ("a" * 1071, "GSM-7", 1071, 7),
    ("a" * 1072, "GSM-7", 1072, 8),
    ("a" * 2000, "GSM-7", 2000, 14),
    ("{" * 80, "GSM-7", 160, 1),  # extension characters count two septets
    ("{" * 80 + "a", "GSM-7", 161, 2),
    ("a" * 159 + EURO, "GSM-7", 161, 2),
    ("\f", "GSM-7", 2, 1),  # form feed is in the extension table
    ("a" * 152 + EURO + "a" * 7, "GSM-7", 161, 2),  # escape would be septet 153: moves
    ("a" * 152 + EURO + "a" * 152, "GSM-7", 306, 3),  # ceil(306 / 153) = 2, but it needs 3
    ("a" * 151 + EURO + "a" * 153, "GSM-7", 306, 2),  # fits exactly at the end of part 1
    ("Ç", "GSM-7", 1, 1),  # capital C-cedilla is GSM-7 ...
    ("ç", "UCS-2", 1, 1),  # ... the small one is not
    ("`", "UCS-2", 1, 1),
    ("\t", "UCS-2", 1, 1),
    ("\"-'@£$¥èéùìòØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\r\n", "GSM-7", 46, 1),
    ("ç" * 70, "UCS-2", 70, 1),
    ("ç" * 71, "UCS-2", 71, 2),
    ("ç" * 134, "UCS-2", 134, 2),  # seed 003's UCS-2 rows 2 and 3 overlap at 134
    ("ç" * 135, "UCS-2", 135, 3),
    (EMOJI * 35, "UCS-2", 70, 1),
    (EMOJI * 35 + "a", "UCS-2", 71, 2),
    ("ç" * 66 + EMOJI + "ç" * 4, "UCS-2", 72, 2),  # the pair would straddle units 67/68
    ("ç" * 66 + EMOJI + "ç" * 66, "UCS-2", 134, 3),  # ceil(134 / 67) = 2, but it needs 3
    ("ç" * 65 + EMOJI + "ç" * 67, "UCS-2", 134, 2),
    ("€ç", "UCS-2", 2, 1),  # a UCS-2 message counts the euro sign as one unit
    ("ç" * 2000, "UCS-2", 2000, 30),
]


@pytest.mark.parametrize(("text", "encoding", "characters", "parts"), CASES)
def test_boundaries(text: str, encoding: str, characters: int, parts: int) -> None:
    assert analyze(text) == BodyInfo(encoding, characters, parts)  # type: ignore[arg-type]
    pieces = split_parts(text)
    assert len(pieces) == parts
    assert "".join(pieces) == text
    assert ref_split(text) == (encoding, characters, pieces)


def test_escape_is_never_the_last_septet_of_a_part() -> None:
    pieces = split_parts("a" * 152 + EURO + "a" * 10)
    assert pieces == ["a" * 152, EURO + "a" * 10]
    assert septets(pieces[0]) == 152


def test_surrogate_pair_is_never_split() -> None:
    pieces = split_parts("ç" * 66 + EMOJI + "ç" * 4)
    assert pieces == ["ç" * 66, EMOJI + "ç" * 4]
    assert all(units(p) <= 67 for p in pieces)


def test_body_length_counts_utf16_units() -> None:
    assert body_length("a" * 1990) == 1990
    assert body_length("a" * MAX_BODY_CHARS) == 2000
    assert body_length("a" * 2001) == 2001
    assert body_length(EMOJI * 1000) == 2000
    assert body_length(EMOJI * 1000 + "a") == 2001
    assert body_length("ç" * 5) == 5


# ------------------------------------------------------------------ properties
GSM_CHARS = sorted(REF_DEFAULT | REF_EXTENSION)
gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=700)
# Mostly extension characters: exercises escapes at part boundaries.
ext_heavy = st.text(alphabet=st.sampled_from([*sorted(REF_EXTENSION), "a", "b"]), max_size=500)
ucs2_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(GSM_CHARS),
        st.sampled_from(["ç", "ő", "я", "中", "ש", EMOJI, "🎉", "𝄞"]),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=400,
)
any_text = st.one_of(gsm_text, ext_heavy, ucs2_text, st.text(max_size=300))


def limit_of(encoding: str, parts: int) -> int:
    if encoding == "GSM-7":
        return 160 if parts == 1 else 153
    return 70 if parts == 1 else 67


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_matches_reference(text: str) -> None:
    encoding, size, pieces = ref_split(text)
    info = analyze(text)
    assert (info.encoding, info.characters, info.parts) == (encoding, size, len(pieces))
    assert split_parts(text) == pieces


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_parts_rejoin_and_respect_limits(text: str) -> None:
    info = analyze(text)
    pieces = split_parts(text)
    assert "".join(pieces) == text
    assert len(pieces) == info.parts
    size = septets if info.encoding == "GSM-7" else units
    limit = limit_of(info.encoding, info.parts)
    assert sum(size(p) for p in pieces) == info.characters
    for i, piece in enumerate(pieces):
        assert size(piece) <= limit
        if i + 1 < len(pieces):
            # A part ends early only because the next character (an escape + char, or a
            # surrogate pair) would not fit: never inside one.
            assert piece
            assert size(piece) + size(pieces[i + 1][0]) > limit
            last_unit = int.from_bytes(piece.encode("utf-16-le")[-2:], "little")
            assert not 0xD800 <= last_unit <= 0xDBFF


@settings(max_examples=200, deadline=None)
@given(gsm_text, st.sampled_from(sorted(REF_EXTENSION)))
def test_extension_at_every_boundary(text: str, ext: str) -> None:
    # Slide an extension character across the first part boundary.
    for position in (151, 152, 153, 154):
        body = ("x" * position + ext + text)[:MAX_BODY_CHARS]
        assert split_parts(body) == ref_split(body)[2]
