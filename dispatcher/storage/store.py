"""What lives in Redis, outside the send loop: campaigns in, status, dead letters, plan state.

The send loop's own writes are Lua scripts called from ``sender.py``; this module is the rest,
each operation one pipeline or one script so that it is all-or-nothing.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import redis

from dispatcher.errors import NotFound, RedisUnavailable, StorageError
from dispatcher.models import CampaignState, CampaignStatus, DeadLetter
from dispatcher.storage import keys
from dispatcher.storage.scripts import for_client

# Enqueue writes a campaign in MULTI/EXEC chunks of this many commands' worth of batches: one
# transaction keeps it all-or-nothing, chunking the pipeline keeps client memory flat.
_PIPELINE_BATCHES = 200


P = ParamSpec("P")
T = TypeVar("T")


def wraps_redis_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Redis failures leave the library as :class:`StorageError`, so that callers need not
    import ``redis`` to catch them.  The message names the failure, never the URL (it may hold
    a password)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis ({exc.__class__.__name__})") from exc
        except redis.RedisError as exc:
            raise StorageError(f"Redis failed: {exc.__class__.__name__}: {exc}") from exc

    return wrapper


@dataclass(frozen=True)
class PreparedBatch:
    batch_id: str
    recipients: int
    payload: bytes


def iso_ms(ms: str | bytes | int | None) -> str | None:
    if ms in (None, b"", ""):
        return None
    assert ms is not None
    dt = datetime.fromtimestamp(int(ms) / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Store:
    def __init__(self, client: redis.Redis, *, retention_days: float = 7.0) -> None:
        self.r = client
        self.scripts = for_client(client)
        self.retention_s = int(retention_days * 86400)

    # ---------------------------------------------------------------- enqueue
    def write_campaign(
        self,
        plan: str,
        campaign_id: str,
        record: Mapping[str, str | int | float],
        batches: Sequence[PreparedBatch],
    ) -> None:
        """Write the campaign, its batches and its lane entries in one MULTI/EXEC.

        Either every batch is in the lane (contiguous, in order, even with concurrent
        enqueues to the same plan) or, on any error, none is.
        """
        now_ms = self._now_ms()
        total = sum(b.recipients for b in batches)
        pipe = self.r.pipeline(transaction=True)
        # WATCH (on a key nobody else writes) makes redis-py raise instead of running the whole
        # transaction again when the connection drops after EXEC went out: a client with
        # retries would otherwise queue every batch twice.
        pipe.watch(keys.campaign(plan, campaign_id))  # type: ignore[no-untyped-call]
        pipe.multi()
        fields: dict[str, str | int | float] = {**record, "plan": plan, "created_at": now_ms}
        fields.update(sent=0, dead_lettered=0)
        pipe.hset(keys.campaign(plan, campaign_id), mapping=fields)  # type: ignore[arg-type]
        pipe.hset(keys.CAMPAIGNS, campaign_id, plan)
        lane = keys.lane(plan)
        ids: list[str] = []
        for b in batches:
            pipe.hset(
                keys.batch(plan, b.batch_id),
                mapping={
                    "n": b.recipients,
                    "payload": b.payload,
                    "campaign": campaign_id,
                    "enq_at": now_ms,
                },
            )
            ids.append(b.batch_id)
            if len(ids) >= _PIPELINE_BATCHES:
                pipe.rpush(lane, *ids)
                ids = []
        if ids:
            pipe.rpush(lane, *ids)
        pipe.hincrby(keys.stats(plan), "pending", total)
        pipe.hincrby(keys.stats(plan), "enqueued", total)
        pipe.sadd(keys.PLANS, plan)
        # Score 0 with LT: due at once, whatever the plan was waiting for.
        pipe.zadd(keys.DUE, {plan: 0}, lt=True)
        if not batches:
            pipe.hset(keys.campaign(plan, campaign_id), "finished_at", now_ms)
            pipe.expire(keys.campaign(plan, campaign_id), self.retention_s)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.WatchError) as exc:
            # The reply was lost: the transaction ran entirely or not at all.  Ask which, so
            # that a queued campaign is never reported as failed (and then enqueued again).
            if self.r.hexists(keys.CAMPAIGNS, campaign_id):
                return
            if isinstance(exc, redis.WatchError):
                raise redis.ConnectionError(
                    f"lost the connection to Redis while writing campaign {campaign_id}; "
                    "nothing was queued"
                ) from None
            raise

    def _now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    # ---------------------------------------------------------------- status
    def campaign_plan(self, campaign_id: str) -> str:
        plan = self.r.hget(keys.CAMPAIGNS, campaign_id)
        if plan is None:
            raise NotFound(f"no campaign {campaign_id!r} (unknown, or expired after retention)")
        return _s(plan)

    def campaign_status(self, campaign_id: str) -> CampaignStatus:
        plan = self.campaign_plan(campaign_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.campaign(plan, campaign_id))
        pipe.hmget(keys.state(plan), "circuit", "paused")
        rec, (circuit, paused) = pipe.execute()
        if not rec:
            raise NotFound(f"no campaign {campaign_id!r} (unknown, or expired after retention)")
        f = {_s(k): _s(v) for k, v in rec.items()}
        recipients, sent, dead = int(f["recipients"]), int(f["sent"]), int(f["dead_lettered"])
        state: CampaignState
        if f.get("canceled"):
            state = "canceled"
        elif sent + dead >= recipients:
            state = "done"
        elif circuit == b"open" or paused:
            state = "paused"
        elif sent + dead == 0:
            state = "queued"
        else:
            state = "sending"
        return CampaignStatus(
            campaign_id=campaign_id,
            plan=plan,
            state=state,
            recipients=recipients,
            sent=sent,
            dead_lettered=dead,
            created_at=int(f["created_at"]) / 1000 if "created_at" in f else None,
            finished_at=int(f["finished_at"]) / 1000 if "finished_at" in f else None,
        )

    # ---------------------------------------------------------------- plans
    def known_plans(self) -> list[str]:
        return sorted(_s(p) for p in self.r.smembers(keys.PLANS))

    def plan_snapshot(self, plans: Iterable[str]) -> dict[str, dict[str, str]]:
        """State and counters of each plan, read in one pipeline (CLI and metrics)."""
        plans = list(plans)
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.hgetall(keys.state(p))
            pipe.hgetall(keys.stats(p))
            pipe.lindex(keys.lane(p), 0)
        out = pipe.execute()
        heads: dict[str, str] = {}
        snap: dict[str, dict[str, str]] = {}
        for i, p in enumerate(plans):
            st, stats, head = out[3 * i : 3 * i + 3]
            merged = {f"state.{_s(k)}": _s(v) for k, v in st.items()}
            merged.update({_s(k): _s(v) for k, v in stats.items()})
            snap[p] = merged
            if head is not None:
                heads[p] = _s(head)
        if heads:
            pipe = self.r.pipeline(transaction=False)
            for p, h in heads.items():
                pipe.hget(keys.batch(p, h), "enq_at")
            pipe.time()
            *enq, (sec, usec) = pipe.execute()
            now_ms = int(sec) * 1000 + int(usec) // 1000
            for (p, _), at in zip(heads.items(), enq, strict=True):
                if at is not None:
                    snap[p]["head_age_ms"] = str(max(0, now_ms - int(at)))
        return snap

    def resume(self, plan: str) -> bool:
        """Close a plan's circuit (after the cause was fixed) and drain it at once."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(
            keys.state(plan),
            "circuit", "probe_at", "circuit_status", "circuit_code", "opened_at", "probes",
            "cooldown_until", "paused",
        )  # fmt: skip
        pipe.zadd(keys.DUE, {plan: 0}, lt=True)
        removed, _ = pipe.execute()
        return bool(removed)

    def kick(self, plan: str) -> None:
        self.r.zadd(keys.DUE, {plan: 0}, lt=True)

    # ---------------------------------------------------------------- dead letters
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
                pipe.hgetall(keys.dlq_entry(p, _s(e)))
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
        return [(plan, _s(e)) for e in self.r.lrange(keys.dlq(plan), 0, -1)]

    def replay(self, entry_id: str | None = None, *, plan: str | None = None) -> tuple[int, int]:
        """Return (entries, recipients) put back at the tail of their lanes."""
        entries = recipients = 0
        kicked: set[str] = set()
        for p, eid in self._entries(entry_id, plan):
            raw = self.r.hmget(keys.dlq_entry(p, eid), "payload", "campaign", "batch_id")
            if raw[0] is None:
                continue  # replayed or purged meanwhile
            campaign = _s(raw[1])
            new_bid = f"{_s(raw[2])}.r{secrets.token_hex(2)}"
            body = json.loads(raw[0])
            body["client_reference"] = new_bid
            payload = json.dumps(body, separators=(",", ":")).encode()
            n = self.scripts.replay(p, eid, campaign, new_bid, payload)
            if n:
                entries += 1
                recipients += n
                kicked.add(p)
        for p in kicked:
            self.kick(p)
        return entries, recipients

    def purge(self, entry_id: str | None = None, *, plan: str | None = None) -> tuple[int, int]:
        entries = recipients = 0
        for p, eid in self._entries(entry_id, plan):
            n = self.scripts.purge(p, eid)
            if n:
                entries += 1
                recipients += n
        return entries, recipients


def _dead_letter(row: Mapping[Any, Any]) -> DeadLetter:
    f = {_s(k): v for k, v in row.items()}
    payload = json.loads(f["payload"])
    status = _s(f.get("status", b""))
    return DeadLetter(
        id=_s(f["id"]),
        plan=_s(f["plan"]),
        campaign_id=_s(f.get("campaign", b"")),
        batch_id=_s(f["batch_id"]),
        recipients=[str(t).lstrip("+") for t in payload.get("to", [])],
        status=int(status) if status.isdigit() else None,
        code=_s(f.get("code", b"")),
        text=_s(f.get("text", b"")),
        reason=_s(f.get("reason", b"")),
        attempts=int(_s(f.get("fails", b"0"))) + 1,
        first_attempt_at=iso_ms(f.get("first_at")),
        last_attempt_at=iso_ms(f.get("last_at")),
    )
