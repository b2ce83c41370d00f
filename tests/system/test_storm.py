"""A storm: 20,000 recipients on 2 plans while the provider answers 30% of requests 500/503,
throws bursts of 429 with Retry-After, drops 2% of connections after creating the batch, and
refuses a few poison recipients; all workers are SIGKILLed once mid-run and new ones started.

At the end, per plan: accepted + dead-lettered = enqueued, no recipient accepted twice, and
the accepted ones arrived in enqueue order (FIFO across the plan's campaigns).
"""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.support.checks import assert_no_secrets
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


PLANS = {"storm-a": 1500, "storm-b": 1000}  # recipients per second
PER_PLAN = 10_000
CAMPAIGNS_PER_PLAN = 2
POISON_PER_PLAN = 3


def diagnose(dep: Deployment, sim: Simulator, r: redis.Redis) -> str:
    """Where each plan stands, for the message of a failed wait."""
    out = []
    for plan in PLANS:
        state = {_s(k): _s(v) for k, v in r.hgetall(keys.state(plan)).items()}
        head = r.lindex(keys.lane(plan), 0)
        batch = r.hgetall(keys.batch(plan, _s(head))) if head else {}
        fields = {_s(k): _s(v)[:80] for k, v in batch.items() if k != b"payload"}
        out.append(
            f"{plan}: lane={r.llen(keys.lane(plan))} state={state} head={head!r} {fields} "
            f"due={r.zscore(keys.DUE, plan)} lease_ttl_ms={r.pttl(keys.lease(plan))} "
            f"redis_time={r.time()} sim={sim.stats()[plan]}"
        )
    return "\n".join(out) + "\n--- worker logs (tail) ---\n" + dep.log_text()[-6000:]


def wait(
    dep: Deployment, sim: Simulator, r: redis.Redis, pred: Callable[[], bool], what: str
) -> None:
    try:
        wait_until(pred, 180, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(dep, sim, r)}") from None


class Throttler(threading.Thread):
    """Every few seconds, the next few POSTs of one plan (in turn) are answered 429."""

    def __init__(
        self, sim: Simulator, every_s: float = 3.0, n: int = 2, retry_after_s: float = 1.0
    ):
        super().__init__(daemon=True)
        self.sim, self.every_s, self.n, self.after = sim, every_s, n, retry_after_s
        self.stop = threading.Event()
        self.bursts = 0

    def run(self) -> None:
        plans = list(PLANS)
        while not self.stop.wait(self.every_s):
            plan = plans[self.bursts % len(plans)]
            self.sim.faults.update(throttle={plan: [self.n, self.after]})
            self.bursts += 1


@pytest.mark.slow
def test_storm(deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis) -> None:
    dep = deploy([(p, rate, {"batch_size": 100}) for p, rate in PLANS.items()])
    d = Dispatcher(dep.settings, r)
    rng = random.Random(5)
    enqueued: dict[str, list[str]] = {}
    campaigns: dict[str, list[str]] = {}
    poison: set[str] = set()
    all_numbers = mobiles(PER_PLAN * len(PLANS), 42)
    for i, plan in enumerate(PLANS):
        numbers = all_numbers[i * PER_PLAN : (i + 1) * PER_PLAN]
        enqueued[plan] = numbers
        poison |= set(rng.sample(numbers, POISON_PER_PLAN))
        size = PER_PLAN // CAMPAIGNS_PER_PLAN
        parts = [numbers[c * size : (c + 1) * size] for c in range(CAMPAIGNS_PER_PLAN)]
        campaigns[plan] = [
            d.enqueue(
                Campaign(plan=plan, sender="Acme", body="Storm", recipients=["+" + n for n in part])
            )
            for part in parts
        ]
    total = sum(len(v) for v in enqueued.values())
    assert total == 20_000

    sim.faults.update(
        error_rate=0.30, error_statuses=[500, 503], drop_rate=0.02, illegal_numbers=sorted(poison)
    )
    throttler = Throttler(sim)
    throttler.start()
    workers = [dep.start_worker(concurrency=2) for _ in range(2)]
    try:
        # Mid-run: SIGKILL both workers (whole process groups: parents and pool children),
        # whatever they are doing, and start two new ones.
        wait(
            dep, sim, r,
            lambda: sum(s["recipients_accepted"] for s in sim.stats().values()) >= total * 0.4,
            "40% of the recipients to be accepted",
        )  # fmt: skip
        for w in workers:
            dep.kill(w, signal.SIGKILL)
        assert all(w.poll() is not None for w in workers)
        workers = [dep.start_worker(concurrency=2) for _ in range(2)]

        def done() -> bool:
            return all(d.status(c).state == "done" for cs in campaigns.values() for c in cs)

        wait(dep, sim, r, done, "every campaign to be done")
    finally:
        throttler.stop.set()
        throttler.join()

    stats = sim.stats()
    lines = [
        "",
        "storm: 20,000 recipients, 2 plans, 30% 500/503, 2% dropped, 429 bursts, all workers SIGKILLed once",
    ]
    grand = Counter[str]()
    for plan, numbers in enqueued.items():
        accepted = sim.accepted_recipients(plan)
        dead_entries = d.dead_letters(plan)
        dead = [x for e in dead_entries for x in e.recipients]
        # Nothing twice, nothing lost, FIFO for what was accepted.
        assert len(accepted) == len(set(accepted)), f"{plan}: a recipient was accepted twice"
        assert len(dead) == len(set(dead))
        assert not set(accepted) & set(dead)
        assert sorted(accepted + dead) == sorted(numbers), f"{plan}: lost or extra recipients"
        gone = set(dead)
        assert accepted == [n for n in numbers if n not in gone], f"{plan}: FIFO broken"
        # The poison recipients, and only they or batches out of retries, are dead letters.
        assert poison & set(numbers) <= gone
        for e in dead_entries:
            if e.code == "illegal_number_type":
                assert e.recipients[0] in poison and len(e.recipients) == 1
            else:
                assert e.reason == "retries_exhausted", e
        # Redis agrees with the provider.
        sent = sum(d.status(c).sent for c in campaigns[plan])
        dead_count = sum(d.status(c).dead_lettered for c in campaigns[plan])
        assert (sent, dead_count) == (len(accepted), len(dead))
        s = stats[plan]
        counts = {
            "enqueued": len(numbers),
            "accepted": len(accepted),
            "dead_lettered": len(dead),
            "requests": s["requests"],
            "5xx": s["500"] + s["503"],
            "429": s["429"],
            "dropped_after_create": s["dropped"],
            "lookups": s["lookups"],
        }
        grand.update(counts)
        lines.append(f"  {plan}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    lines.append("  total: " + ", ".join(f"{k}={v}" for k, v in grand.items()))
    lines.append(f"  429 bursts injected: {throttler.bursts}")
    print("\n".join(lines))
    assert grand["accepted"] + grand["dead_lettered"] == grand["enqueued"] == 20_000
    assert grand["5xx"] > 0 and grand["429"] > 0  # (drops are random and rare: not asserted)
    assert_no_secrets(dep, r)
