"""The originator (the API's ``from``): what the recipient's handset shows as the sender.

A bad one is refused for the whole campaign, so it is checked once at enqueue and turned into
the form the API expects.  (The Python field and the CLI option stay ``sender`` and
``--from``: those are public; inside the code "sender" means the drain engine.)
"""

from __future__ import annotations

from typing import Final

from dispatcher.campaign.msisdn import check
from dispatcher.campaign.quoting import quote
from dispatcher.errors import CampaignError, InvalidNumber

__all__ = ["validate_originator"]

_ALPHA_MAX: Final = 11
_SHORT_CODE: Final = range(3, 9)
# ASCII letters and digits plus punctuation that carriers generally pass through in an
# alphanumeric originator (GSM 03.38 default alphabet, without characters that are commonly
# rewritten or refused such as '@', '$', '_' or the extension table).
_ALPHA_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 &-.'!?,+"
)
_NUMERIC_CHARS: Final = frozenset("0123456789+-.()[] ")


def validate_originator(sender: str) -> str:
    """The ``from`` to send: canonical MSISDN, short code, or alphanumeric name.

    A sender made only of number characters is a phone number if it validates as one (written
    with ``+``/``00`` it must), otherwise a short code of 3-8 digits; anything with a letter is
    an alphanumeric sender of at most 11 characters.
    """
    text = sender.strip() if isinstance(sender, str) else ""
    if not text:
        raise CampaignError("sender is empty")
    if set(text) <= _NUMERIC_CHARS:
        try:
            return check(text)
        except InvalidNumber as exc:
            digits = "".join(c for c in text if c.isdigit())
            international = text.startswith(("+", "00"))
            if not international and len(digits) in _SHORT_CODE and digits == text:
                return digits
            raise CampaignError(
                f"sender {quote(sender)} is not a valid phone number ({exc.reason}) "
                f"nor a short code (3-8 digits)"
            ) from None
    if len(text) > _ALPHA_MAX:
        raise CampaignError(
            f"sender {quote(sender)} is {len(text)} characters long; an alphanumeric "
            f"sender has at most {_ALPHA_MAX}"
        )
    bad = sorted(set(text) - _ALPHA_CHARS)
    if bad:
        raise CampaignError(
            f"sender {quote(sender)} contains {', '.join(repr(c) for c in bad)}; use letters, "
            "digits, space and & - . ' ! ? , +"
        )
    if not any(c.isalpha() for c in text):
        raise CampaignError(f"sender {quote(sender)} is neither a phone number nor a name")
    return text
