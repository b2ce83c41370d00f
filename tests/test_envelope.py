"""Guarantees 1 and 2 checked at the provider's side: real workers, real HTTP, the simulator's
arrival log.  Every attempt the simulator saw (accepted or not) counts against the envelope.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Sequence

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.storage import keys
from sinch_simulator import Arrival, Simulator
from tests.conftest import Deployment, wait_until

JITTER_S = 0.25  # CONTRACT.md 1: checked at the provider, allowing 250 ms of jitter


def mobiles(n: int, seed: int) -> list[str]:
    """Distinct valid Swedish mobile numbers, normalized (no '+')."""
    rng = random.Random(seed)
    return [f"4670{x:07d}" for x in rng.sample(range(10_000_000), n)]


def worst_window(arrivals: Sequence[Arrival], rate: float, burst: float) -> tuple[float, str]:
    """The largest share of the envelope any window used: max over windows [t_i, t_j] of
    recipients / (burst + rate * T), with T = max(1 s, t_j - t_i + jitter).  <= 1.0 passes.

    Also describes the worst window, for the assertion message.
    """
    ts = [a.t for a in arrivals]
    ns = [len(a.to) for a in arrivals]
    worst, where = 0.0, "no arrivals"
    for i in range(len(ts)):
        total = 0
        for j in range(i, len(ts)):
            total += ns[j]
            span = ts[j] - ts[i]
            allowed = burst + rate * max(1.0, span + JITTER_S)
            if total / allowed > worst:
                worst = total / allowed
                where = f"{total} recipients in {span:.3f} s (allowed {allowed:.0f})"
    return worst, where


def bucket_excess(arrivals: Sequence[Arrival], rate: float, burst: float) -> float:
    """The stricter token-bucket reading: max over windows of recipients - (burst + rate * span),
    in recipients (what the provider's own limiter, with 250 ms tolerance, would refuse beyond
    rate * 0.25)."""
    worst, best_start, total = -float("inf"), -float("inf"), 0.0
    for a in arrivals:
        best_start = max(best_start, rate * a.t - total)
        total += len(a.to)
        worst = max(worst, total - rate * a.t + best_start - burst)
    return worst


def assert_fifo(sim: Simulator, plan: str, enqueued: list[str]) -> None:
    got = sim.accepted_recipients(plan)
    assert len(got) == len(set(got)), f"{plan}: a recipient arrived twice"
    assert len(got) == len(enqueued), f"{plan}: {len(enqueued) - len(got)} recipients missing"
    assert got == enqueued, f"{plan}: arrivals differ from enqueue order"


def assert_envelope(
    sim: Simulator, plan: str, rate: float, burst: float, since: float = 0.0
) -> float:
    arrivals = [a for a in sim.arrivals(plan) if a.t >= since]
    worst, where = worst_window(arrivals, rate, burst)
    assert worst <= 1.0, f"{plan}: envelope exceeded: {where}"
    return worst


# Backlogs: about 12 s of sending per plan, so the test takes ~25 s with worker start-up:
# 240 recipients at 20/s, 600 at 50/s, 2,400 at 200/s (3,240 in all), in batches of 5/10/25.
PLANS: dict[str, tuple[float, int, int]] = {
    "slow": (20, 5, 240),
    "mid": (50, 10, 600),
    "fast": (200, 25, 2400),
}


def enqueue_interleaved(
    d: Dispatcher, plans: dict[str, tuple[float, int, int]], campaigns_per_plan: int = 3
) -> tuple[dict[str, list[str]], list[str]]:
    """Several campaigns per plan, enqueued round-robin across plans; returns the expected
    arrival order per plan and the campaign ids."""
    numbers = {p: mobiles(n, seed=i) for i, (p, (_, _, n)) in enumerate(plans.items())}
    ids: list[str] = []
    for k in range(campaigns_per_plan):
        for p, nums in numbers.items():
            size = -(-len(nums) // campaigns_per_plan)
            part = nums[k * size : (k + 1) * size]
            if part:
                ids.append(
                    d.enqueue(
                        Campaign(
                            plan=p, sender="Acme", body="Hi", recipients=["+" + x for x in part]
                        )
                    )
                )
    return numbers, ids


@pytest.mark.slow
def test_three_plans_four_workers_fit_the_envelope_in_fifo_order(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    # The simulator limits each plan at exactly its configured rate (factor 1.0, with its
    # 250 ms tolerance): any 429 would itself mean the envelope was broken.
    dep = deploy(
        [(p, rate, {"batch_size": size}) for p, (rate, size, _) in PLANS.items()],
        sim_rate_factor=1.0,
    )
    d = Dispatcher(dep.settings, r)
    expected, ids = enqueue_interleaved(d, PLANS)
    for _ in range(4):
        dep.start_worker(concurrency=1)
    wait_until(lambda: all(d.status(c).state == "done" for c in ids), 120, "all campaigns done")

    for p, (rate, _, _) in PLANS.items():
        assert_fifo(sim, p, expected[p])
        assert_envelope(sim, p, rate, rate)
        assert bucket_excess(sim.arrivals(p), rate, rate) <= rate * JITTER_S
        statuses = {a.status for a in sim.arrivals(p)}
        assert statuses == {201}, f"{p}: the provider answered {statuses}"
        assert r.llen(keys.lane(p)) == 0


@pytest.mark.slow
def test_lowered_burst_rebatches_queued_batches_after_restart(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """Config change: burst (and batch_size) lowered below the stored batch size, workers
    restarted: the queue is kept, oversized batches are split in order, nothing twice, and
    what is sent after the restart fits the new envelope."""
    old = deploy([("cfg", 50, {"batch_size": 50})])
    d = Dispatcher(old.settings, r)
    numbers = mobiles(1000, seed=7)
    ids = [
        d.enqueue(
            Campaign(plan="cfg", sender="Acme", body="Hi", recipients=["+" + x for x in part])
        )
        for part in (numbers[:600], numbers[600:])
    ]
    w = old.start_worker()
    wait_until(
        lambda: len(sim.accepted_recipients("cfg")) >= 100, 60, "some sent with the old config"
    )
    old.kill(w, signal.SIGTERM)
    sent_before = len(sim.accepted_recipients("cfg"))
    assert sent_before < 1000, "the backlog drained before the config change; nothing to test"

    # Same plan, burst 20 (and batch_size 20): every stored batch of 50 is now oversize.  The
    # simulator's own limiter gets the new burst too, so a batch of 50 would be refused.
    new = deploy([("cfg", 50, {"burst": 20, "batch_size": 20})])
    restart = sim.arrivals("cfg")[-1].t
    new.start_worker()
    new.start_worker()
    wait_until(lambda: all(d.status(c).state == "done" for c in ids), 90, "campaigns done")

    assert_fifo(sim, "cfg", numbers)
    after = [a for a in sim.arrivals("cfg") if a.t > restart]
    assert after, "nothing was sent after the restart"
    assert max(len(a.to) for a in after) <= 20
    assert_envelope(sim, "cfg", 50, 20, since=restart + 1e-9)
    assert {a.status for a in after} == {201}
    assert not list(r.scan_iter(match="dsp:{cfg}:b:*"))
