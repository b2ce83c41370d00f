"""The Python API: ``Dispatcher.from_env().enqueue(Campaign(...))`` and friends.

Enqueue does all per-recipient work once (normalize, validate, de-duplicate, substitute, count
parts), then writes ready-to-POST batch bodies in one transaction; the send loop only moves
bytes.  A campaign that is rejected writes nothing.
"""

from __future__ import annotations

import getpass
import math
from collections.abc import Mapping
from datetime import datetime

import redis

from dispatcher.callbacks import tokens
from dispatcher.campaign.originator import validate_originator
from dispatcher.campaign.prepare import Prepared, prepare
from dispatcher.campaign.recipients import check_unique
from dispatcher.campaign.schedule import validate_schedule
from dispatcher.config import PlanConfig, Settings
from dispatcher.errors import CampaignError, ConfigError, ControlError, NotFound
from dispatcher.models import (
    AuditEntry,
    Campaign,
    CampaignState,
    CampaignStatus,
    DeadLetter,
    EnqueueResult,
    PlanStatus,
)
from dispatcher.parallel import check_unique as check_unique_forked
from dispatcher.sinch import payload
from dispatcher.storage import fields
from dispatcher.storage.campaigns import Campaigns
from dispatcher.storage.connect import connect
from dispatcher.storage.control import Control
from dispatcher.storage.keys import new_id
from dispatcher.storage.reports import Reports
from dispatcher.storage.store import Store

_REFUSED = {
    "missing": "no campaign {id!r} (unknown, or expired after retention)",
    "done": "campaign {id} is done: there is nothing left to {verb}",
    "canceled": "campaign {id} is canceled: there is nothing left to {verb}",
}


