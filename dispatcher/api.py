"""The Python API: ``Dispatcher.from_env().enqueue(Campaign(...))`` and friends.

Enqueue does all per-recipient work once (normalize, validate, de-duplicate, substitute, count
parts), then writes ready-to-POST batch bodies in one transaction; the send loop only moves
bytes.  A campaign that is rejected writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from dispatcher.campaign.originator import validate_originator
from dispatcher.campaign.prepare import Prepared, prepare
from dispatcher.campaign.recipients import check_unique
from dispatcher.campaign.schedule import validate_schedule
from dispatcher.config import PlanConfig, Settings
from dispatcher.errors import CampaignError, ConfigError
from dispatcher.models import (
    Campaign,
    CampaignStatus,
    DeadLetter,
    EnqueueResult,
    PlanStatus,
)
from dispatcher.parallel import check_unique as check_unique_forked
from dispatcher.sinch import payload
from dispatcher.storage import fields
from dispatcher.storage.connect import connect
from dispatcher.storage.keys import new_id
from dispatcher.storage.store import Store


class Dispatcher:
    """Enqueue campaigns and look after them; safe to share between threads."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or connect(settings.redis_url)
        self.store = Store(self.redis, retention_days=settings.retention_days)

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
        batches = build_batches(
            campaign_id, plan, sender, campaign.body, prepared, send_at, expire_at
        )
        record: dict[str, str | int | float] = {
            fields.Campaign.RECIPIENTS: len(prepared.recipients),
            fields.Campaign.BATCHES: len(batches),
            fields.Campaign.DUPLICATES: prepared.duplicates,
            fields.Campaign.INVALID: len(prepared.invalid),
            fields.Campaign.SENDER: sender,
            fields.Campaign.ENCODING: prepared.encoding,
            fields.Campaign.MAX_PARTS: prepared.max_parts,
            fields.Campaign.TOTAL_PARTS: prepared.total_parts,
        }
        self.store.write_campaign(plan.id, campaign_id, record, batches)
        return EnqueueResult(
            campaign_id,
            recipients=len(prepared.recipients),
            batches=len(batches),
            duplicates=prepared.duplicates,
            invalid=prepared.invalid,
            encoding=prepared.encoding,
            max_parts=prepared.max_parts,
            total_parts=prepared.total_parts,
        )

    def status(self, campaign_id: str) -> CampaignStatus:
        return self.store.campaign_status(str(campaign_id))

    # ------------------------------------------------------------ plans
    def plans(self) -> list[PlanStatus]:
        ids = sorted(set(self.settings.plans) | set(self.store.known_plans()))
        snap = self.store.plan_snapshot(ids)
        out: list[PlanStatus] = []
        for pid in ids:
            cfg = self.settings.plans.get(pid)
            s = snap.get(pid, {})
            rate = cfg.rate if cfg else 0.0
            eff = float(s.get(_STATE + fields.State.EFF_RATE, rate))
            out.append(
                PlanStatus(
                    plan=pid,
                    rate=rate,
                    effective_rate=min(eff, rate) if cfg else eff,
                    burst=cfg.burst if cfg else 0.0,
                    pending=int(s.get(fields.Stats.PENDING, 0)),
                    circuit="open" if _circuit_open(s) else "closed",
                    circuit_code=_circuit_code(s),
                    dead_letters=int(s.get(fields.Stats.DLQ_PENDING, 0)),
                )
            )
        return out

    def resume(self, plan: str) -> bool:
        """Close the plan's circuit and send again at once; True if it was open."""
        return self.store.resume(plan)

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
) -> list[payload.Body]:
    """Split into batches of ``plan.batch_size``, each request body rendered once."""
    return list(
        payload.build(
            campaign_id,
            sender,
            body,
            prepared.recipients,
            prepared.parameters,
            batch_size=plan.batch_size,
            send_at=send_at,
            expire_at=expire_at,
        )
    )
