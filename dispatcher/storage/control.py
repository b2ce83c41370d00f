"""Operators' control of running work: pause, resume and cancel campaigns; pause plans and
change their limits at runtime; and the audit log of every such action.

Each campaign action is one script (``pause.lua``, ``resume.lua``, ``cancel.lua``), so two
operators acting on one campaign at the same moment are serialized by Redis and leave one
consistent state.  A plan's runtime limits live in its state hash, which the take step reads
on every batch: a change applies to every worker at its next batch, without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from dispatcher.models import AuditEntry
from dispatcher.storage import keys
from dispatcher.storage.base import as_text, wraps_redis_errors
from dispatcher.storage.connect import is_cluster
from dispatcher.storage.fields import State
from dispatcher.storage.results import Control as ControlResult
from dispatcher.storage.results import ControlAnswer
from dispatcher.storage.scripts import for_client

# The audit log keeps this many actions (newest first); older ones fall off.
AUDIT_KEEP = 10_000


class Control:
    def __init__(self, client: redis.Redis, *, retention_s: int) -> None:
        self.r = client
        self.scripts = for_client(client)
        self.retention_s = retention_s

    # ------------------------------------------------------------ campaigns
    @wraps_redis_errors
    def pause(
        self, plan: str, campaign_id: str, actor: str, reason: str = "campaign"
    ) -> ControlAnswer:
        answer = self.scripts.pause(plan, campaign_id, reason)
        if answer in ("ok", "already"):
            self.record(
                "campaign.pause", campaign_id, actor, plan=plan, result=answer, reason=reason
            )
        return answer

    @wraps_redis_errors
    def resume(self, plan: str, campaign_id: str, actor: str) -> ControlAnswer:
        answer = self.scripts.resume(plan, campaign_id)
        if answer in ("ok", "notpaused"):
            self.record("campaign.resume", campaign_id, actor, plan=plan, result=answer)
            self.r.zadd(keys.DUE, {plan: 0}, lt=True)
        return answer

    @wraps_redis_errors
    def cancel(self, plan: str, campaign_id: str, actor: str) -> ControlResult:
        result = self.scripts.cancel(plan, campaign_id, self.retention_s)
        if result.answer in ("ok", "already"):
            self.record(
                "campaign.cancel", campaign_id, actor, plan=plan, result=result.answer,
                canceled=result.canceled, in_flight=result.in_flight,
            )  # fmt: skip
        return result

    @wraps_redis_errors
    def provider_batches(self, plan: str, campaign_id: str) -> list[str]:
        """The provider's ids of the campaign's accepted batches (kept for the retention)."""
        return [as_text(b) for b in self.r.lrange(keys.provider_batches(plan, campaign_id), 0, -1)]

    # ------------------------------------------------------------ plans
    @wraps_redis_errors
    def pause_plan(self, plan: str, actor: str) -> bool:
        """True if the plan was running; its drain stops at its next batch."""
        pipe = self.r.pipeline(transaction=not is_cluster(self.r))
        pipe.hsetnx(keys.state(plan), State.PAUSED, self._now_ms())
        pipe.hset(keys.state(plan), State.PAUSED_BY, actor)
        pipe.sadd(keys.PLANS, plan)
        changed, *_ = pipe.execute()
        self.record("plan.pause", plan, actor, result="ok" if changed else "already")
        return bool(changed)

    @wraps_redis_errors
    def resume_plan(self, plan: str, actor: str) -> bool:
        """Unpause the plan and close its circuit; True if it was paused or open."""
        pipe = self.r.pipeline(transaction=not is_cluster(self.r))
        pipe.hdel(
            keys.state(plan), *State.CIRCUIT_FIELDS, State.COOLDOWN_UNTIL, State.PAUSED,
            State.PAUSED_BY,
        )  # fmt: skip
        pipe.zadd(keys.DUE, {plan: 0}, lt=True)
        removed, _ = pipe.execute()
        self.record("plan.resume", plan, actor, result="ok" if removed else "notpaused")
        return bool(removed)

    @wraps_redis_errors
    def set_plan(self, plan: str, values: Mapping[str, float | int], actor: str) -> None:
        """Runtime limits, already validated against the plan's config by the caller.  (On a
        cluster the plan's state and the schedule are two slots: no MULTI, each write is
        idempotent, and the ticker's sweep restores a lost schedule.)"""
        pipe = self.r.pipeline(transaction=not is_cluster(self.r))
        pipe.hset(keys.state(plan), mapping={k: repr(v) for k, v in values.items()})
        pipe.sadd(keys.PLANS, plan)
        # Due at once: a drain that waits for tokens at the old rate looks again now.
        pipe.zadd(keys.DUE, {plan: 0}, lt=True)
        pipe.execute()
        self.record("plan.set", plan, actor, **dict(values))

    @wraps_redis_errors
    def reset_plan(self, plan: str, actor: str) -> bool:
        pipe = self.r.pipeline(transaction=not is_cluster(self.r))
        pipe.hdel(keys.state(plan), *State.RUNTIME_FIELDS)
        pipe.zadd(keys.DUE, {plan: 0}, lt=True)
        removed, _ = pipe.execute()
        self.record("plan.reset", plan, actor, result="ok" if removed else "unchanged")
        return bool(removed)

    @wraps_redis_errors
    def runtime(self, plan: str) -> dict[str, float]:
        vals = self.r.hmget(keys.state(plan), *State.RUNTIME_FIELDS)
        return {k: float(v) for k, v in zip(State.RUNTIME_FIELDS, vals, strict=True) if v}

    # ------------------------------------------------------------ audit
    def record(self, action: str, target: str, actor: str, **detail: Any) -> None:
        entry = {
            "at": _iso_now(), "action": action, "target": target, "actor": actor,
            "detail": detail,
        }  # fmt: skip
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(keys.AUDIT, json.dumps(entry, sort_keys=True))
        pipe.ltrim(keys.AUDIT, 0, AUDIT_KEEP - 1)
        pipe.execute()

    @wraps_redis_errors
    def audit(self, limit: int = 100) -> list[AuditEntry]:
        rows = self.r.lrange(keys.AUDIT, 0, max(0, limit - 1))
        return [AuditEntry(**json.loads(row)) for row in rows]

    def _now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000


def _iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