def default_actor() -> str:
    """Who the audit log names when the caller does not say: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Dispatcher:
    """Enqueue campaigns and look after them; safe to share between threads."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or connect(settings.redis_url)
        self.store = Store(self.redis, retention_days=settings.retention_days)
        self._campaigns = Campaigns(self.redis)
        self.control = Control(self.redis, retention_s=self.store.retention_s)
        self._reports = Reports(self.redis, retention_s=self.store.retention_s)

    def callback_url(self, plan: str) -> str | None:
        """The plan's inbound URL for Sinch (delivery reports and inbound messages), or None
        when no callback_base_url is configured."""
        base, secret = self.settings.callback_base_url, self.settings.callback_secret
        if not base or secret is None:
            return None
        return tokens.callback_url(base, secret.reveal(), plan)

    @classmethod
    def from_env(cls, config: str | None = None) -> Dispatcher:
        """Settings from ``$DISPATCH_CONFIG`` (or ``config``) and the environment.

        Enqueuing never talks to the provider, so plan tokens need not be set here.
        """
        return cls(Settings.load(config, require_tokens=False))

    # ------------------------------------------------------------ campaigns
    def enqueue(self, campaign: Campaign, *, parallel: bool = False) -> EnqueueResult:
        """Validate and queue a campaign; returns its id (with the validation report).

        Raises :class:`CampaignError` (one line, nothing written) for bad input: an unknown
        plan, no recipients, an empty or too long body, a bad sender or schedule, or with
        ``strict`` any invalid recipient.

        ``parallel=True`` lets a large recipient list be checked in a forked second process
        (see :mod:`dispatcher.parallel`): only for a caller that owns its process, such as the
        CLI; a web server or a worker calling this must not have its process forked.
        """
        try:
            plan = self.settings.plan(campaign.plan)
        except ConfigError as exc:
            raise CampaignError(str(exc)) from None
        sender = validate_originator(campaign.sender)
        send_at, expire_at = validate_schedule(campaign.send_at, campaign.expire_at)
        prepared = prepare(
            campaign.body,
            campaign.recipients,
            campaign.parameters,
            strict=campaign.strict,
            checker=check_unique_forked if parallel else check_unique,
        )
        campaign_id = new_id("c")
        batch_size = self._batch_size(plan)
        # Held by the dispatcher until due, so posted without send_at: the provider's own
        # queue (out of reach of pause, cancel and the rate) stays shallow.
        # One round trip: numbers that opted out (of this plan, or everywhere) are dropped here
        # and counted, never sent.
        suppressed, version = self._reports.suppressed_among(plan.id, prepared.recipients)
        if suppressed:
            prepared = prepared.without(suppressed)
        batches = build_batches(
            campaign_id, plan, sender, campaign.body, prepared, None, expire_at,
            batch_size=batch_size, callback_url=self.callback_url(plan.id),
        )  # fmt: skip
        record: dict[str, str | int | float] = {
            # Suppressed numbers are part of the campaign's recipients and of its progress
            # (pending = recipients - sent - ... - suppressed), never of a batch.
            fields.Campaign.RECIPIENTS: len(prepared.recipients) + len(suppressed),
            fields.Campaign.SUPPRESSED: len(suppressed),
            fields.Campaign.BATCHES: len(batches),
            fields.Campaign.DUPLICATES: prepared.duplicates,
            fields.Campaign.INVALID: len(prepared.invalid),
            fields.Campaign.SENDER: sender,
            fields.Campaign.ENCODING: prepared.encoding,
            fields.Campaign.MAX_PARTS: prepared.max_parts,
            fields.Campaign.TOTAL_PARTS: prepared.total_parts,
        }
        self.store.write_campaign(
            plan.id, campaign_id, record, batches, send_at_ms=_ms(send_at),
            expire_at_ms=_ms(expire_at), suppression_version=version,
        )  # fmt: skip
        return EnqueueResult(
            campaign_id,
            recipients=len(prepared.recipients),
            suppressed=len(suppressed),
            batches=len(batches),
            duplicates=prepared.duplicates,
            invalid=prepared.invalid,
            encoding=prepared.encoding,
            max_parts=prepared.max_parts,
            total_parts=prepared.total_parts,
        )

    def _batch_size(self, plan: PlanConfig) -> int:
        """The plan's batch size in force: a runtime ``plans set`` wins over the file."""
        rt = self.control.runtime(plan.id)
        burst = rt.get("burst", plan.burst)
        return max(1, min(int(rt.get("batch_size", plan.batch_size)), int(burst)))

    def _rates(self) -> dict[str, float]:
        return {p: c.rate for p, c in self.settings.plans.items()}

    def status(self, campaign_id: str) -> CampaignStatus:
        return self._campaigns.status(str(campaign_id), self._rates())

    def campaigns(
        self, plan: str | None = None, state: CampaignState | None = None
    ) -> list[CampaignStatus]:
        """Campaigns newest first, each with its progress and ETA."""
        return self._campaigns.newest_first(self._rates(), plan=plan, state=state)

    # ------------------------------------------------------------ control
    def pause(self, campaign_id: str, *, actor: str | None = None) -> CampaignStatus:
        """Hold the campaign's unsent batches; it keeps its place, later campaigns go ahead."""
        cid = str(campaign_id)
        plan = self._campaigns.plan_of(cid)
        self._refuse(self.control.pause(plan, cid, actor or default_actor()), cid, "pause")
        return self.status(cid)

    def resume(self, campaign_id: str, *, actor: str | None = None) -> CampaignStatus:
        """Its held batches are next again, in their order."""
        cid = str(campaign_id)
        plan = self._campaigns.plan_of(cid)
        self._refuse(self.control.resume(plan, cid, actor or default_actor()), cid, "resume")
        return self.status(cid)

    def cancel(
        self, campaign_id: str, *, at_provider: bool = False, actor: str | None = None
    ) -> CampaignStatus:
        """Remove the unsent batches (their recipients count as canceled); a batch being
        posted completes.  Idempotent.  With ``at_provider`` the batches the provider already
        accepted are deleted there too (see :meth:`cancel_at_provider`)."""
        cid = str(campaign_id)
        plan = self._campaigns.plan_of(cid)
        result = self.control.cancel(plan, cid, actor or default_actor())
        if result.answer not in ("ok", "already"):
            self._refuse(result.answer, cid, "cancel")
        if at_provider:
            self.cancel_at_provider(cid, actor=actor)
        return self.status(cid)

    def cancel_at_provider(
        self, campaign_id: str, *, actor: str | None = None
    ) -> list[tuple[str, int | None, str]]:
        """``DELETE /batches/{id}`` for each batch of the campaign the provider accepted:
        (provider batch id, HTTP status or None, error text) per batch.  Messages already in
        progress may still go out; the delivery reports tell which did not."""
        from dispatcher.sinch.client import SinchClient

        cid = str(campaign_id)
        plan = self.settings.plans.get(self._campaigns.plan_of(cid))
        if plan is None:
            raise ControlError(f"campaign {cid}: its plan is not in {self.settings.source}")
        if plan.token is None:
            raise ControlError(
                f"plan {plan.id}: {plan.token_env} is not set: cannot reach the provider"
            )
        answers: list[tuple[str, int | None, str]] = []
        http = SinchClient()
        try:
            for pbid in self.control.provider_batches(plan.id, cid):
                resp = http.cancel_batch(plan, pbid)
                answers.append((pbid, resp.status, resp.text or resp.error or ""))
        finally:
            http.close()
        self.control.record(
            "campaign.cancel_at_provider", cid, actor or default_actor(), plan=plan.id,
            batches=len(answers), ok=sum(1 for _, st, _ in answers if st and st < 300),
        )  # fmt: skip
        return answers

    def _refuse(self, answer: str, campaign_id: str, verb: str) -> None:
        if answer == "missing":
            raise NotFound(_REFUSED["missing"].format(id=campaign_id))
        if answer in _REFUSED:
            raise ControlError(_REFUSED[answer].format(id=campaign_id, verb=verb))

    def pause_plan(self, plan: str, *, actor: str | None = None) -> bool:
        """Stop sending the plan's batches (at its next batch, on every worker); True if it
        was running."""
        return self.control.pause_plan(self._known_plan(plan), actor or default_actor())

    def resume_plan(self, plan: str, *, actor: str | None = None) -> bool:
        """Unpause the plan and close an open circuit; True if it was paused or open."""
        return self.control.resume_plan(self._known_plan(plan), actor or default_actor())

    def set_plan(
        self,
        plan: str,
        rate: float | None = None,
        burst: float | None = None,
        batch_size: int | None = None,
        *,
        actor: str | None = None,
    ) -> PlanStatus:
        """Runtime limits: they win over the config file, on every worker at its next batch,
        until :meth:`reset_plan`.  A burst left out follows a new rate where the file left
        burst at its default (the rate)."""
        cfg = self._configured_plan(plan)
        current = self.control.runtime(cfg.id)
        if rate is None and burst is None and batch_size is None:
            raise ControlError("plans set: give at least one of rate, burst, batch_size")
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ControlError(f"rate {rate:g} must be a number > 0")
        if burst is not None and not (math.isfinite(burst) and burst >= 1):
            raise ControlError(f"burst {burst:g} must be a number >= 1")
        if batch_size is not None and not 1 <= batch_size <= 1000:
            raise ControlError(f"batch_size {batch_size} must be a whole number from 1 to 1000")
        values: dict[str, float | int] = {}
        if rate is not None:
            values["rate"] = float(rate)
            if burst is None and "burst" not in current and cfg.burst == max(cfg.rate, 1.0):
                values["burst"] = max(float(rate), 1.0)
        if burst is not None:
            values["burst"] = float(burst)
        if batch_size is not None:
            in_force = values.get("burst", current.get("burst", cfg.burst))
            if batch_size > in_force:
                raise ControlError(
                    f"batch_size {batch_size} is more than burst {in_force:g}: such a batch "
                    "could never be granted"
                )
            values["batch_size"] = int(batch_size)
        self.control.set_plan(cfg.id, values, actor or default_actor())
        return self._plan_status(cfg.id)

    def reset_plan(self, plan: str, *, actor: str | None = None) -> PlanStatus:
        """Back to the config file's limits."""
        pid = self._configured_plan(plan).id
        self.control.reset_plan(pid, actor or default_actor())
        return self._plan_status(pid)

    # ------------------------------------------------------------ opt-outs
    def suppress(self, numbers: list[str], plan: str | None = None) -> int:
        """Add numbers to the plan's suppression list (None: everywhere); how many were new.
        Raises CampaignError naming the first number that is not one."""
        return self._reports.suppress(self._numbers(numbers), self._scope(plan))

    def unsuppress(self, numbers: list[str], plan: str | None = None) -> int:
        return self._reports.unsuppress(self._numbers(numbers), self._scope(plan))

    def suppressed(self, plan: str | None = None) -> list[str]:
        return self._reports.suppressed(self._scope(plan))

    def _scope(self, plan: str | None) -> str | None:
        return self._known_plan(plan) if plan else None

    @staticmethod
    def _numbers(numbers: list[str]) -> list[str]:
        from dispatcher.campaign.msisdn import check

        return [check(n) for n in numbers]

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """Control actions, newest first."""
        return self.control.audit(limit)

    def _configured_plan(self, plan: str) -> PlanConfig:
        cfg = self.settings.plans.get(plan)
        if cfg is None:
            raise NotFound(f"no plan {plan!r} in {self.settings.source}")
        return cfg

    def _known_plan(self, plan: str) -> str:
        if plan not in self.settings.plans and plan not in self.store.known_plans():
            raise NotFound(f"no plan {plan!r} in {self.settings.source} or in Redis")
        return plan

    def _plan_status(self, plan: str) -> PlanStatus:
        return next(p for p in self.plans() if p.plan == plan)

    # ------------------------------------------------------------ plans
    def plans(self) -> list[PlanStatus]:
        ids = sorted(set(self.settings.plans) | set(self.store.known_plans()))
        snap = self.store.plan_snapshot(ids)
        out: list[PlanStatus] = []
        for pid in ids:
            cfg = self.settings.plans.get(pid)
            s = snap.get(pid, {})
            runtime = {
                f: float(s[_STATE + f]) for f in fields.State.RUNTIME_FIELDS if _STATE + f in s
            }
            rate = runtime.get("rate", cfg.rate if cfg else 0.0)
            burst = runtime.get("burst", cfg.burst if cfg else 0.0)
            batch = int(runtime.get("batch_size", cfg.batch_size if cfg else 0))
            eff = float(s.get(_STATE + fields.State.EFF_RATE, rate))
            out.append(
                PlanStatus(
                    plan=pid,
                    rate=rate,
                    effective_rate=min(eff, rate) if cfg or runtime else eff,
                    burst=burst,
                    batch_size=min(batch, int(burst)) if burst else batch,
                    pending=int(s.get(fields.Stats.PENDING, 0)),
                    circuit="open" if _circuit_open(s) else "closed",
                    circuit_code=_circuit_code(s),
                    dead_letters=int(s.get(fields.Stats.DLQ_PENDING, 0)),
                    paused=_STATE + fields.State.PAUSED in s,
                    source="runtime" if runtime else "config",
                    sources={
                        f: "runtime" if f in runtime else "config"
                        for f in fields.State.RUNTIME_FIELDS
                    },
                )
            )
        return out

    # ------------------------------------------------------------ dead letters
    def dead_letters(self, plan: str | None = None) -> list[DeadLetter]:
        return self.store.dead_letters(plan)

    def dead_letter(self, entry_id: str) -> DeadLetter:
        return self.store.dead_letter(entry_id)

    def replay(self, entry_id: str | None = None, *, plan: str | None = None) -> tuple[int, int]:
        """Put dead letters back at the tail of their lanes: (entries, recipients)."""
        return self.store.replay(entry_id, plan=plan)

    def purge(self, entry_id: str | None = None, *, plan: str | None = None) -> tuple[int, int]:
        return self.store.purge(entry_id, plan=plan)

    def close(self) -> None:
        self.redis.close()


