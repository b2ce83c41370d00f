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

    def without(self, dropped: set[str]) -> Prepared:
        """The campaign minus numbers that opted out (found after validation, at enqueue).

        Parts are exact when every recipient's text has the same length (no parameters, or
        parameters that do not change it), else pro rata."""
        kept = [r for r in self.recipients if r not in dropped]
        params = (
            {
                k: {n: v for n, v in m.items() if n not in dropped}
                for k, m in self.parameters.items()
            }
            if self.parameters
            else self.parameters
        )
        n, total = len(self.recipients), len(kept)
        parts = (
            self.max_parts * total
            if self.min_parts == self.max_parts
            else round(self.total_parts * total / n)
            if n
            else 0
        )
        return Prepared(
            kept, self.invalid, self.duplicates, params, self.encoding,
            self.max_parts if kept else 0, parts, self.min_parts if kept else 0,
        )  # fmt: skip


def invalid_entry(raw: object, result: object) -> InvalidRecipient:
    """The report of one entry that is not sent to: ``to`` as given (repr if not text)."""
    reason = result.reason if isinstance(result, InvalidNumber) else str(result)
    return InvalidRecipient(raw if isinstance(raw, str) else repr(raw), reason)
