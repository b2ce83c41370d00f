"""What lives in Redis, outside the send loop: campaigns in, status, dead letters, plan state.

The send loop's own writes are the scripts (``scripts.py``) and ``lanes.py``; this module is
the rest, each operation one pipeline or one script so that it is all-or-nothing.  Every
public method raises the library's errors, never redis-py's (``base.py``), because its
callers (the facade, the exporter, the CLI) must not need to import ``redis``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from dispatcher.errors import NotFound
from dispatcher.models import DeadLetter
from dispatcher.sinch import payload as batch_body
from dispatcher.sinch.limits import format_timestamp
from dispatcher.sinch.payload import Body
from dispatcher.storage import keys
from dispatcher.storage.base import as_text, wraps_redis_errors
from dispatcher.storage.connect import is_cluster
from dispatcher.storage.fields import (
    SNAPSHOT_HEAD_AGE_MS,
    SNAPSHOT_PAUSED_CAMPAIGNS,
    SNAPSHOT_STATE_PREFIX,
    Batch,
    Campaign,
    Stats,
)
from dispatcher.storage.fields import (
    DeadLetter as Entry,
)
from dispatcher.storage.scripts import for_client

# Enqueue writes a campaign in MULTI/EXEC chunks of this many commands' worth of batches: one
# transaction keeps it all-or-nothing, chunking the pipeline keeps client memory flat.
_PIPELINE_BATCHES = 200


def iso_ms(ms: str | bytes | int | None) -> str | None:
    if ms in (None, b"", ""):
        return None
    assert ms is not None
    return format_timestamp(datetime.fromtimestamp(int(ms) / 1000, UTC))


@dataclass(frozen=True)
class _Write:
    """One campaign to write, with what decides where its batches go."""

    plan: str
    campaign_id: str
    record: Mapping[str, str | int | float]
    batches: Sequence[Body]
    now_ms: int
    send_at_ms: int | None
    expire_at_ms: int | None
    suppression_version: int

    @property
    def scheduled(self) -> bool:
        return self.send_at_ms is not None and self.send_at_ms > self.now_ms

    @property
    def due_ms(self) -> int:
        """0 (due at once, with LT whatever the plan waited for) or its send_at."""
        return self.send_at_ms if self.scheduled and self.send_at_ms is not None else 0


class Store:
    def __init__(self, client: redis.Redis, *, retention_days: float = 7.0) -> None:
        self.r = client
        self.scripts = for_client(client)
        self.retention_s = int(retention_days * 86400)

    # ---------------------------------------------------------------- enqueue
    @wraps_redis_errors
    def write_campaign(
        self,
        plan: str,
        campaign_id: str,
        record: Mapping[str, str | int | float],
        batches: Sequence[Body],
        *,
        send_at_ms: int | None = None,
        expire_at_ms: int | None = None,
        suppression_version: int = 0,
    ) -> None:
        """Write the campaign, its batches and its lane entries in one MULTI/EXEC.

        Either every batch is in the lane (contiguous, in order, even with concurrent
        enqueues to the same plan) or, on any error, none is.  A campaign whose ``send_at``
        lies ahead (Redis time) waits outside the lane, in its held list, and holds no worker:
        the plan comes due when it does, and it joins the lane's tail then.  Campaigns due
        earlier join first, so the lane's order is the order in which campaigns became due.
        """
        now_ms = self._now_ms()
        w = _Write(plan, campaign_id, record, batches, now_ms, send_at_ms, expire_at_ms,
                   suppression_version)  # fmt: skip
        if is_cluster(self.r):
            self._write_campaign_sharded(w)
            return
        pipe = self.r.pipeline(transaction=True)
        # WATCH (on a key nobody else writes) makes redis-py raise instead of running the whole
        # transaction again when the connection drops after EXEC went out: a client with
        # retries would otherwise queue every batch twice.
        pipe.watch(keys.campaign(plan, campaign_id))  # type: ignore[no-untyped-call]
        pipe.multi()
        pipe.hset(keys.CAMPAIGNS, campaign_id, plan)
        self._queue_campaign(pipe, w)
        pipe.sadd(keys.PLANS, plan)
        pipe.zadd(keys.DUE, {plan: w.due_ms}, lt=True)
        self._execute_campaign(pipe, plan, campaign_id)

    def _queue_campaign(self, pipe: Any, w: _Write) -> None:
        """The campaign's writes in its plan's slot: record, batches, lane entries (or its
        held list, when scheduled), counters."""
        plan, campaign_id, now_ms = w.plan, w.campaign_id, w.now_ms
        total = sum(b.recipients for b in w.batches)
        fields: dict[str, str | int | float] = {
            **w.record, Campaign.PLAN: plan, Campaign.CREATED_AT: now_ms, Campaign.SENT: 0,
            Campaign.DEAD_LETTERED: 0,
        }  # fmt: skip
        if w.send_at_ms is not None:
            fields[Campaign.SEND_AT] = w.send_at_ms
        if w.expire_at_ms is not None:
            fields[Campaign.EXPIRE_AT] = w.expire_at_ms
        if not w.scheduled:
            fields[Campaign.ADMITTED_AT] = now_ms
            # Scheduled campaigns already due go first: they became due before this one.
            self.scripts.admit(plan, pipe=pipe)
        pipe.hset(keys.campaign(plan, campaign_id), mapping=fields)
        lane = keys.held(plan, campaign_id) if w.scheduled else keys.lane(plan)
        ids: list[str] = []
        for b in w.batches:
            rec: dict[str, str | int | bytes] = {
                Batch.N: b.recipients, Batch.PAYLOAD: b.payload, Batch.CAMPAIGN: campaign_id,
                Batch.ENQ_AT: now_ms,
            }  # fmt: skip
            if w.expire_at_ms is not None:
                rec[Batch.EXP] = w.expire_at_ms
            if w.suppression_version:
                rec[Batch.SV] = w.suppression_version
            pipe.hset(keys.batch(plan, b.batch_id), mapping=rec)
            ids.append(b.batch_id)
            if len(ids) >= _PIPELINE_BATCHES:
                pipe.rpush(lane, *ids)
                ids = []
        if ids:
            pipe.rpush(lane, *ids)
        pipe.hincrby(keys.stats(plan), Stats.PENDING, total)
        pipe.hincrby(keys.stats(plan), Stats.ENQUEUED, total)
        suppressed = int(w.record.get(Campaign.SUPPRESSED, 0))
        if suppressed:
            pipe.hincrby(keys.stats(plan), Stats.SUPPRESSED, suppressed)
        if w.batches:
            pipe.zadd(keys.active(plan), {campaign_id: w.due_ms or now_ms})
        if w.scheduled and w.batches:
            pipe.zadd(keys.scheduled(plan), {campaign_id: w.due_ms})
        if not w.batches:
            pipe.hset(keys.campaign(plan, campaign_id), Campaign.FINISHED_AT, now_ms)
            pipe.expire(keys.campaign(plan, campaign_id), self.retention_s)

    def _execute_campaign(self, pipe: Any, plan: str, campaign_id: str) -> None:
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.WatchError) as exc:
            # The reply was lost: the transaction ran entirely or not at all.  Ask which (the
            # campaign's record is written by it, in its plan's slot), so that a queued
            # campaign is never reported as failed (and then enqueued again).
            if self.r.exists(keys.campaign(plan, campaign_id)):
                return
            if isinstance(exc, redis.WatchError):
                raise redis.ConnectionError(
                    f"lost the connection to Redis while writing campaign {campaign_id}; "
                    "nothing was queued"
                ) from None
            raise

    def _write_campaign_sharded(self, w: _Write) -> None:
        """On a Redis Cluster: the deployment-wide keys live in other slots than the plan's, so
        one MULTI cannot hold them all.  The plan's writes stay one transaction (all batches in
        the lane, contiguous, or none); the deployment-wide writes are idempotent and ordered
        so that every failure looks to the user like "nothing was queued" or "queued":

        1. the campaign index and the plan set, first: if the transaction then fails, the index
           names a campaign whose record does not exist, which ``status`` reports as unknown,
           exactly as if nothing had been written (the stale entry is removed, best effort);
        2. the plan's transaction: from here on the campaign is queued;
        3. the schedule: if this write is lost, the ticker's sweep (every ``sweep_s``) finds a
           plan of the plan set with queued batches and no due time, and schedules it.
        """
        plan, campaign_id = w.plan, w.campaign_id
        self.r.hset(keys.CAMPAIGNS, campaign_id, plan)
        self.r.sadd(keys.PLANS, plan)
        pipe = self.r.pipeline(transaction=True)
        pipe.watch(keys.campaign(plan, campaign_id))  # type: ignore[no-untyped-call]
        pipe.multi()
        self._queue_campaign(pipe, w)
        try:
            self._execute_campaign(pipe, plan, campaign_id)
        except redis.RedisError:
            with contextlib.suppress(redis.RedisError):
                self.r.hdel(keys.CAMPAIGNS, campaign_id)
            raise
        with contextlib.suppress(redis.RedisError):
            self.r.zadd(keys.DUE, {plan: w.due_ms}, lt=True)

    def _now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    # ---------------------------------------------------------------- plans
    @wraps_redis_errors
    def known_plans(self) -> list[str]:
        return sorted(as_text(p) for p in self.r.smembers(keys.PLANS))

    @wraps_redis_errors
    def plan_snapshot(self, plans: Iterable[str]) -> dict[str, dict[str, str]]:
        """State and counters of each plan, read in one pipeline (CLI and metrics)."""
        plans = list(plans)
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.hgetall(keys.state(p))
            pipe.hgetall(keys.stats(p))
            pipe.lindex(keys.lane(p), 0)
            pipe.hlen(keys.paused(p))
        out = pipe.execute()
        heads: dict[str, str] = {}
        snap: dict[str, dict[str, str]] = {}
        for i, p in enumerate(plans):
            st, stats, head, paused = out[4 * i : 4 * i + 4]
            merged = {f"{SNAPSHOT_STATE_PREFIX}{as_text(k)}": as_text(v) for k, v in st.items()}
            merged.update({as_text(k): as_text(v) for k, v in stats.items()})
            merged[SNAPSHOT_PAUSED_CAMPAIGNS] = str(paused)
            snap[p] = merged
            # A paused campaign's marker at the head has no enqueue time: no age sample.
            if head is not None and not head.startswith(b"#"):
                heads[p] = as_text(head)
        if heads:
            pipe = self.r.pipeline(transaction=False)
            for p, h in heads.items():
                pipe.hget(keys.batch(p, h), Batch.ENQ_AT)
            if is_cluster(self.r):  # a cluster pipeline refuses TIME (it has no one node)
                enq, now_ms = pipe.execute(), self._now_ms()
            else:
                pipe.time()
                *enq, (sec, usec) = pipe.execute()
                now_ms = int(sec) * 1000 + int(usec) // 1000
            for (p, _), at in zip(heads.items(), enq, strict=True):
                if at is not None:
                    snap[p][SNAPSHOT_HEAD_AGE_MS] = str(max(0, now_ms - int(at)))
        return snap

    @wraps_redis_errors
    def kick(self, plan: str) -> None:
        self.r.zadd(keys.DUE, {plan: 0}, lt=True)

    # ---------------------------------------------------------------- dead letters
    @wraps_redis_errors
    def dead_letters(self, plan: str | None = None) -> list[DeadLetter]:
        plans = [plan] if plan else self.known_plans()
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.lrange(keys.dlq(p), 0, -1)
        ids = pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        wanted: list[str] = []
        for p, entry_ids in zip(plans, ids, strict=True):
            for e in entry_ids:
                pipe.hgetall(keys.dlq_entry(p, as_text(e)))
                wanted.append(p)
        rows = pipe.execute() if wanted else []
        return [_dead_letter(row) for row in rows if row]

    def _find_entry(self, entry_id: str) -> str:
        plans = self.known_plans()
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.exists(keys.dlq_entry(p, entry_id))
        for p, found in zip(plans, pipe.execute(), strict=True):
            if found:
                return p
        raise NotFound(f"no dead letter {entry_id!r}")

    @wraps_redis_errors
    def dead_letter(self, entry_id: str) -> DeadLetter:
        plan = self._find_entry(entry_id)
        row = self.r.hgetall(keys.dlq_entry(plan, entry_id))
        if not row:
            raise NotFound(f"no dead letter {entry_id!r}")
        return _dead_letter(row)

    def _entries(self, entry_id: str | None, plan: str | None) -> list[tuple[str, str]]:
        if entry_id:
            return [(self._find_entry(entry_id), entry_id)]
        assert plan
        return [(plan, as_text(e)) for e in self.r.lrange(keys.dlq(plan), 0, -1)]

    @wraps_redis_errors
    def replay(self, entry_id: str | None = None, *, plan: str | None = None) -> tuple[int, int]:
        """Return (entries, recipients) put back at the tail of their lanes."""
        entries = recipients = 0
        kicked: set[str] = set()
        for p, eid in self._entries(entry_id, plan):
            raw = self.r.hmget(
                keys.dlq_entry(p, eid), Batch.PAYLOAD, Batch.CAMPAIGN, Entry.BATCH_ID
            )
            if raw[0] is None:
                continue  # replayed or purged meanwhile
            campaign = as_text(raw[1])
            new_bid = f"{as_text(raw[2])}.r{secrets.token_hex(2)}"
            payload = batch_body.rereference(raw[0], new_bid)
            n = self.scripts.replay(p, eid, campaign, new_bid, payload)
            if n:
                entries += 1
                recipients += n
                kicked.add(p)
        for p in kicked:
            self.kick(p)
        return entries, recipients

    @wraps_redis_errors
    def purge(self, entry_id: str | None = None, *, plan: str | None = None) -> tuple[int, int]:
        entries = recipients = 0
        for p, eid in self._entries(entry_id, plan):
            n = self.scripts.purge(p, eid)
            if n:
                entries += 1
                recipients += n
        return entries, recipients


def _dead_letter(row: Mapping[Any, Any]) -> DeadLetter:
    f = {as_text(k): v for k, v in row.items()}
    status = as_text(f.get(Entry.STATUS, b""))
    return DeadLetter(
        id=as_text(f[Entry.ID]),
        plan=as_text(f[Entry.PLAN]),
        campaign_id=as_text(f.get(Batch.CAMPAIGN, b"")),
        batch_id=as_text(f[Entry.BATCH_ID]),
        recipients=batch_body.recipients(f[Batch.PAYLOAD]),
        status=int(status) if status.isdigit() else None,
        code=as_text(f.get(Entry.CODE, b"")),
        text=as_text(f.get(Entry.TEXT, b"")),
        reason=as_text(f.get(Entry.REASON, b"")),
        attempts=int(as_text(f.get(Batch.FAILS, b"0"))) + 1,
        first_attempt_at=iso_ms(f.get(Batch.FIRST_AT)),
        last_attempt_at=iso_ms(f.get(Batch.LAST_AT)),
    )
