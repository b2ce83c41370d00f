"""The simulator's public data types: a service plan, and one arrival in the provider's log."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Final

_PLAN_ID_RE: Final = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


@dataclass
class PlanSpec:
    """A service plan as the simulator knows it.

    ``burst`` defaults to ``rate`` but at least 1 (the project's contract), because a bucket
    smaller than one recipient could never accept any batch.
    """

    plan_id: str
    token: str = field(repr=False)
    rate: float
    burst: float | None = None

    def __post_init__(self) -> None:
        if not _PLAN_ID_RE.match(self.plan_id):
            raise ValueError(
                f"plan id {self.plan_id!r} must be 1-128 characters of letters, digits, . _ ~ -"
            )
        if not self.token:
            raise ValueError(f"plan {self.plan_id}: the token is empty")
        self.rate = float(self.rate)
        if not math.isfinite(self.rate):
            raise ValueError(f"plan {self.plan_id}: rate must be a finite number")
        if self.burst is not None:
            self.burst = float(self.burst)
            if not math.isfinite(self.burst) or self.burst <= 0:
                raise ValueError(f"plan {self.plan_id}: burst must be a number > 0")

    @property
    def effective_burst(self) -> float:
        if self.burst is not None:
            return self.burst
        return max(self.rate, 1.0)


def parse_plan(spec: str) -> PlanSpec:
    """Parse the CLI form ``ID:TOKEN:RATE`` (optionally ``:BURST``).

    Error messages name the plan id but never echo the spec, which holds the token.
    """
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(
            "plan must be ID:TOKEN:RATE[:BURST], e.g. acme:secret:30 (a token may not contain ':')"
        )
    plan_id, token, rate_s = parts[0].strip(), parts[1], parts[2].strip()
    if not plan_id:
        raise ValueError("plan must be ID:TOKEN:RATE[:BURST]: the id is empty")
    try:
        rate = float(rate_s)
    except ValueError:
        raise ValueError(f"plan {plan_id}: rate {rate_s!r} is not a number") from None
    burst: float | None = None
    if len(parts) == 4:
        try:
            burst = float(parts[3].strip())
        except ValueError:
            raise ValueError(f"plan {plan_id}: burst {parts[3]!r} is not a number") from None
    return PlanSpec(plan_id, token, rate, burst)


def rate_text(spec: PlanSpec) -> str:
    """The plan's limit for humans: in the startup line and in 429 texts."""
    if spec.rate <= 0:
        return "no rate limit"
    return f"{spec.rate:g}/s, burst {spec.effective_burst:g}"


@dataclass(frozen=True)
class Arrival:
    """One POST /batches as the provider saw it: the raw material of the outside checks."""

    t: float
    plan: str
    client_reference: str | None
    to: tuple[str, ...]
    status: int
    code: str | None
    batch_id: str | None
    dropped: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "plan": self.plan,
            "client_reference": self.client_reference,
            "to": list(self.to),
            "status": self.status,
            "code": self.code,
            "batch_id": self.batch_id,
            "dropped": self.dropped,
        }
