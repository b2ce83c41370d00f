"""The names of the hash fields and counters, as Python and the Lua scripts both spell them.

The scripts write these fields and Python reads them (status, metrics, the CLI), so a name
that drifted on one side would read as a silent zero.  Python uses only these constants;
``tests/test_storage_boundary.py`` checks that every field name a script spells is one of
them.  Each class is one hash of ``keys``; its members are that hash's fields.
"""

from __future__ import annotations

from typing import Final


class Batch:
    """``{plan}:b:<id>``: a batch in the lane, its ready-to-POST body and its attempts."""

    N: Final = "n"  # recipients
    PAYLOAD: Final = "payload"
    CAMPAIGN: Final = "campaign"
    ENQ_AT: Final = "enq_at"  # ms
    FAILS: Final = "fails"
    WAITS: Final = "waits"
    FIRST_AT: Final = "first_at"  # ms of the first attempt
    LAST_AT: Final = "last_at"  # ms of the last attempt
    INFLIGHT: Final = "inflight"  # ms: an attempt whose outcome is not recorded yet
    SUSPECT: Final = "suspect"  # JSON refusal: holds a refused recipient, split it
    THEN_SUSPECT: Final = "then_suspect"  # JSON {"id", "err"}: mark id suspect if accepted
    LAST_STATUS: Final = "last_status"
    LAST_CODE: Final = "last_code"
    LAST_TEXT: Final = "last_text"
    REPLAYED_FROM: Final = "replayed_from"
    EXP: Final = "exp"  # ms: not posted after this (expire_at)
    CTL: Final = "ctl"  # "paused" | "canceled": came while the batch was in flight
    SV: Final = "sv"  # the plan's suppression version its recipients were checked under


class DeadLetter:
    """``{plan}:d:<entry id>``: a copy of the batch's fields plus these."""

    ID: Final = "id"
    PLAN: Final = "plan"
    BATCH_ID: Final = "batch_id"
    STATUS: Final = "status"
    CODE: Final = "code"
    TEXT: Final = "text"
    REASON: Final = "reason"
    DEAD_AT: Final = "dead_at"


class Campaign:
    """``{plan}:c:<id>``: the enqueue report and the progress counts."""

    RECIPIENTS: Final = "recipients"
    BATCHES: Final = "batches"
    DUPLICATES: Final = "duplicates"
    INVALID: Final = "invalid"
    SENDER: Final = "sender"
    ENCODING: Final = "encoding"
    MAX_PARTS: Final = "max_parts"
    TOTAL_PARTS: Final = "total_parts"
    PLAN: Final = "plan"
    CREATED_AT: Final = "created_at"
    FINISHED_AT: Final = "finished_at"
    SENT: Final = "sent"
    DEAD_LETTERED: Final = "dead_lettered"
    CANCELED: Final = "canceled"  # recipients
    CANCELED_AT: Final = "canceled_at"  # ms; set once, by the first cancel
    EXPIRED: Final = "expired"  # recipients
    SUPPRESSED: Final = "suppressed"  # recipients
    SEND_AT: Final = "send_at"  # ms
    EXPIRE_AT: Final = "expire_at"  # ms
    ADMITTED_AT: Final = "admitted_at"  # ms it entered its plan's lane (became due)
    PAUSED_BY: Final = "paused_by"
    PAUSED_AT: Final = "paused_at"  # ms


class State:
    """``{plan}:state``: why a plan is not sending now (absent fields: it is)."""

    COOLDOWN_UNTIL: Final = "cooldown_until"  # ms
    EFF_RATE: Final = "eff_rate"  # lowered after 429s, absent when whole
    CIRCUIT: Final = "circuit"  # "open" or absent
    CIRCUIT_OPEN: Final = "open"
    PROBE_AT: Final = "probe_at"  # ms
    CIRCUIT_STATUS: Final = "circuit_status"
    CIRCUIT_CODE: Final = "circuit_code"
    OPENED_AT: Final = "opened_at"
    PROBES: Final = "probes"
    PAUSED: Final = "paused"  # ms since the plan is paused (`plans pause`)
    PAUSED_BY: Final = "paused_by"  # the actor
    # Runtime limits (`plans set`): they win over the config file until `plans reset`.
    RATE: Final = "rate"
    BURST: Final = "burst"
    BATCH_SIZE: Final = "batch_size"
    RUNTIME_FIELDS: Final = (RATE, BURST, BATCH_SIZE)
    # What closes a circuit (an accepted probe, `plans resume`) deletes.
    CIRCUIT_FIELDS: Final = (CIRCUIT, PROBE_AT, CIRCUIT_STATUS, CIRCUIT_CODE, OPENED_AT, PROBES)


class Bucket:
    """``{plan}:bucket``: the token bucket."""

    TOKENS: Final = "tokens"
    TS: Final = "ts"  # µs of Redis time


class Stats:
    """``{plan}:stats``: the plan's counters (recipients unless named otherwise); the
    exporter turns them into metrics."""

    PENDING: Final = "pending"
    ENQUEUED: Final = "enqueued"
    SENT: Final = "sent"
    DEAD_LETTERED: Final = "dead_lettered"
    DLQ_PENDING: Final = "dlq_pending"
    CANCELED: Final = "canceled"
    EXPIRED: Final = "expired"
    SUPPRESSED: Final = "suppressed"  # dropped at enqueue: they opted out
    DELIVERY_PREFIX: Final = "dr:"  # dr:<final status>, recipients (delivery reports)
    CALLBACK_PREFIX: Final = "cb:"  # cb:<type>:<result>, callbacks received
    REPLAYED: Final = "replayed"
    PURGED: Final = "purged"
    RETRIES: Final = "retries"  # attempts
    RATE_WAITS: Final = "rate_waits"  # answers
    CIRCUIT_OPENED: Final = "circuit_opened"  # times
    BATCHES_ACCEPTED: Final = "batches:accepted"
    BATCHES_DEAD_LETTERED: Final = "batches:dead_lettered"
    LOOKUPS_FOUND: Final = "lookups:found"
    LOOKUPS_MISSING: Final = "lookups:missing"
    LOOKUPS_FAILED: Final = "lookups:failed"
    RESP_PREFIX: Final = "resp:"  # resp:<status>:<code>, answers
    DLQ_PREFIX: Final = "dlq:"  # dlq:<code>, recipients

    @staticmethod
    def resp(status: str, code: str) -> str:
        return f"{Stats.RESP_PREFIX}{status}:{code}"


# In ``Store.plan_snapshot``, the state fields are prefixed so they cannot meet a counter.
SNAPSHOT_STATE_PREFIX: Final = "state."
SNAPSHOT_HEAD_AGE_MS: Final = "head_age_ms"
SNAPSHOT_PAUSED_CAMPAIGNS: Final = "paused_campaigns"
