"""Every Redis key the dispatcher uses, in one place.

All keys of one plan carry the hash tag ``{plan}``, so a plan's scripts touch one slot and the
layout runs unchanged on Redis Cluster.  The deployment-wide keys (the schedule, the plan set,
the campaign index and the audit log) are only ever written by plain commands or by scripts of
their own, never together with a plan's keys inside one script.
"""

from __future__ import annotations

import secrets
import time

PREFIX = "dsp"

DUE = f"{PREFIX}:due"  # ZSET plan -> ms when its drain is due (the schedule)
# ZSET plan -> due time a ticker's claim set, while its drain task waits in the broker.  The
# hash tag puts it in DUE's slot: claim.lua writes both.
CLAIMED = f"{PREFIX}:claimed{{{DUE}}}"
PLANS = f"{PREFIX}:plans"  # SET of plans that ever had a campaign (metrics, sweeper)
CAMPAIGNS = f"{PREFIX}:campaigns"  # HASH campaign id -> plan id
AUDIT = f"{PREFIX}:audit"  # LIST of JSON control actions, newest first (capped)


def _p(plan: str) -> str:
    return f"{PREFIX}:{{{plan}}}"


def prefix(plan: str) -> str:
    """The plan's key prefix: scripts that reach keys named by their data (a campaign's held
    list, its record) take it as one of their KEYS, so those keys are in the plan's slot."""
    return f"{_p(plan)}:"


def lane(plan: str) -> str:
    return f"{_p(plan)}:lane"


def batch(plan: str, batch_id: str) -> str:
    return f"{_p(plan)}:b:{batch_id}"


def campaign(plan: str, campaign_id: str) -> str:
    return f"{_p(plan)}:c:{campaign_id}"


def held(plan: str, campaign_id: str) -> str:
    """A paused or scheduled campaign's batches, in order, while they are out of the lane."""
    return f"{_p(plan)}:q:{campaign_id}"


def active(plan: str) -> str:
    """ZSET campaign id -> ms it became (or becomes) due: the campaigns not finished, in lane
    order (the ETA counts the backlog ahead of a campaign from it)."""
    return f"{_p(plan)}:active"


def paused(plan: str) -> str:
    """HASH campaign id -> why it is paused ("campaign" | "failures")."""
    return f"{_p(plan)}:paused"


def scheduled(plan: str) -> str:
    """ZSET campaign id -> ms when it is due to enter the lane."""
    return f"{_p(plan)}:sched"


def suppression_version(plan: str) -> str:
    """Counter bumped whenever a number opts out where this plan sends: a batch enqueued under
    an older version is checked against the lists once more before it is posted."""
    return f"{_p(plan)}:supv"


def provider_batches(plan: str, campaign_id: str) -> str:
    """LIST of the provider's ids of the campaign's accepted batches (retention)."""
    return f"{_p(plan)}:c:{campaign_id}:pb"


def provider_batch(plan: str, provider_batch_id: str) -> str:
    """STRING provider batch id -> campaign id (retention), for delivery reports."""
    return f"{_p(plan)}:pb:{provider_batch_id}"


def lease(plan: str) -> str:
    return f"{_p(plan)}:lease"


def fence(plan: str) -> str:
    return f"{_p(plan)}:fence"


def bucket(plan: str) -> str:
    return f"{_p(plan)}:bucket"


def state(plan: str) -> str:
    return f"{_p(plan)}:state"


def stats(plan: str) -> str:
    return f"{_p(plan)}:stats"


def dlq(plan: str) -> str:
    return f"{_p(plan)}:dlq"


def dlq_entry(plan: str, entry_id: str) -> str:
    return f"{_p(plan)}:d:{entry_id}"


def new_id(prefix: str) -> str:
    """Sortable, unique, short: ms since the epoch in base 36 plus 40 random bits."""
    ms = int(time.time() * 1000)
    return f"{prefix}{_b36(ms)}{secrets.token_hex(5)}"


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"
