"""Recipient numbers: the forms users type, reduced to one canonical MSISDN or a reason.

Input forms (seed 003): international format with a leading ``+``, ``00`` or nothing; spaces,
dashes, dots and brackets are ignored.  The result is the E.164 digits without ``+``, in the
canonical form ``phonenumbers`` derives: a national trunk prefix written after the country code
("+44 (0)7400 123456") is removed, so two spellings of one number deduplicate and match their
parameters.  Whether the digits are a real number is :mod:`dispatcher.campaign.numbering`'s
question; a whole recipient list is :mod:`dispatcher.campaign.recipients`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import phonenumbers

from dispatcher.campaign.numbering import Rejection, fast_valid, region_for, verdict
from dispatcher.errors import InvalidNumber
from dispatcher.sinch.limits import MAX_MSISDN_DIGITS

__all__ = [
    "ASCII_SEPARATORS",
    "NOT_TEXT",
    "InvalidNumber",
    "check",
    "check_many",
    "clean",
    "is_valid",
    "normalize",
    "region_of",
]


# Ignored in input, as the API ignores them (seed 003), plus dots and no-break spaces, which
# spreadsheets and copy-paste bring along.
_SEPARATORS: Final = str.maketrans("", "", " \t\n\r\v\f\u00a0-.()[]")
ASCII_SEPARATORS: Final = b" \t\n\r\v\f-.()[]"
NOT_TEXT: Final = "not a number: not text"


def normalize(raw: str) -> str:
    """The digits of ``raw`` in international format, without ``+`` or ``00``.

    Only syntax is checked here (what the API itself would refuse to read); whether the digits
    form a real number is :func:`is_valid`'s question.
    """
    if raw.isascii():
        if raw.isdigit() or (raw[:1] == "+" and raw[1:].isdigit()):
            text = raw
        else:
            # bytes.translate: the separators go in one C pass (str.translate is 4x slower).
            text = raw.encode("ascii").translate(None, ASCII_SEPARATORS).decode("ascii")
    else:
        text = raw.strip().translate(_SEPARATORS)
    if not text:
        raise InvalidNumber("empty")
    prefixed = True
    if text[0] == "+":
        digits = text[1:]
    elif text[0] == "0" and text[:2] == "00":
        digits = text[2:]
    else:
        prefixed = False
        digits = text
    if not (digits.isdigit() and digits.isascii()):
        raise InvalidNumber(_syntax_reason(digits))
    if digits[0] == "0":
        if prefixed:
            raise InvalidNumber("country code cannot start with 0")
        raise InvalidNumber("no country code (national format? write it as +<country code>...)")
    if len(digits) > MAX_MSISDN_DIGITS:
        raise InvalidNumber(f"too long ({len(digits)} digits, at most {MAX_MSISDN_DIGITS})")
    if len(digits) < 3:
        raise InvalidNumber("too short")
    return digits


def is_valid(msisdn: str) -> bool:
    """``phonenumbers.is_valid_number(phonenumbers.parse("+" + msisdn))``, parse errors False."""
    if not (msisdn.isdigit() and msisdn.isascii()):
        # Not our normalized form: let the library judge the odd input itself.
        try:
            return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + msisdn)))
        except phonenumbers.NumberParseException:
            return False
    if fast_valid(msisdn):
        return True
    return isinstance(verdict(msisdn), str)


def check(raw: str) -> str:
    """Normalize and validate ``raw``; the canonical MSISDN, or :class:`InvalidNumber`."""
    digits = normalize(raw)
    if fast_valid(digits):
        return digits
    result = verdict(digits)
    if isinstance(result, Rejection):
        raise InvalidNumber(result.reason(digits))
    return result


def check_many(raws: Iterable[str]) -> list[str | InvalidNumber]:
    """:func:`check` of each, with failures as values instead of exceptions."""
    out: list[str | InvalidNumber] = []
    for raw in raws:
        try:
            out.append(check(raw))
        except InvalidNumber as exc:
            out.append(exc)
        except (AttributeError, TypeError):  # not a string at all
            out.append(InvalidNumber(NOT_TEXT))
    return out


def clean(digits: str) -> bool:
    """What normalize() would return unchanged."""
    return (
        digits.isdigit()
        and digits.isascii()
        and 2 < len(digits) <= MAX_MSISDN_DIGITS
        and digits[0] != "0"
    )


def region_of(msisdn: str) -> str | None:
    """The region phonenumbers assigns a valid canonical MSISDN (``"001"``: non-geographic)."""
    result = verdict(msisdn)
    if isinstance(result, Rejection):
        return result.region
    return region_for(result)


def _syntax_reason(digits: str) -> str:
    if not digits:
        return "no digits"
    if any(c.isalpha() for c in digits):
        return "not a number: contains letters"
    if "+" in digits:
        return "not a number: '+' only allowed at the start"
    bad = next(c for c in digits if not (c.isdigit() and c.isascii()))
    return f"not a number: contains {bad!r}"
