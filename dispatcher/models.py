"""The values users hand to the dispatcher and get back from it.

Field names follow CONTRACT.md (the ``--json`` shapes), so ``to_json()`` is the CLI's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

CampaignState = Literal["queued", "sending", "paused", "done", "canceled"]


@dataclass(frozen=True)
class Campaign:
    """One body from one sender to many recipients through one plan.

    ``parameters`` maps a placeholder key to ``{msisdn: value, ..., "default": value}`` as in
    the provider's API; the numbers may be written in any form the API accepts.
    """

    plan: str
    sender: str
    body: str
    recipients: Sequence[str]
    parameters: Mapping[str, Mapping[str, str]] | None = None
    send_at: str | None = None
    expire_at: str | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class InvalidRecipient:
    """A recipient that will not be sent to; ``to`` exactly as the user gave it."""

    to: str
    reason: str


class EnqueueResult(str):
    """The new campaign's id (it *is* the id string), with what enqueue found on the way.

    ``campaign_id = d.enqueue(...)`` keeps working as in CONTRACT.md, and callers who care
    can read ``result.invalid`` or ``result.duplicates`` from the same value.
    """

    campaign_id: str
    recipients: int
    batches: int
    duplicates: int
    invalid: list[InvalidRecipient]
    encoding: str
    max_parts: int
    total_parts: int

    def __new__(
        cls,
        campaign_id: str,
        *,
        recipients: int,
        batches: int,
        duplicates: int,
        invalid: list[InvalidRecipient],
        encoding: str = "GSM-7",
        max_parts: int = 1,
        total_parts: int = 0,
    ) -> EnqueueResult:
        self = super().__new__(cls, campaign_id)
        self.campaign_id = campaign_id
        self.recipients = recipients
        self.batches = batches
        self.duplicates = duplicates
        self.invalid = invalid
        self.encoding = encoding
        self.max_parts = max_parts
        self.total_parts = total_parts
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "recipients": self.recipients,
            "batches": self.batches,
            "duplicates": self.duplicates,
            "invalid": [asdict(i) for i in self.invalid],
            "encoding": self.encoding,
            "max_parts": self.max_parts,
            "total_parts": self.total_parts,
        }


@dataclass(frozen=True)
class CampaignStatus:
    campaign_id: str
    plan: str
    state: CampaignState
    recipients: int
    sent: int
    dead_lettered: int
    created_at: float | None = None
    finished_at: float | None = None

    @property
    def pending(self) -> int:
        return self.recipients - self.sent - self.dead_lettered

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "plan": self.plan,
            "state": self.state,
            "recipients": self.recipients,
            "sent": self.sent,
            "dead_lettered": self.dead_lettered,
            "pending": self.pending,
        }


@dataclass(frozen=True)
class DeadLetter:
    id: str
    plan: str
    campaign_id: str
    batch_id: str
    recipients: list[str]
    status: int | None
    code: str
    text: str
    reason: str
    attempts: int
    first_attempt_at: str | None
    last_attempt_at: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlanStatus:
    plan: str
    rate: float
    effective_rate: float
    burst: float
    pending: int
    circuit: Literal["closed", "open"]
    circuit_code: str | None = None
    next_probe_in_s: float | None = None
    dead_letters: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "rate": self.rate,
            "effective_rate": self.effective_rate,
            "burst": self.burst,
            "pending": self.pending,
            "circuit": self.circuit,
            "circuit_code": self.circuit_code,
            "dead_letters": self.dead_letters,
        }
