"""The values users hand to the dispatcher and get back from it.

Field names follow CONTRACT.md (the ``--json`` shapes), so ``to_json()`` is the CLI's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

CampaignState = Literal["scheduled", "queued", "sending", "paused", "done", "canceled"]
PausedBy = Literal["campaign", "plan", "circuit", "failures"]
CAMPAIGN_STATES: tuple[CampaignState, ...] = (
    "scheduled", "queued", "sending", "paused", "done", "canceled",
)  # fmt: skip
# Recipients' final statuses in delivery reports (CONTRACT.md), each recipient counted once.
DELIVERY_STATUSES = (
    "delivered", "failed", "expired", "rejected", "deleted", "aborted", "cancelled", "unknown",
)  # fmt: skip


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
    suppressed: int

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
        suppressed: int = 0,
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
        self.suppressed = suppressed
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "recipients": self.recipients,
            "batches": self.batches,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "invalid": [asdict(i) for i in self.invalid],
            "encoding": self.encoding,
            "max_parts": self.max_parts,
            "total_parts": self.total_parts,
        }


@dataclass(frozen=True)
class CampaignStatus:
    """Where a campaign stands.  Times are Unix seconds (ISO-8601 in ``to_json``)."""

    campaign_id: str
    plan: str
    state: CampaignState
    recipients: int
    sent: int
    dead_lettered: int
    canceled: int = 0
    expired: int = 0
    suppressed: int = 0
    created_at: float | None = None
    finished_at: float | None = None
    send_at: float | None = None
    eta_s: float | None = None
    paused_by: PausedBy | None = None
    delivery: Mapping[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return (
            self.recipients - self.sent - self.dead_lettered - self.canceled - self.expired
            - self.suppressed
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "plan": self.plan,
            "state": self.state,
            "paused_by": self.paused_by,
            "recipients": self.recipients,
            "sent": self.sent,
            "dead_lettered": self.dead_lettered,
            "canceled": self.canceled,
            "expired": self.expired,
            "suppressed": self.suppressed,
            "pending": self.pending,
            "created_at": _iso(self.created_at),
            "send_at": _iso(self.send_at),
            "finished_at": _iso(self.finished_at),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "delivery": {s: int(self.delivery.get(s, 0)) for s in DELIVERY_STATUSES},
        }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AuditEntry:
    """One control action: who did what to which campaign or plan, and when."""

    at: str  # ISO-8601 UTC
    action: str
    target: str
    actor: str
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    batch_size: int = 0
    paused: bool = False
    source: Literal["config", "runtime"] = "config"  # "runtime": some value is a `plans set`
    sources: Mapping[str, Literal["config", "runtime"]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "rate": self.rate,
            "effective_rate": self.effective_rate,
            "burst": self.burst,
            "batch_size": self.batch_size,
            "pending": self.pending,
            "circuit": self.circuit,
            "circuit_code": self.circuit_code,
            "dead_letters": self.dead_letters,
            "paused": self.paused,
            "source": self.source,
            "sources": dict(self.sources),
        }
