"""``send_at`` and ``expire_at``: checked and normalized before anything is queued.

A schedule the API would refuse (expiry before the send time, more than three days after it)
would fail every batch of the campaign; one readable line at enqueue is better.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dispatcher.campaign.quoting import quote
from dispatcher.errors import CampaignError
from dispatcher.sinch.limits import MAX_EXPIRY, format_timestamp

__all__ = ["validate_schedule"]


def validate_schedule(
    send_at: str | None, expire_at: str | None, *, now: datetime | None = None
) -> tuple[str | None, str | None]:
    """Normalized ``(send_at, expire_at)`` in the API's form ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    A send_at in the past is kept (the API sends at once, API.md 1.1); an expire_at must lie
    in the future, after send_at and at most three days after it (or after now, if there is
    no send_at).  No offset means UTC (seed 003).
    """
    current = _as_utc(now) if now is not None else datetime.now(UTC)
    start = _parse_time("send_at", send_at)
    end = _parse_time("expire_at", expire_at)
    if end is not None:
        if end <= current:
            raise CampaignError(f"expire_at {format_timestamp(end)} is in the past")
        reference = start if start is not None else current
        if start is not None and end <= start:
            raise CampaignError(
                f"expire_at {format_timestamp(end)} is not after send_at {format_timestamp(start)}"
            )
        if end - reference > MAX_EXPIRY:
            what = "send_at" if start is not None else "now"
            raise CampaignError(
                f"expire_at {format_timestamp(end)} is more than 3 days after {what} "
                f"{format_timestamp(reference)}"
            )
    return (
        None if start is None else format_timestamp(start),
        None if end is None else format_timestamp(end),
    )


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CampaignError(
            f"{name} {quote(text)} is not an ISO-8601 timestamp "
            "(e.g. 2025-01-31T09:00:00Z or 2025-01-31T10:00:00+01:00)"
        ) from None
    return _as_utc(parsed)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
