"""Reading campaigns: one campaign's status, or the list, each with its progress and ETA.

A campaign's state is derived, never stored: from its counts, its plan's state (paused, the
circuit) and whether it waits in the paused or the scheduled set.  The ETA counts the
recipients still pending in the campaigns ahead of it in its plan's lane (the plan's active
set, ordered by the time each became due) at the rate in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher.errors import NotFound
from dispatcher.models import DELIVERY_STATUSES, CampaignState, CampaignStatus, PausedBy
from dispatcher.storage import keys
from dispatcher.storage.base import as_text, wraps_redis_errors
from dispatcher.storage.connect import is_cluster
from dispatcher.storage.fields import Campaign, State

_COUNTS = (
    Campaign.RECIPIENTS, Campaign.SENT, Campaign.DEAD_LETTERED, Campaign.CANCELED,
    Campaign.EXPIRED, Campaign.SUPPRESSED,
)  # fmt: skip


def delivery_key(plan: str, campaign_id: str) -> str:
    """HASH status -> recipients whose final delivery report says so (issue 13's ingestion)."""
    return f"{keys.campaign(plan, campaign_id)}:dr"


@dataclass
class _Plan:
    """What the states and ETAs of one plan's campaigns depend on, read once per plan."""

    paused: bool
    circuit: bool
    rate: float  # in force: runtime over config, lowered after 429s
    paused_campaigns: dict[str, str]
    active: list[tuple[str, float]]  # (campaign, due ms), lane order
    scheduled: set[str]
    pending: dict[str, int]  # active campaign -> recipients still pending


def _pending(rec: Sequence[Any]) -> int:
    n = [int(v or 0) for v in rec]
    return n[0] - sum(n[1:])


class Campaigns:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @wraps_redis_errors
    def plan_of(self, campaign_id: str) -> str:
        plan = self.r.hget(keys.CAMPAIGNS, campaign_id)
        if plan is not None:
            return as_text(plan)
        # The index is a deployment-wide key: on a cluster a failover may lose its entry while
        # the campaign's own record, in its plan's slot, survived.  Look there, and mend it.
        plans = sorted(as_text(p) for p in self.r.smembers(keys.PLANS))
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.exists(keys.campaign(p, campaign_id))
        for p, found in zip(plans, pipe.execute() if plans else [], strict=True):
            if found:
                self.r.hset(keys.CAMPAIGNS, campaign_id, p)
                return p
        raise NotFound(f"no campaign {campaign_id!r} (unknown, or expired after retention)")

    @wraps_redis_errors
    def status(self, campaign_id: str, rates: Mapping[str, float]) -> CampaignStatus:
        plan = self.plan_of(campaign_id)
        found = self._read([(plan, campaign_id)], rates)
        if not found:
            raise NotFound(f"no campaign {campaign_id!r} (unknown, or expired after retention)")
        return found[0]

    @wraps_redis_errors
    def newest_first(
        self,
        rates: Mapping[str, float],
        plan: str | None = None,
        state: CampaignState | None = None,
    ) -> list[CampaignStatus]:
        """Newest first (campaign ids sort by creation time)."""
        index = {as_text(c): as_text(p) for c, p in self.r.hgetall(keys.CAMPAIGNS).items()}
        wanted = sorted(
            ((p, c) for c, p in index.items() if plan is None or p == plan),
            key=lambda pc: pc[1],
            reverse=True,
        )
        out = self._read(wanted, rates)
        return [s for s in out if state is None or s.state == state]

    def _read(
        self, wanted: Sequence[tuple[str, str]], rates: Mapping[str, float]
    ) -> list[CampaignStatus]:
        pipe = self.r.pipeline(transaction=False)
        for p, c in wanted:
            pipe.hgetall(keys.campaign(p, c))
            pipe.hgetall(delivery_key(p, c))
        if is_cluster(self.r):  # a cluster pipeline refuses TIME (it has no one node)
            raw = pipe.execute() if wanted else []
            sec, usec = self.r.time()
        else:
            pipe.time()
            *raw, (sec, usec) = pipe.execute()
        now_ms = int(sec) * 1000 + int(usec) // 1000
        plans = self._plans({p for p, _ in wanted}, rates)
        out: list[CampaignStatus] = []
        for i, (p, c) in enumerate(wanted):
            rec, dr = raw[2 * i], raw[2 * i + 1]
            if rec:
                out.append(_status(p, c, rec, dr, plans[p], now_ms))
        return out

    def _plans(self, plans: Iterable[str], rates: Mapping[str, float]) -> dict[str, _Plan]:
        plans = sorted(plans)
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.hmget(keys.state(p), State.PAUSED, State.CIRCUIT, State.EFF_RATE, State.RATE)
            pipe.hgetall(keys.paused(p))
            pipe.zrange(keys.active(p), 0, -1, withscores=True)
            pipe.zrange(keys.scheduled(p), 0, -1)
        raw = pipe.execute()
        out: dict[str, _Plan] = {}
        for i, p in enumerate(plans):
            (paused, circuit, eff, runtime), held, active, sched = raw[4 * i : 4 * i + 4]
            rate = float(runtime) if runtime is not None else float(rates.get(p, 0.0))
            if eff is not None:
                rate = min(rate, float(eff))
            out[p] = _Plan(
                paused=paused is not None,
                circuit=circuit == State.CIRCUIT_OPEN.encode(),
                rate=rate,
                paused_campaigns={as_text(k): as_text(v) for k, v in held.items()},
                active=[(as_text(c), float(s)) for c, s in active],
                scheduled={as_text(c) for c in sched},
                pending={},
            )
        pipe = self.r.pipeline(transaction=False)
        order = [(p, c) for p in plans for c, _ in out[p].active]
        for p, c in order:
            pipe.hmget(keys.campaign(p, c), *_COUNTS)
        for (p, c), rec in zip(order, pipe.execute() if order else [], strict=True):
            out[p].pending[c] = _pending(rec)
        return out


def _status(
    plan: str,
    campaign_id: str,
    rec: Mapping[bytes, bytes],
    dr: Mapping[bytes, bytes],
    ctx: _Plan,
    now_ms: int,
) -> CampaignStatus:
    f = {as_text(k): as_text(v) for k, v in rec.items()}
    n = {k: int(f.get(k) or 0) for k in _COUNTS}
    done = sum(v for k, v in n.items() if k != Campaign.RECIPIENTS)
    paused_by: PausedBy | None = None
    state: CampaignState
    if f.get(Campaign.CANCELED_AT):
        state = "canceled"
    elif done >= n[Campaign.RECIPIENTS]:
        state = "done"
    elif campaign_id in ctx.paused_campaigns:
        state = "paused"
        paused_by = "failures" if ctx.paused_campaigns[campaign_id] == "failures" else "campaign"
    elif campaign_id in ctx.scheduled and int(f.get(Campaign.SEND_AT) or 0) > now_ms:
        state = "scheduled"
    elif ctx.paused or ctx.circuit:
        state = "paused"
        paused_by = "plan" if ctx.paused else "circuit"
    elif n[Campaign.SENT] + n[Campaign.DEAD_LETTERED] == 0:
        state = "queued"
    else:
        state = "sending"
    return CampaignStatus(
        campaign_id=campaign_id,
        plan=plan,
        state=state,
        paused_by=paused_by,
        recipients=n[Campaign.RECIPIENTS],
        sent=n[Campaign.SENT],
        dead_lettered=n[Campaign.DEAD_LETTERED],
        canceled=n[Campaign.CANCELED],
        expired=n[Campaign.EXPIRED],
        suppressed=n[Campaign.SUPPRESSED],
        created_at=_seconds(f.get(Campaign.CREATED_AT)),
        finished_at=_seconds(f.get(Campaign.FINISHED_AT)),
        send_at=_seconds(f.get(Campaign.SEND_AT)),
        eta_s=_eta(campaign_id, state, f, ctx, now_ms),
        delivery={s: int(as_text(dr.get(s.encode(), b"0"))) for s in DELIVERY_STATUSES},
    )


def _eta(
    campaign_id: str, state: CampaignState, f: Mapping[str, str], ctx: _Plan, now_ms: int
) -> float | None:
    """Seconds until the campaign's last recipient is sent, if nothing changes meanwhile."""
    if state == "done":
        return 0.0
    if state in ("canceled", "paused") or ctx.rate <= 0 or campaign_id not in ctx.pending:
        return None
    backlog = 0
    for c, _ in ctx.active:
        if c in ctx.paused_campaigns or (c in ctx.scheduled and c != campaign_id):
            continue
        backlog += max(0, ctx.pending.get(c, 0))
        if c == campaign_id:
            break
    wait_s = 0.0
    if state == "scheduled":
        wait_s = max(0.0, (int(f.get(Campaign.SEND_AT) or 0) - now_ms) / 1000)
        backlog = max(0, ctx.pending.get(campaign_id, 0))
    return wait_s + backlog / ctx.rate


def _seconds(ms: str | None) -> float | None:
    return int(ms) / 1000 if ms else None
