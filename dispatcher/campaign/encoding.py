"""How many SMS parts a body costs: GSM-7 / UCS-2 detection and splitting.

The provider bills and rate-plans per part, and a parameterized campaign can turn one short
template into long per-recipient messages, so the enqueue path counts parts for every recipient.
That makes :func:`analyze` hot: it answers from a byte-level deletion (ASCII text) or a
precompiled character-class search, and string lengths; it only walks the text when a multipart
message holds characters that take two slots (GSM-7 extension characters, surrogate pairs).

The rule (3GPP TS 23.038 / 23.040, as restated in seed 003; its part-count *tables* drift and
are not used): a message is GSM-7 when every character is in the default alphabet or the
extension table, otherwise UCS-2.  GSM-7 counts septets (extension characters are an escape
plus a character, two septets); UCS-2 counts UTF-16 code units (characters outside the BMP
are a surrogate pair, two units).  One part holds 160 septets or 70 units; in a multipart
message each part holds 153 septets or 67 units (the rest of the 140 octets carries the
concatenation header).  A part never ends between an escape and its character, nor between the
two halves of a surrogate pair, so an extension character or astral character that does not fit
moves whole to the next part, which can add a part beyond ``ceil(n / 153)``.

The empty body is 0 characters in 1 part: a message that is sent at all occupies one PDU.
(Campaigns reject empty bodies before this matters.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "GSM_BASIC",
    "GSM_EXTENSION",
    "BodyInfo",
    "analyze",
    "body_length",
    "split_parts",
]

GSM_SINGLE_SEPTETS: Final = 160
GSM_PART_SEPTETS: Final = 153
UCS2_SINGLE_UNITS: Final = 70
UCS2_PART_UNITS: Final = 67

# GSM 03.38 default alphabet, in code order (0x1B, the escape to the extension table, left out:
# it is not a character a user can send).  Note 0x09 is capital C-cedilla only.
GSM_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
).replace("\x1b", "")
# The extension table: each costs the escape septet plus its own.
GSM_EXTENSION: Final = "\f^{}\\[~]|€"

_ESC: Final = "\x1b"
_ASCII_BASIC: Final = bytes(c for c in range(128) if chr(c) in GSM_BASIC)
_ASCII_EXTENSION: Final = bytes(c for c in range(128) if chr(c) in GSM_EXTENSION)
_EXTENSION: Final = re.compile("[" + re.escape(GSM_EXTENSION) + "]")
_NOT_GSM: Final = re.compile("[^" + re.escape(GSM_BASIC + GSM_EXTENSION) + "]")
# Extension characters written out as escape + character: the string's length is the septet
# count and an escape at a part's last position means the part would split a pair.
_ESCAPED: Final = _ESC + r"\g<0>"

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What the provider will make of one message body (the shape of ``preview --json``)."""

    encoding: Encoding
    characters: int
    """GSM-7 septets (extension characters count 2) or UTF-16 code units."""
    parts: int


def analyze(text: str) -> BodyInfo:
    """Encoding, size and part count of ``text``; equal to ``len(split_parts(text))`` parts."""
    n = len(text)
    if text.isascii():
        # Deleting the default-alphabet bytes leaves exactly the characters that cost extra.
        rest = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not rest:
            return _info(_GSM_INFO, "GSM-7", n)
        if not rest.translate(None, _ASCII_EXTENSION):
            size = n + len(rest)
            if size <= GSM_SINGLE_SEPTETS:
                return _info(_GSM_INFO, "GSM-7", size)
            return BodyInfo("GSM-7", size, _count_gsm_parts(_EXTENSION.sub(_ESCAPED, text)))
    elif _NOT_GSM.search(text) is None:
        extension = len(_EXTENSION.findall(text))
        size = n + extension
        if size <= GSM_SINGLE_SEPTETS or not extension:
            return _info(_GSM_INFO, "GSM-7", size)
        return BodyInfo("GSM-7", size, _count_gsm_parts(_EXTENSION.sub(_ESCAPED, text)))
    units = _utf16(text)
    size = len(units) // 2
    if size <= UCS2_SINGLE_UNITS or size == n:
        return _info(_UCS2_INFO, "UCS-2", size)
    return BodyInfo("UCS-2", size, _count_ucs2_parts(units))


# Interned results for the cases where the part count follows from the size alone: a frozen
# dataclass costs more to build than the whole analysis of a short text.
_GSM_INFO: dict[int, BodyInfo] = {}
_UCS2_INFO: dict[int, BodyInfo] = {}


def _info(cache: dict[int, BodyInfo], encoding: Encoding, size: int) -> BodyInfo:
    info = cache.get(size)
    if info is None:
        if encoding == "GSM-7":
            parts = _parts(size, GSM_SINGLE_SEPTETS, GSM_PART_SEPTETS)
        else:
            parts = _parts(size, UCS2_SINGLE_UNITS, UCS2_PART_UNITS)
        info = cache[size] = BodyInfo(encoding, size, parts)
    return info


def body_length(text: str) -> int:
    """Length as the API counts it against ``MAX_BODY_CHARS``: UTF-16 code units.

    The provider is a JVM service (string lengths are UTF-16 units); counting that way never
    accepts a body the API could reject, and equals ``len(text)`` for all BMP text.
    """
    if text.isascii():
        return len(text)
    return len(_utf16(text)) // 2


def split_parts(text: str) -> list[str]:
    """The texts of the parts, in order; ``"".join`` of them gives ``text`` back.

    Greedy filling (what handsets and SMSCs do, and optimal for ordered items of size 1 and 2):
    a two-slot character that would straddle the boundary starts the next part instead.
    """
    info = analyze(text)
    if info.parts == 1:
        return [text]
    gsm = info.encoding == "GSM-7"
    limit = GSM_PART_SEPTETS if gsm else UCS2_PART_UNITS
    parts: list[str] = []
    start = 0
    used = 0
    for i, ch in enumerate(text):
        wide = ch in GSM_EXTENSION if gsm else ord(ch) > 0xFFFF
        cost = 2 if wide else 1
        if used + cost > limit:
            parts.append(text[start:i])
            start = i
            used = 0
        used += cost
    parts.append(text[start:])
    return parts


def _parts(size: int, single: int, per_part: int) -> int:
    if size <= single:
        return 1
    return -(-size // per_part)


def _utf16(text: str) -> bytes:
    # surrogatepass: a lone surrogate (bad upstream decoding) still counts as one unit rather
    # than crashing the enqueue of a whole campaign.
    return text.encode("utf-16-le", "surrogatepass")


def _count_gsm_parts(septets: str) -> int:
    """Greedy split of the escaped septet string; an escape never ends a part."""
    total = len(septets)
    pos = 0
    parts = 0
    while total - pos > GSM_PART_SEPTETS:
        end = pos + GSM_PART_SEPTETS
        if septets[end - 1] == _ESC:
            end -= 1
        pos = end
        parts += 1
    return parts + 1


def _count_ucs2_parts(units: bytes) -> int:
    """Greedy split of UTF-16-LE bytes; a high surrogate never ends a part."""
    total = len(units) // 2
    pos = 0
    parts = 0
    while total - pos > UCS2_PART_UNITS:
        end = pos + UCS2_PART_UNITS
        # High byte of the part's last unit is a high surrogate, the next unit's a low one.
        if 0xD8 <= units[2 * end - 1] <= 0xDB and 0xDC <= units[2 * end + 1] <= 0xDF:
            end -= 1
        pos = end
        parts += 1
    return parts + 1
