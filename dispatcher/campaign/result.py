"""What enqueue learns about a campaign: the one value ``prepare`` returns.

Its own module because both the plain path (:mod:`prepare`) and the parameterized one
(:mod:`parameters`) build it, and neither should import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dispatcher.errors import InvalidNumber
from dispatcher.models import InvalidRecipient

__all__ = ["Prepared", "invalid_entry"]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated campaign, ready to be cut into batches.

    The part figures cover the recipients that go out (all 0 when none do); ``encoding`` is
    the body's own when no recipient goes out.
    """

    recipients: list[str]
    invalid: list[InvalidRecipient]
    duplicates: int
    parameters: dict[str, dict[str, str]] | None
    encoding: Literal["GSM-7", "UCS-2"]
    max_parts: int
    total_parts: int
    min_parts: int


def invalid_entry(raw: object, result: object) -> InvalidRecipient:
    """The report of one entry that is not sent to: ``to`` as given (repr if not text)."""
    reason = result.reason if isinstance(result, InvalidNumber) else str(result)
    return InvalidRecipient(raw if isinstance(raw, str) else repr(raw), reason)
