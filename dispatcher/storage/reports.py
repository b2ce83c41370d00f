"""Delivery reports and opt-outs in Redis: what the callback receiver writes, what enqueue and
the CLI read.

A plan's suppression list is ``{plan}:suppressed``; the deployment-wide one is
``dsp:suppressed``, in its own slot on a cluster, so it is only ever read or written by plain
commands, never inside a plan's script.  Numbers are stored as the payloads carry them: digits
without the ``+``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from dispatcher.storage import keys
from dispatcher.storage.base import as_text, wraps_redis_errors
from dispatcher.storage.fields import Stats
from dispatcher.storage.scripts import for_client

GLOBAL_SUPPRESSED = f"{keys.PREFIX}:suppressed"


def suppressed_key(plan: str | None) -> str:
    return f"{keys.prefix(plan)}suppressed" if plan else GLOBAL_SUPPRESSED


class Reports:
    def __init__(self, client: redis.Redis, *, retention_s: int) -> None:
        self.r = client
        self.scripts = for_client(client)
        self.retention_s = retention_s

    @wraps_redis_errors
    def ingest(
        self,
        plan: str,
        kind: str,
        client_reference: str,
        provider_batch_id: str,
        *,
        recipients: list[tuple[str, str]] | None = None,
        counts: list[tuple[str, int]] | None = None,
    ) -> tuple[str, int] | None:
        """(campaign, recipients newly counted), or None for an orphan (counted as such)."""
        return self.scripts.report(
            plan, kind, client_reference, provider_batch_id, self.retention_s,
            recipients=recipients, counts=counts,
        )  # fmt: skip

    @wraps_redis_errors
    def count(self, plan: str, kind: str, result: str) -> None:
        self.r.hincrby(keys.stats(plan), f"{Stats.CALLBACK_PREFIX}{kind}:{result}", 1)

    @wraps_redis_errors
    def delivery(self, plan: str, campaign_id: str) -> dict[str, int]:
        raw = self.r.hgetall(f"{keys.campaign(plan, campaign_id)}:dr")
        return {as_text(k): int(v) for k, v in raw.items()}

    # ------------------------------------------------------------ suppression
    @wraps_redis_errors
    def suppress(self, numbers: Iterable[str], plan: str | None = None) -> int:
        """Add numbers; how many were new.  Bumps the suppression version of every plan the
        list applies to, so their queued batches are checked again before they are posted."""
        nums = list(numbers)
        if not nums:
            return 0
        plans = [plan] if plan else [as_text(p) for p in self.r.smembers(keys.PLANS)]
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(suppressed_key(plan), *nums)
        for p in plans:
            pipe.incr(keys.suppression_version(p))
        added, *_ = pipe.execute()
        return int(added)

    @wraps_redis_errors
    def version(self, plan: str) -> int:
        return int(self.r.get(keys.suppression_version(plan)) or 0)

    @wraps_redis_errors
    def unsuppress(self, numbers: Iterable[str], plan: str | None = None) -> int:
        nums = list(numbers)
        return int(self.r.srem(suppressed_key(plan), *nums)) if nums else 0

    @wraps_redis_errors
    def suppressed(self, plan: str | None = None) -> list[str]:
        return sorted(as_text(x) for x in self.r.smembers(suppressed_key(plan)))

    @wraps_redis_errors
    def suppressed_among(self, plan: str, numbers: Sequence[str]) -> tuple[set[str], int]:
        """Which of ``numbers`` opted out, of this plan or everywhere, and the plan's
        suppression version read before the lists (so an opt-out that comes after this read
        bumps the version past it): one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.suppression_version(plan))
        if numbers:
            pipe.smismember(suppressed_key(plan), list(numbers))
            pipe.smismember(GLOBAL_SUPPRESSED, list(numbers))
        version, *found = pipe.execute()
        if not numbers:
            return set(), int(version or 0)
        mine, everywhere = found
        out = {n for n, a, b in zip(numbers, mine, everywhere, strict=True) if a or b}
        return out, int(version or 0)
