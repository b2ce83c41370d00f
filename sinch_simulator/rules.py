"""The provider's rules, as the simulator applies them: an independent oracle, ON PURPOSE.

The dispatcher has its own versions of several of these rules (MSISDN normalization in
``dispatcher.numbers``, GSM-7 part counting and the body limit in ``dispatcher.encoding``,
placeholders in ``dispatcher.template``, other limits in ``dispatcher.config`` and
``dispatcher.validation``).  The copies here are deliberately separate: they were written from
the provider documents in ``../shared/seeds/`` (000 and 001: status codes and error codes; 003:
MSISDN format, timestamps, encodings, parameterization) and ``../shared/sinch/API.md`` (field
limits, §1.1, §2, §3.3), not from the dispatcher's code.  A test that checks the dispatcher
against the simulator only means something if a mistake in one cannot be inherited by the
other, so this package must never import from ``dispatcher`` (tests/test_simulator_independence.py
checks that), and a fix to a rule belongs in both places, each made from the documents.
"""

from __future__ import annotations

import base64
import math
import random
import re
from datetime import UTC, datetime
from typing import Final

# Limits of the current API (shared/sinch/API.md §1.1, §2, §3.3).
MAX_RECIPIENTS: Final = 1000
MAX_BODY_CHARS: Final = 2000
MAX_CLIENT_REFERENCE: Final = 2048
MAX_CALLBACK_URL: Final = 2048
MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 30
MAX_EXPIRY_S: Final = 3 * 24 * 3600
DEFAULT_LIST_WINDOW_S: Final = 24 * 3600
DELIVERY_REPORTS: Final = frozenset(
    {"none", "summary", "full", "per_recipient", "per_recipient_final"}
)

# A parameter placeholder in a body: ``${name}`` (seed 003, parameterization).
PARAM_RE: Final = re.compile(r"\$\{([^}]*)\}")

_MSISDN_IGNORED: Final = str.maketrans("", "", " \t-()[]")
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32HEX_TO_CROCKFORD: Final = str.maketrans("0123456789ABCDEFGHIJKLMNOPQRSTUV", _CROCKFORD)

# GSM 03.38 default alphabet (ESC excluded: it cannot be sent on its own) and the extension
# table, whose characters take two septets.
_GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION: Final = frozenset("\f^{}\\[~]|€")


def normalize_msisdn(raw: str) -> str | None:
    """The API's MSISDN rule (seed 003): optional '+' or '00', spaces/dashes/brackets ignored.

    Returns the digits the API would echo back, or None when the value is not an MSISDN.
    """
    # Clean numbers first (every request of a benchmark, 1,000 per batch): without an ignored
    # character, the rule below changes nothing but the prefix.  Any other value, digits
    # after the prefix or not, takes the whole rule.
    s = raw[1:] if raw[:1] == "+" else raw[2:] if raw[:2] == "00" else raw
    if 1 <= len(s) <= 15 and s.isascii() and s.isdigit():
        return s
    s = raw.translate(_MSISDN_IGNORED)
    if s.startswith("+"):
        s = s[1:]
    elif s.startswith("00"):
        s = s[2:]
    if 1 <= len(s) <= 15 and s.isascii() and s.isdigit():
        return s
    return None


def count_parts(text: str) -> tuple[str, int]:
    """Encoding ("GSM" or "UNICODE") and SMS part count: 160/153 septets or 70/67 units.

    Approximate on purpose: real segmentation never splits an escape sequence or a surrogate
    pair across parts, which can add a part near the boundaries.
    """
    septets = 0
    for ch in text:
        if ch in _GSM_BASIC:
            septets += 1
        elif ch in _GSM_EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return "UNICODE", 1 if units <= 70 else math.ceil(units / 67)
    return "GSM", 1 if septets <= 160 else math.ceil(septets / 153)


_iso_cache: tuple[int, str] = (-1, "")


def iso_ms(t: float) -> str:
    """UTC, millisecond precision, 'Z': the form every timestamp the API returns has."""
    global _iso_cache
    ms = int(t * 1000)
    sec = ms // 1000
    cached = _iso_cache
    if cached[0] != sec:
        cached = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
        _iso_cache = cached
    return f"{cached[1]}{ms % 1000:03d}Z"


def parse_iso(value: str) -> float | None:
    """ISO-8601 to epoch seconds; no offset means UTC (seed 003)."""
    try:
        d = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def new_batch_id(t: float, rng: random.Random) -> str:
    """A ULID (48-bit ms time, 80 random bits, Crockford base32) like real batch ids."""
    n = (int(t * 1000) << 80) | rng.getrandbits(80)
    # 160 bits encode to 32 base32 characters; the first 6 stand for the 30 zero bits above
    # the ULID's 130.  b32hexencode does the work in C; translate maps its alphabet to
    # Crockford's.
    return base64.b32hexencode(n.to_bytes(20, "big"))[6:].decode().translate(_B32HEX_TO_CROCKFORD)
