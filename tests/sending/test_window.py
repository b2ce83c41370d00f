"""A window of batches in flight (``max_in_flight`` > 1, docs/architecture.md): the take in
lane order, commits and holds in place, and guarantees 1 and 3 with k = 4 under injected 5xx,
dropped connections and a SIGKILLed worker.  Real Redis, real ``Sender``/workers, real HTTP to
the simulator; the window's order is checked at the provider from its arrival log.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatcher import Campaign, Dispatcher
from dispatcher.config import PlanConfig, Settings
from dispatcher.sending.drain import Sender
from dispatcher.sending.policy import Backoff
from dispatcher.sinch.client import SinchClient
from dispatcher.storage import keys
from dispatcher.storage.fields import Batch
from dispatcher.storage.results import Committed, Go, Held, Later, Leased
from dispatcher.storage.scripts import for_client
from sinch_simulator import Simulator
from sinch_simulator.model import Arrival
from tests.support.checks import JITTER_S, assert_envelope, bucket_excess
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "win"
FAST = Backoff(retry_base_s=0.05, retry_cap_s=0.2, rate_wait_base_s=0.05, rate_wait_cap_s=0.2)


def lane(r: redis.Redis, plan: str = PLAN) -> list[str]:
    return [x.decode() for x in r.lrange(keys.lane(plan), 0, -1)]


def enqueue(d: Dispatcher, n: int, seed: int, plan: str = PLAN) -> tuple[str, list[str]]:
    numbers = mobiles(n, seed)
    cid = d.enqueue(
        Campaign(plan=plan, sender="Acme", body="Hi", recipients=["+" + x for x in numbers])
    )
    return cid, numbers


def drain_all(sender: Sender, r: redis.Redis, plan: str = PLAN, timeout: float = 60) -> None:
    """What the ticker does: drain again whenever the plan is due, until its lane is empty."""
    deadline = time.monotonic() + timeout
    while r.llen(keys.lane(plan)):
        assert time.monotonic() < deadline, "lane not drained"
        due = r.zscore(keys.DUE, plan)
        sec, usec = r.time()
        now_ms = sec * 1000 + usec // 1000
        if due is not None and due > now_ms:
            time.sleep(min(1.0, (due - now_ms) / 1000))
            continue
        sender.drain(plan)


def assert_once(sim: Simulator, plan: str, numbers: list[str]) -> None:
    """Guarantee 3 at the provider: every recipient in exactly one created batch."""
    got = Counter(sim.accepted_recipients(plan))
    twice = [n for n, c in got.items() if c > 1]
    assert not twice, f"{plan}: {len(twice)} recipients sent twice"
    assert set(got) == set(numbers), f"{plan}: {len(set(numbers) - set(got))} recipients missing"
    created = Counter(a.client_reference for a in sim.arrivals(plan) if a.status == 201)
    assert all(c == 1 for c in created.values()), "a batch was created twice"


def assert_window_order(arrivals: list[Arrival], k: int) -> None:
    """The window's order as the provider sees it: when a batch first arrives, fewer than k
    batches ahead of it (in lane order) are not yet accepted (the simulator's ``t`` is its
    decision, before its latency, and a batch is taken only once a batch k places ahead of it
    was committed).  k = 1 is strict FIFO."""
    first: dict[int, float] = {}
    accepted: dict[int, float] = {}
    for a in arrivals:
        assert a.client_reference is not None
        i = int(a.client_reference.split(".")[1])
        first.setdefault(i, a.t)
        if a.status == 201:
            accepted[i] = a.t
    for j, t in first.items():
        open_ahead = [i for i in first if i < j and not accepted.get(i, float("inf")) < t]
        assert len(open_ahead) < k, f"batch {j} started with {open_ahead} still open (k={k})"


@pytest.fixture
def win(deploy: Callable[..., Deployment]) -> Iterator[tuple[Settings, SinchClient]]:
    dep = deploy([(PLAN, 2000, {"batch_size": 10, "max_in_flight": 4})])
    http = SinchClient(timeout_s=2)
    yield dep.settings, http
    http.close()


def test_a_batch_taken_ahead_is_given_back_with_its_tokens(
    win: tuple[Settings, SinchClient], r: redis.Redis
) -> None:
    """prefetch_take: the batch taken while the one before was posted, when that one fails,
    leaves without an in-flight mark (no lookup) and with its tokens back."""
    settings, _ = win
    plan: PlanConfig = settings.plans[PLAN]
    enqueue(Dispatcher(settings, r), 30, seed=4)
    s = for_client(r)
    lease = s.lease(PLAN, 15000)
    assert isinstance(lease, Leased)
    b = lane(r)
    kw: dict[str, Any] = {"rate": plan.rate, "burst": plan.burst, "ttl_ms": 15000}
    assert isinstance(s.take(PLAN, lease.token, b[0], **kw), Go)
    before = float(r.hget(keys.bucket(PLAN), "tokens") or 0)
    ahead = s.take(PLAN, lease.token, b[1], window=[b[0]], **kw)
    assert isinstance(ahead, Go) and r.hexists(keys.batch(PLAN, b[1]), Batch.INFLIGHT)
    assert s.give_back(PLAN, lease.token, b[1], ahead.n, plan.burst) == "given"
    assert not r.hexists(keys.batch(PLAN, b[1]), Batch.INFLIGHT)
    after = float(r.hget(keys.bucket(PLAN), "tokens") or 0)
    assert before - 1 <= after <= plan.burst  # its 10 back (time refills nothing here)
    assert after >= before - ahead.n + ahead.n - 1
    assert s.give_back(PLAN, "not-the-lease", b[1], ahead.n, plan.burst) == "lost"


def test_a_commit_that_takes_nothing_renews_the_lease_for_the_batch_still_to_post(
    win: tuple[Settings, SinchClient], r: redis.Redis
) -> None:
    """overlap.py posts the batch it took ahead once the commit before it is written; at the
    end of a slice that commit takes nothing, and without a renewal the lease would be as old
    as the take before the previous POST: two POSTs would have to fit in one lease."""
    settings, _ = win
    plan: PlanConfig = settings.plans[PLAN]
    enqueue(Dispatcher(settings, r), 30, seed=5)
    s = for_client(r)
    lease = s.lease(PLAN, 15000)
    assert isinstance(lease, Leased)
    b = lane(r)
    kw: dict[str, Any] = {"rate": plan.rate, "burst": plan.burst, "ttl_ms": 15000}
    assert isinstance(s.take(PLAN, lease.token, b[0], **kw), Go)
    assert isinstance(s.take(PLAN, lease.token, b[1], window=[b[0]], **kw), Go)
    r.pexpire(keys.lease(PLAN), 200)  # what a slow POST of b[0] leaves of the lease
    c = s.commit(
        PLAN, lease.token, b[0], b[0].split(".")[0], "accepted", rate=plan.rate,
        retention_s=3600, status="201", take_next=None, burst=plan.burst, ttl_ms=15000,
        anywhere=True, window=[b[1]],
    )  # fmt: skip
    assert isinstance(c, Committed) and c.taken is None
    assert r.pttl(keys.lease(PLAN)) > 10_000


def test_window_takes_in_lane_order_and_commits_and_holds_in_place(
    win: tuple[Settings, SinchClient], r: redis.Redis
) -> None:
    settings, _ = win
    plan: PlanConfig = settings.plans[PLAN]
    enqueue(Dispatcher(settings, r), 50, seed=3)
    s = for_client(r)
    lease = s.lease(PLAN, 15000)
    assert isinstance(lease, Leased)
    tok = lease.token
    b = lane(r)

    def take(bid: str, window: list[str] | None) -> object:
        return s.take(PLAN, tok, bid, rate=plan.rate, burst=plan.burst, ttl_ms=15000,
                      window=window)  # fmt: skip

    assert isinstance(take(b[0], None), Go)
    got = take(b[1], [b[0]])
    assert isinstance(got, Go) and got.next_id == b[2]
    assert r.hexists(keys.batch(PLAN, b[1]), Batch.INFLIGHT)
    # Never past a batch not yet taken, never with a window the lane does not start with.
    assert isinstance(take(b[3], [b[0], b[1]]), Later)
    assert isinstance(take(b[2], [b[1]]), Later)
    assert not r.hexists(keys.batch(PLAN, b[3]), Batch.INFLIGHT)

    # b[1] answered first: committed where it is, and b[2] taken in the same round trip.
    c = s.commit(
        PLAN, tok, b[1], b[1].split(".")[0], "accepted", rate=plan.rate, retention_s=3600,
        status="201", take_next=b[2], burst=plan.burst, ttl_ms=15000, anywhere=True,
        window=[b[0]],
    )  # fmt: skip
    assert isinstance(c, Committed) and c.head == b[0] and isinstance(c.taken, Go)
    assert lane(r)[:3] == [b[0], b[2], b[3]]

    # b[2] fails: held in its place; the window cannot grow past it.
    h = s.hold(PLAN, tok, b[2], "retry", rate=plan.rate, delay_ms=0, status="503",
               anywhere=True)  # fmt: skip
    assert isinstance(h, Held)
    assert lane(r)[:2] == [b[0], b[2]]
    assert not r.hexists(keys.batch(PLAN, b[2]), Batch.INFLIGHT)
    assert isinstance(take(b[3], [b[0]]), Later)
    # Without `anywhere` the old fence holds: only the head may be committed.
    c2 = s.commit(PLAN, tok, b[2], b[2].split(".")[0], "accepted", rate=plan.rate,
                  retention_s=3600, status="201")  # fmt: skip
    assert not isinstance(c2, Committed)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    k=st.sampled_from([1, 2, 4]),
    prefetch=st.booleans(),
    error_rate=st.sampled_from([0.0, 0.1, 0.3]),
    drop_rate=st.sampled_from([0.0, 0.1]),
    latency_ms=st.sampled_from([5, 40]),
    n=st.integers(1, 160),
    seed=st.integers(0, 10_000),
)
@example(k=4, prefetch=False, error_rate=0.0, drop_rate=0.0, latency_ms=40, n=160, seed=1)
@example(k=4, prefetch=False, error_rate=0.3, drop_rate=0.1, latency_ms=40, n=160, seed=2)
@example(k=1, prefetch=True, error_rate=0.3, drop_rate=0.1, latency_ms=5, n=160, seed=3)
def test_window_sends_every_recipient_once_under_5xx_and_drops(
    deploy: Callable[..., Deployment],
    r: redis.Redis,
    sim: Simulator,
    k: int,
    prefetch: bool,
    error_rate: float,
    drop_rate: float,
    latency_ms: int,
    n: int,
    seed: int,
) -> None:
    r.flushall()
    sim.reset()
    extra: dict[str, object] = {"batch_size": 10, "max_in_flight": k, "prefetch_take": prefetch}
    dep = deploy([(PLAN, 2000, extra)])
    cid, numbers = enqueue(Dispatcher(dep.settings, r), n, seed)
    sim.faults.update(error_rate=error_rate, drop_rate=drop_rate, latency_ms=latency_ms)
    http = SinchClient(timeout_s=2)
    try:
        drain_all(Sender(dep.settings, r, http, backoff=FAST), r)
    finally:
        http.close()
        sim.faults.update(error_rate=0.0, drop_rate=0.0, latency_ms=0)
    assert_once(sim, PLAN, numbers)
    assert_window_order(sim.arrivals(PLAN), k)  # k = 1 (prefetch or not): strict FIFO
    # Only an ambiguous answer is looked up: a batch taken ahead and given back is not.
    dropped = sum(1 for a in sim.arrivals(PLAN) if a.dropped)
    assert sim.stats()[PLAN]["lookups"] == dropped
    st_ = Dispatcher(dep.settings, r).status(cid)
    assert (st_.state, st_.sent, st_.dead_lettered) == ("done", len(numbers), 0)
    assert not list(r.scan_iter(match=f"dsp:{{{PLAN}}}:b:*"))


@pytest.mark.slow
def test_window_of_four_fits_the_envelope_with_four_workers(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """Four batches in flight do not add to the rate: tokens are taken per batch before its
    POST, however many are in flight."""
    rate, size = 200, 25
    dep = deploy([("wenv", rate, {"batch_size": size, "max_in_flight": 4})], sim_rate_factor=1.0)
    sim.faults.latency_ms = 150  # 25 / 0.15 s = 167/s with one in flight: the window matters
    d = Dispatcher(dep.settings, r)
    cid, numbers = enqueue(d, 2400, seed=11, plan="wenv")
    for _ in range(4):
        dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).state == "done", 120, "campaign done")
    assert_once(sim, "wenv", numbers)
    assert_envelope(sim, "wenv", rate, rate)
    assert bucket_excess(sim.arrivals("wenv"), rate, rate) <= rate * JITTER_S
    assert {a.status for a in sim.arrivals("wenv")} == {201}
    assert_window_order(sim.arrivals("wenv"), 4)
    assert r.llen(keys.lane("wenv")) == 0


@pytest.mark.slow
@pytest.mark.parametrize(("k", "prefetch"), [(4, False), (1, True)])
def test_window_sigkilled_mid_campaign_sends_each_recipient_once(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis, k: int, prefetch: bool
) -> None:
    """Up to four batches are in flight (or, with prefetch_take, one POSTing and the next
    taken) when the worker dies: each carries its in-flight mark from before its POST, so the
    next worker looks each up by client_reference."""
    extra = {"batch_size": 20, "max_in_flight": k, "prefetch_take": prefetch}
    dep = deploy([("wkill", 400, extra)])
    sim.faults.update(latency_ms=200, error_rate=0.05)
    d = Dispatcher(dep.settings, r)
    cid, numbers = enqueue(d, 3000, seed=5, plan="wkill")
    victim = dep.start_worker()
    wait_until(lambda: len(sim.accepted_recipients("wkill")) >= 400, 60, "sending started")
    dep.kill(victim, signal.SIGKILL)
    assert len(sim.accepted_recipients("wkill")) < len(numbers), "finished before the kill"
    dep.start_worker()
    wait_until(lambda: d.status(cid).state == "done", 120, "campaign done after the kill")
    assert_once(sim, "wkill", numbers)
    assert_window_order(sim.arrivals("wkill"), k)
    st_ = d.status(cid)
    assert (st_.sent, st_.dead_lettered) == (len(numbers), 0)
