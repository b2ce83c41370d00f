"""What the simulated provider remembers: plans, their buckets and batches, the arrival log.

One lock guards all of it.  The endpoints (``batches.py``, ``control.py``) read and change
this state; the :class:`~sinch_simulator.simulator.Simulator` owns one and serves it.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sinch_simulator.bucket import Bucket
from sinch_simulator.faults import Faults
from sinch_simulator.model import Arrival, PlanSpec
from sinch_simulator.reporter import Reporter

BASE_STATS: Final = (
    "requests",
    "recipients_received",
    "201",
    "429",
    "batches_accepted",
    "recipients_accepted",
    "dropped",
    "lookups",
)


@dataclass(slots=True)
class Batch:
    id: str
    plan: str
    created_ms: int
    sender: str | None
    client_reference: str | None
    doc: dict[str, Any]


class Plan:
    __slots__ = ("batches", "bucket", "by_id", "by_ref", "spec", "stats")

    def __init__(self, spec: PlanSpec, bucket: Bucket) -> None:
        self.spec = spec
        self.bucket = bucket
        self.batches: list[Batch] = []
        self.by_id: dict[str, Batch] = {}
        self.by_ref: dict[str, list[Batch]] = {}
        self.stats: Counter[str] = Counter()


class State:
    """The provider's memory.  ``lock`` guards ``plans``, ``log`` and every plan's contents.

    ``log`` holds each arrival with the normalized recipients of the batch it created (None
    when none was created), in the order the decisions were made.
    """

    def __init__(
        self,
        plans: Iterable[PlanSpec],
        *,
        faults: Faults | None,
        rate_tolerance_s: float,
        keep_log: bool,
        seed: int | None,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        self.rate_tolerance_s = rate_tolerance_s
        self.keep_log = keep_log
        self.rng = random.Random(seed)
        self.reporter = Reporter(random.Random(seed))
        self.lock = threading.Lock()
        self.plans: dict[str, Plan] = {}
        self.log: list[tuple[Arrival, tuple[str, ...] | None]] = []
        for spec in plans:
            if spec.plan_id in self.plans:
                raise ValueError(f"plan {spec.plan_id} is given twice")
            self.plans[spec.plan_id] = self._new_plan(spec)

    def _new_plan(self, spec: PlanSpec) -> Plan:
        return Plan(spec, Bucket(spec, self.rate_tolerance_s, time.monotonic()))

    # ---- plans -------------------------------------------------------------------------

    def add_plan(self, spec: PlanSpec) -> None:
        """Add or replace a plan; a replaced plan keeps its batches and stats, gets a new bucket."""
        with self.lock:
            old = self.plans.get(spec.plan_id)
            new = self._new_plan(spec)
            if old is not None:
                new.batches, new.by_id, new.by_ref, new.stats = (
                    old.batches,
                    old.by_id,
                    old.by_ref,
                    old.stats,
                )
            self.plans[spec.plan_id] = new

    def set_token(self, plan_id: str, token: str) -> None:
        """Rotate a token without touching the plan's limiter (a 401 test in mid-run)."""
        with self.lock:
            plan = self.plans.get(plan_id)
            if plan is None:
                raise KeyError(plan_id)
            # A new spec rather than a mutation: the caller's PlanSpec object stays as it was.
            plan.spec = dataclasses.replace(plan.spec, token=token)

    def specs(self) -> list[PlanSpec]:
        with self.lock:
            return [p.spec for p in self.plans.values()]

    # ---- observations ------------------------------------------------------------------

    def _require_log(self) -> None:
        if not self.keep_log:
            raise RuntimeError("this simulator was started with keep_log=False")

    def arrivals(self, plan: str | None = None) -> list[Arrival]:
        self._require_log()
        with self.lock:
            return [a for a, _ in self.log if plan is None or a.plan == plan]

    def accepted_recipients(self, plan: str | None = None) -> list[str]:
        self._require_log()
        with self.lock:
            return [
                r
                for a, norm in self.log
                if norm is not None and (plan is None or a.plan == plan)
                for r in norm
            ]

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            out: dict[str, dict[str, int]] = {}
            for plan_id, plan in self.plans.items():
                d = dict.fromkeys(BASE_STATS, 0)
                d.update(plan.stats)
                out[plan_id] = d
            return out

    def reset(self) -> None:
        """Forget everything but the plans: log, batches, stats, faults, limiter state."""
        with self.lock:
            self.log.clear()
            for plan_id, plan in list(self.plans.items()):
                self.plans[plan_id] = self._new_plan(plan.spec)
        self.faults.clear()
