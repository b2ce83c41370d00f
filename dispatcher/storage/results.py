"""The scripts' answers as values, so that callers match on a type instead of indexing arrays.

Each script's reply is decoded in exactly one place (``scripts.py``); a field added to or
dropped from a reply changes one class here, and mypy finds every reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple


@dataclass(frozen=True, slots=True)
class Lost:
    """The lease is not the caller's any more: it must stop touching the plan at once."""


@dataclass(frozen=True, slots=True)
class Moved:
    """The head is another batch than the caller thought (``None``: the lane is empty)."""

    head: str | None


@dataclass(frozen=True, slots=True)
class Go:
    """Tokens taken and the batch marked in flight: POST ``payload`` now.

    With ``suspect`` set (the refusal, JSON) the batch is known to hold a refused recipient:
    no tokens were taken and the caller splits it instead.
    """

    payload: bytes
    n: int
    campaign: str
    fails: int
    waits: int
    suspect: str
    first_at_ms: int | None  # the first attempt; None only for a suspect never sent
    then_suspect: str  # "" or JSON {"id", "err"}: the sibling to mark if this is accepted
    next_id: str | None  # the batch after this one, for the commit to take in its round trip
    recheck: bool = False  # a number opted out since the batch was checked: filter it first
    tokens_left: float | None = None  # recipients the bucket holds after this take


@dataclass(frozen=True, slots=True)
class Wait:
    """Not enough tokens yet."""

    ms: int


@dataclass(frozen=True, slots=True)
class Cooldown:
    """The plan backs off (a 429's Retry-After, a 5xx backoff)."""

    ms: int


@dataclass(frozen=True, slots=True)
class Circuit:
    """The plan's circuit is open; the next probe is due in ``ms``."""

    ms: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """An earlier attempt's outcome is unknown: look it up before sending again."""

    first_at_ms: int | None
    campaign: str
    fails: int
    then_suspect: str


@dataclass(frozen=True, slots=True)
class Oversize:
    """More recipients than the burst: the batch can never be granted, split it.

    ``burst`` and ``batch_size`` are the plan's limits in force (a runtime ``plans set`` wins
    over the file), so the parts fit what the bucket will grant."""

    n: int
    payload: bytes
    burst: float = 0.0
    batch_size: int | None = None


@dataclass(frozen=True, slots=True)
class Paused:
    """The plan is paused: nothing is sent until ``plans resume``."""


@dataclass(frozen=True, slots=True)
class Later:
    """A window's take only (max_in_flight > 1): not as the next of the window (a batch ahead
    is not the sender's, or this one needs a lookup, a split, a park or a drop first).
    Nothing was written; the sender lets its window empty and takes the head."""


Take = Go | Wait | Cooldown | Circuit | Unknown | Oversize | Paused | Later | Moved | Lost


@dataclass(frozen=True, slots=True)
class Committed:
    """The batch left the lane; ``taken`` is the take of ``head`` when the commit was asked to
    take it in the same round trip."""

    head: str | None
    taken: Take | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """The batch stays at the head."""


@dataclass(frozen=True, slots=True)
class Split:
    """The batch was replaced by its parts; ``first`` is the new head."""

    first: str


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The batch now holds only the recipients still to send to (resuppress.lua)."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """Every recipient of the batch opted out: it left the lane; ``head`` is the next."""

    head: str | None


Resuppress = Rewritten | Dropped | Moved | Lost
Commit = Committed | Moved | Lost
Hold = Held | Moved | Lost
SplitResult = Split | Moved | Lost


@dataclass(frozen=True, slots=True)
class Leased:
    token: str


@dataclass(frozen=True, slots=True)
class Busy:
    """Another sender holds the lease for ``pttl_ms`` more (-1: without expiry)."""

    pttl_ms: int


Lease = Leased | Busy


@dataclass(frozen=True, slots=True)
class Idle:
    """What a drain with nothing to send now must know before leaving the schedule."""

    runnable: bool  # a batch is at the head (paused campaigns' markers do not count)
    paused: bool  # the plan is paused
    next_admit_ms: int | None  # when the next scheduled campaign is due (Redis ms)


ControlAnswer = Literal["ok", "already", "notpaused", "missing", "done", "canceled"]


@dataclass(frozen=True, slots=True)
class Control:
    """A campaign control script's answer; ``canceled`` recipients and batches still
    ``in_flight`` for a cancel."""

    answer: ControlAnswer
    canceled: int = 0
    in_flight: int = 0


class Grant(NamedTuple):
    """bucket.lua's answer (a tuple, so tests compare it with their model's)."""

    granted: int  # 1 | 0
    wait_ms: int  # -1: the cost is above the burst and never granted
    tokens_x1000: int


class Part(NamedTuple):
    """One part of a split batch, in lane order."""

    batch_id: str
    n: int
    payload: bytes
    suspect: str = ""  # "" or JSON refusal: the part is known to hold a refused recipient
    then_suspect: str = ""  # "" or JSON {"id", "err"}: the sibling to mark if accepted
