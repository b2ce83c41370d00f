"""What the SMS REST API accepts (seed 003, API.md 1.1), as constants.

A campaign that breaks one of these would be refused by the provider batch by batch, long
after enqueue said yes; so enqueue checks them up front, and the plan configuration refuses
a batch size the API would refuse.  Kept free of imports beyond the standard library so that
the pure campaign checks can depend on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

__all__ = [
    "MAX_BATCH_RECIPIENTS",
    "MAX_BODY_CHARS",
    "MAX_EXPIRY",
    "MAX_MSISDN_DIGITS",
    "format_timestamp",
]

MAX_BATCH_RECIPIENTS: Final = 1000
"""Recipients (``to`` entries) in one batch request."""

MAX_BODY_CHARS: Final = 2000
"""Characters of ``body``, counted as UTF-16 code units (``campaign.encoding.body_length``)."""

MAX_EXPIRY: Final = timedelta(days=3)
"""``expire_at`` may be at most this long after ``send_at`` (or after now, without one)."""

MAX_MSISDN_DIGITS: Final = 15
"""E.164's maximum length of a number, country code included (the API's MSISDN rule)."""


def format_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ``: the API writes its timestamps this way, so ours match.

    ``moment`` must be in UTC already (the ``Z`` is written, not computed): every caller
    holds a UTC datetime, and converting here would hide a caller's mistake.
    """
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
