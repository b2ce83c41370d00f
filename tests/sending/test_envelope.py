"""Guarantees 1 and 2 checked at the provider's side: real workers, real HTTP, the simulator's
arrival log.  Every attempt the simulator saw (accepted or not) counts against the envelope.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.support.checks import (
    JITTER_S,
    assert_envelope,
    assert_fifo,
    bucket_excess,
    enqueue_interleaved,
)
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

# Backlogs: about 12 s of sending per plan, so the test takes ~25 s with worker start-up:
# 240 recipients at 20/s, 600 at 50/s, 2,400 at 200/s (3,240 in all), in batches of 5/10/25.
PLANS: dict[str, tuple[float, int, int]] = {
    "slow": (20, 5, 240),
    "mid": (50, 10, 600),
    "fast": (200, 25, 2400),
}


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
