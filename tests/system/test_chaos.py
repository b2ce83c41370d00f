"""Guarantee 3 under SIGKILL: workers are killed at random moments and restarted while three
plans drain their backlogs; every recipient arrives exactly once, in order, within the
envelope, and every campaign ends done."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.support.checks import assert_envelope, assert_fifo, enqueue_interleaved
from tests.support.deploy import Deployment, wait_until

# 240 at 20/s, 600 at 50/s, 2,400 at 200/s: ~12 s of sending if nothing went wrong.
PLANS: dict[str, tuple[float, int, int]] = {
    "c-slow": (20, 5, 240),
    "c-mid": (50, 10, 600),
    "c-fast": (200, 25, 2400),
}
KILLS = 4


@pytest.mark.slow
def test_sigkilled_and_restarted_workers_lose_nothing_and_send_nothing_twice(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(p, rate, {"batch_size": size}) for p, (rate, size, _) in PLANS.items()])
    # Some latency per POST, so that kills land between take, POST and commit too.
    sim.faults.latency_ms = 30
    d = Dispatcher(dep.settings, r)
    expected, ids = enqueue_interleaved(d, PLANS)
    workers = [dep.start_worker() for _ in range(3)]
    rng = random.Random(4)
    kills: list[float] = []
    stop = threading.Event()

    def chaos() -> None:
        wait_until(lambda: len(sim.arrivals()) > 0, 60, "first arrival")
        for _ in range(KILLS):
            if stop.wait(rng.uniform(1.5, 4.0)):
                return
            victim = workers.pop(rng.randrange(len(workers)))
            dep.kill(victim, signal.SIGKILL)
            kills.append(time.time())
            workers.append(dep.start_worker())

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    try:
        wait_until(lambda: all(d.status(c).state == "done" for c in ids), 180, "all campaigns done")
    finally:
        stop.set()
        t.join()
    assert len(kills) == KILLS, "the backlog drained before the chaos was over"
    assert kills[-1] < max(a.t for a in sim.arrivals()), "every kill landed during sending"
    for p, (rate, _, _) in PLANS.items():
        assert_fifo(sim, p, expected[p])
        assert_envelope(sim, p, rate, rate)
        assert r.llen(keys.lane(p)) == 0
        assert r.llen(keys.dlq(p)) == 0
    for c in ids:
        st = d.status(c)
        assert (st.state, st.sent, st.dead_lettered) == ("done", st.recipients, 0)
    resent = {
        a.client_reference
        for a in sim.arrivals()
        if a.status == 201
        and sum(b.client_reference == a.client_reference for b in sim.arrivals()) > 1
    }
    assert not resent, f"batches sent twice: {sorted(resent)[:5]}"