_STATE = fields.SNAPSHOT_STATE_PREFIX


def _circuit_open(snapshot: Mapping[str, str]) -> bool:
    return snapshot.get(_STATE + fields.State.CIRCUIT) == fields.State.CIRCUIT_OPEN


def _circuit_code(snapshot: Mapping[str, str]) -> str | None:
    if not _circuit_open(snapshot):
        return None
    status = snapshot.get(_STATE + fields.State.CIRCUIT_STATUS, "")
    code = snapshot.get(_STATE + fields.State.CIRCUIT_CODE, "")
    return f"{status} {code}".strip() or None


def build_batches(
    campaign_id: str,
    plan: PlanConfig,
    sender: str,
    body: str,
    prepared: Prepared,
    send_at: str | None = None,
    expire_at: str | None = None,
    *,
    batch_size: int | None = None,
    callback_url: str | None = None,
) -> list[payload.Body]:
    """Split into batches of ``batch_size`` (default the plan's), each request body rendered
    once."""
    return list(
        payload.build(
            campaign_id,
            sender,
            body,
            prepared.recipients,
            prepared.parameters,
            batch_size=batch_size or plan.batch_size,
            delivery_report=plan.delivery_report,
            callback_url=callback_url,
            send_at=send_at,
            expire_at=expire_at,
        )
    )


def _ms(timestamp: str | None) -> int | None:
    """Unix ms of a timestamp ``validate_schedule`` normalized."""
    if timestamp is None:
        return None
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)
