"""Guarantee 4: plans are independent.  1,000 small plans share two worker processes with a
busy, rate-limited plan and a failing one; every small plan finishes while the busy plan still
has a backlog, so neither the busy nor the failing plan holds anyone up."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from sinch_simulator import Simulator
from tests.support.checks import assert_envelope
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

SMALL_PLANS = 1000


@pytest.mark.slow
def test_thousand_plans_all_finish_beside_a_busy_and_a_failing_plan(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    small = [f"p{i:04d}" for i in range(SMALL_PLANS)]
    dep = deploy([("hog", 40, {"batch_size": 20}), ("broken", 100)] + [(p, 100) for p in small])
    sim.faults.plan_errors["broken"] = (503, None)  # fails every request: backs off, retries
    d = Dispatcher(dep.settings, r)
    rng = random.Random(5)
    hog = d.enqueue(
        Campaign(
            plan="hog", sender="Acme", body="Hi", recipients=["+" + x for x in mobiles(3000, 99)]
        )
    )
    broken = d.enqueue(
        Campaign(plan="broken", sender="Acme", body="Hi", recipients=["+46701111111"])
    )
    numbers = mobiles(5 * SMALL_PLANS, seed=6)
    expected: dict[str, list[str]] = {}
    ids: list[str] = []
    for i, p in enumerate(small):
        expected[p] = numbers[5 * i : 5 * i + rng.randint(1, 5)]
        ids.append(
            d.enqueue(
                Campaign(
                    plan=p, sender="Acme", body="Hi", recipients=["+" + x for x in expected[p]]
                )
            )
        )
    dep.start_worker()
    dep.start_worker()

    wait_until(lambda: all(d.status(c).state == "done" for c in ids), 240, "every small plan done")
    hog_status = d.status(hog)
    assert hog_status.state != "done", "the busy plan finished first; the test proves nothing"
    assert d.status(broken).sent == 0
    for p in small:
        got = sim.accepted_recipients(p)
        assert got == expected[p], f"{p}: got {got}"
    # The busy plan kept sending meanwhile (it was not starved either); it is still sending,
    # so the provider may already hold a batch its status does not count yet.
    assert len(sim.accepted_recipients("hog")) >= hog_status.sent > 0
    # Its drain kept its slot through its waits (slot.py) and still fits its envelope.
    assert_envelope(sim, "hog", 40, 40)


def test_a_drain_that_only_waits_gives_its_worker_slot_back(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """A plan whose every batch waits a little for tokens must not sleep through its whole time
    slice in a worker slot that other plans' drains are queued for: after a short sleep budget
    the drain schedules itself and returns."""
    from dispatcher.sending.drain import Sender
    from dispatcher.sinch.client import SinchClient

    dep = deploy([("waity", 20, {"batch_size": 5})])  # burst 20: 4 batches, then 250 ms each
    d = Dispatcher(dep.settings, r)
    d.enqueue(
        Campaign(
            plan="waity", sender="Acme", body="Hi", recipients=["+" + x for x in mobiles(100, 3)]
        )
    )
    http = SinchClient(timeout_s=5)
    try:
        outcome = Sender(dep.settings, r, http).drain("waity")
    finally:
        http.close()
    assert outcome == "wait"
    assert len(sim.arrivals("waity")) <= 6  # the burst, and at most one budget of sleeping
    assert r.zscore("dsp:due", "waity") is not None  # it comes back when its tokens are there


def _enqueue(d: Dispatcher, plan: str, n: int, seed: int) -> list[str]:
    numbers = mobiles(n, seed=seed)
    d.enqueue(Campaign(plan=plan, sender="Acme", body="Hi", recipients=["+" + x for x in numbers]))
    return numbers


def test_a_plan_under_backlog_keeps_its_slot_and_serves_due_plans_in_its_waits(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """Issue 14: a plan whose batch is its whole burst waits about a second before each next
    batch.  Its drain task keeps the lease through those waits (it does not queue again behind
    other plans' drains) and serves the plans that are due meanwhile, so the small plans are all
    sent between the busy plan's first and second batch, each once, and the busy plan's batches
    stay in order."""
    from dispatcher.sending import slot
    from dispatcher.sending.drain import Sender
    from dispatcher.sinch.client import SinchClient
    from dispatcher.storage import keys

    small = [f"q{i}" for i in range(5)]
    dep = deploy([("busy", 20, {"batch_size": 20})] + [(p, 10) for p in small])
    d = Dispatcher(dep.settings, r)
    busy = _enqueue(d, "busy", 60, 21)  # 3 batches of 20 at 20/s: two waits of ~1 s
    expected = {p: _enqueue(d, p, 2, 30 + i) for i, p in enumerate(small)}
    r.zadd(keys.DUE, {"busy": 0})  # the busy plan's task is the one that runs
    http = SinchClient(timeout_s=5)
    try:
        outcome = slot.run(
            Sender(dep.settings, r, http), "busy", keep_s=30, claim_ms=20_000, poll_s=0.02
        )
    finally:
        http.close()
    assert outcome == "empty"
    assert sim.accepted_recipients("busy") == busy
    for p in small:
        assert sim.accepted_recipients(p) == expected[p]
    order = [a.plan for a in sorted(sim.arrivals(), key=lambda a: a.t)]
    first, second = order.index("busy"), order.index("busy", order.index("busy") + 1)
    assert set(order[first + 1 : second]) == set(small), order
    assert r.get(keys.lease("busy")) is None
    assert r.zscore(keys.DUE, "busy") is None


def test_a_kept_plan_passes_its_turn_on_first_in_line(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """At the end of its keep budget the task gives the plan's lease back and puts the plan at
    the head of the schedule, ahead of plans that were due before it: passing the turn on must
    not send a plan under backlog to the back of a long queue."""
    from dispatcher.sending import slot
    from dispatcher.sending.drain import Sender
    from dispatcher.sinch.client import SinchClient
    from dispatcher.storage import keys

    dep = deploy([("busy", 20, {"batch_size": 20}), ("other", 10)])
    d = Dispatcher(dep.settings, r)
    _enqueue(d, "busy", 60, 41)
    r.zadd(keys.DUE, {"early": 1, "other": 2})  # due long ago, still waiting for a slot
    http = SinchClient(timeout_s=5)
    try:
        sender = Sender(dep.settings, r, http)
        outcome = slot.run(sender, "busy", keep_s=0.001, claim_ms=20_000, poll_s=0.02)
    finally:
        http.close()
    assert outcome == "handed"
    assert len(sim.arrivals("busy")) == 1
    assert r.get(keys.lease("busy")) is None
    assert r.zrange(keys.DUE, 0, 0) == [b"busy"]


def test_the_ticker_tops_the_broker_queue_up_in_due_order(r: redis.Redis) -> None:
    """The schedule is the queue: the ticker claims only what fits below queue_max waiting
    drains, earliest due first, and leaves the rest due in the schedule for the next tick (or a
    kept slot) instead of piling them into the broker in claim order."""
    from dispatcher.sending.scheduler import Ticker
    from dispatcher.storage import keys

    r.zadd(keys.DUE, {f"p{i}": 100 + i for i in range(10)})
    started: list[str] = []
    waiting = [47]
    t = Ticker(r, started.append, claim_max=50, queue_max=50, backlog=lambda: waiting[0])
    assert t.tick() == ["p0", "p1", "p2"]
    waiting[0] = 50
    assert t.tick() == []
    waiting[0] = 0
    assert t.tick() == [f"p{i}" for i in range(3, 10)]
    assert started == [f"p{i}" for i in range(10)]


def test_a_slot_in_a_kept_gap_takes_a_drain_still_waiting_in_the_broker(r: redis.Redis) -> None:
    """When every slot keeps a plan, a drain task the ticker queued waits in the broker until a
    slot is given up.  A slot with nothing due in its gap takes that plan itself, the oldest
    claim first, and never one whose drain has started meanwhile (its due time changed)."""
    from dispatcher.storage import keys
    from dispatcher.storage.scripts import for_client

    s = for_client(r)
    r.zadd(keys.DUE, {"a": 1, "b": 2, "c": 3})
    assert s.claim(50, 20_000) == ["a", "b", "c"]  # the ticker: three tasks queued
    assert s.claim(50, 20_000) == []  # a ticker never takes a queued one again
    s.schedule("b", 5_000)  # b's task ran and put it back to wait for its tokens
    r.zadd(keys.DUE, {"due": 4})
    assert s.claim(1, 20_000, "slot") == ["due"]  # what is due comes first
    assert s.claim(1, 20_000, "slot") == ["a"]
    assert s.claim(1, 20_000, "slot") == ["c"]  # b's claim had started: skipped
    assert s.claim(1, 20_000, "slot") == []
    assert r.zcard(keys.CLAIMED) == 0


@pytest.mark.slow
def test_plans_beyond_the_slots_start_while_kept_plans_wait(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """Three plans that each wait a second between batches share two worker slots.  Each slot
    keeps its plan through those waits; the third plan is served in their gaps, so it starts
    before either kept plan finishes instead of after (the demo's third plan waited 4 s)."""
    plans = ["k1", "k2", "k3"]
    dep = deploy([(p, 20, {"batch_size": 20}) for p in plans])
    d = Dispatcher(dep.settings, r)
    expected = {p: _enqueue(d, p, 80, 50 + i) for i, p in enumerate(plans)}  # 4 batches each
    dep.start_worker(concurrency=2)
    wait_until(lambda: all(len(sim.accepted_recipients(p)) == 80 for p in plans), 60, "all sent")
    for p in plans:
        assert sim.accepted_recipients(p) == expected[p]
    first = {p: min(a.t for a in sim.arrivals(p)) for p in plans}
    last = {p: max(a.t for a in sim.arrivals(p)) for p in plans}
    for p in plans:
        for q in plans:
            assert first[p] < last[q], f"{p} started only after {q} finished"
