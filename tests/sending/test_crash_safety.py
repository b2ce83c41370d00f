"""Guarantees 3 and 5 at each point a sender can die, driven step by step in this process
(a real Redis, a real ``Sender`` and ``SinchClient`` talking HTTP to the simulator), plus a
SIGKILLed worker process, and the enqueue of a 1,000,000-recipient campaign.

A "dead" sender is one that stops between two steps: it keeps its lease until the lease's
TTL runs out, as a SIGKILLed process would.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dispatcher import Campaign, Dispatcher, RedisUnavailable, StorageError
from dispatcher.config import PlanConfig, Settings
from dispatcher.sending.drain import Sender, Timing
from dispatcher.sinch.client import ProviderResponse, SinchClient
from dispatcher.storage import keys
from dispatcher.storage.fields import Batch
from dispatcher.storage.results import Commit, Go, Leased, Lost, Part, Take
from dispatcher.storage.scripts import for_client
from sinch_simulator import Faults, Simulator
from tests.support.checks import assert_fifo
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "crash"


@pytest.fixture
def setup(
    deploy: Callable[..., Deployment], r: redis.Redis
) -> Iterator[tuple[Settings, Dispatcher, SinchClient]]:
    dep = deploy([(PLAN, 1000, {"batch_size": 10})])
    settings = dep.settings
    http = SinchClient(timeout_s=5)
    yield settings, Dispatcher(settings, r), http
    http.close()


def enqueue(d: Dispatcher, n: int, seed: int = 1) -> tuple[str, list[str]]:
    numbers = mobiles(n, seed)
    cid = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in numbers])
    )
    return cid, numbers


def head(r: redis.Redis) -> str:
    h = r.lindex(keys.lane(PLAN), 0)
    assert h is not None
    return str(h.decode())


def take_lease(r: redis.Redis, ttl_ms: int = 15000) -> str:
    lease = for_client(r).lease(PLAN, ttl_ms)
    assert isinstance(lease, Leased), "the lease was busy"
    return lease.token


def take(r: redis.Redis, plan: PlanConfig, token: str, bid: str) -> Take:
    return for_client(r).take(PLAN, token, bid, rate=plan.rate, burst=plan.burst, ttl_ms=15000)


def die(r: redis.Redis) -> None:
    """The dead sender's lease runs out (its TTL; shortened here so the test need not wait)."""
    r.pexpire(keys.lease(PLAN), 1)
    wait_until(lambda: not r.exists(keys.lease(PLAN)), 5, "the lease to expire")


def drain_all(sender: Sender, r: redis.Redis, timeout: float = 60) -> list[str]:
    """What the ticker does: drain again whenever the plan is due, until its lane is empty."""
    outcomes: list[str] = []
    deadline = time.monotonic() + timeout
    while r.llen(keys.lane(PLAN)):
        assert time.monotonic() < deadline, f"lane not drained; outcomes {outcomes}"
        due = r.zscore(keys.DUE, PLAN)
        sec, usec = r.time()
        now_ms = sec * 1000 + usec // 1000
        if due is not None and due > now_ms:
            time.sleep(min(1.0, (due - now_ms) / 1000))
            continue
        outcomes.append(sender.drain(PLAN))
    return outcomes


def sends_of(sim: Simulator, bid: str) -> int:
    return sum(1 for a in sim.arrivals(PLAN) if a.client_reference == bid)


def stat(r: redis.Redis, field: str) -> int:
    return int(r.hget(keys.stats(PLAN), field) or 0)


def test_killed_after_take_is_looked_up_found_missing_and_sent_once(
    setup: tuple[Settings, Dispatcher, SinchClient], r: redis.Redis, sim: Simulator
) -> None:
    settings, d, http = setup
    cid, numbers = enqueue(d, 30)
    plan = settings.plans[PLAN]
    token = take_lease(r)
    bid = head(r)
    assert isinstance(take(r, plan, token, bid), Go)  # tokens taken, marked in flight ...
    die(r)  # ... and the process died before its POST
    assert r.hexists(keys.batch(PLAN, bid), Batch.INFLIGHT)

    drain_all(Sender(settings, r, http), r)
    assert stat(r, "lookups:missing") == 1 and stat(r, "lookups:found") == 0
    assert sim.stats()[PLAN]["lookups"] == 1
    assert sends_of(sim, bid) == 1
    assert_fifo(sim, PLAN, numbers)
    st = d.status(cid)
    assert (st.state, st.sent, st.dead_lettered) == ("done", 30, 0)


def test_killed_after_the_provider_created_it_is_found_and_not_resent(
    setup: tuple[Settings, Dispatcher, SinchClient], r: redis.Redis, sim: Simulator
) -> None:
    settings, d, http = setup
    cid, numbers = enqueue(d, 30)
    plan = settings.plans[PLAN]
    token = take_lease(r)
    bid = head(r)
    out = take(r, plan, token, bid)
    assert isinstance(out, Go)
    assert http.send_batch(plan, out.payload).status == 201  # the provider created it ...
    die(r)  # ... and the sender died before its commit

    drain_all(Sender(settings, r, http), r)
    assert stat(r, "lookups:found") == 1
    assert sends_of(sim, bid) == 1, "resent although the provider had it"
    assert_fifo(sim, PLAN, numbers)
    st = d.status(cid)
    assert (st.state, st.sent, st.dead_lettered) == ("done", 30, 0)
    assert stat(r, "sent") == 30


class DropOnce(SinchClient):
    """The provider creates the first batch but the connection drops before its answer."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(timeout_s=5)
        self.sim = sim
        self.sends = 0

    def send_batch(self, plan: PlanConfig, payload: bytes) -> ProviderResponse:
        self.sends += 1
        self.sim.faults.drop_rate = 1.0 if self.sends == 1 else 0.0
        return super().send_batch(plan, payload)


def test_dropped_connection_after_creation_is_looked_up_not_resent(
    setup: tuple[Settings, Dispatcher, SinchClient], r: redis.Redis, sim: Simulator
) -> None:
    settings, d, _ = setup
    cid, numbers = enqueue(d, 30)
    bid = head(r)
    client = DropOnce(sim)
    try:
        drain_all(Sender(settings, r, client), r)
    finally:
        client.close()
    dropped = [a for a in sim.arrivals(PLAN) if a.dropped]
    assert [a.client_reference for a in dropped] == [bid]
    assert sends_of(sim, bid) == 1
    assert stat(r, "lookups:found") == 1
    assert_fifo(sim, PLAN, numbers)
    assert d.status(cid).state == "done"


def test_dead_senders_lease_expires_and_another_takes_over(
    setup: tuple[Settings, Dispatcher, SinchClient], r: redis.Redis, sim: Simulator
) -> None:
    settings, d, http = setup
    cid, numbers = enqueue(d, 30)
    take_lease(r, ttl_ms=1500)  # a sender took the plan and died at once
    other = Sender(settings, r, http)
    assert for_client(r).claim(50, 20000) == [PLAN]  # the ticker
    assert other.drain(PLAN) == "busy"
    # The plan comes due again when the dead sender's lease runs out, not later.
    sec, usec = r.time()
    due_in_ms = r.zscore(keys.DUE, PLAN) - (sec * 1000 + usec // 1000)
    assert 0 < due_in_ms <= 1600
    assert sim.arrivals(PLAN) == []
    outcomes = drain_all(other, r)
    assert outcomes[-1] == "empty"
    assert_fifo(sim, PLAN, numbers)
    assert d.status(cid).state == "done"


def test_stale_sender_with_an_old_fencing_token_changes_nothing(
    setup: tuple[Settings, Dispatcher, SinchClient], r: redis.Redis, sim: Simulator
) -> None:
    settings, d, http = setup
    cid, numbers = enqueue(d, 30)
    plan = settings.plans[PLAN]
    s = for_client(r)
    old = take_lease(r)
    bid = head(r)
    out = take(r, plan, old, bid)
    assert isinstance(out, Go)
    resp = http.send_batch(plan, out.payload)
    assert resp.status == 201
    die(r)  # a long pause: the lease runs out while the old sender still "works"
    new = take_lease(r)
    assert new != old and int(new.split(".")[0]) > int(old.split(".")[0])

    lane_before = r.lrange(keys.lane(PLAN), 0, -1)

    def stale_commit() -> Commit:
        return s.commit(
            PLAN, old, bid, cid, "accepted", rate=plan.rate, retention_s=60, status="201",
            provider_batch_id=resp.batch_id or "",
        )  # fmt: skip

    assert stale_commit() == Lost()
    assert s.hold(PLAN, old, bid, "retry", rate=plan.rate, delay_ms=1000, status="500") == Lost()
    assert s.split(PLAN, old, bid, [Part(f"{bid}.1", 10, out.payload)]) == Lost()
    assert take(r, plan, old, bid) == Lost()
    assert r.lrange(keys.lane(PLAN), 0, -1) == lane_before
    assert d.status(cid).sent == 0
    assert not r.exists(keys.batch(PLAN, f"{bid}.1"))

    # The new holder finds the old sender's batch at the provider and goes on from there.
    assert for_client(r).release(PLAN, new)
    drain_all(Sender(settings, r, http), r)
    assert sends_of(sim, bid) == 1
    assert_fifo(sim, PLAN, numbers)
    # The stale sender wakes up once more after all that: still nothing.
    assert stale_commit() == Lost()
    st = d.status(cid)
    assert (st.state, st.sent) == ("done", 30)
    assert stat(r, "sent") == 30


@pytest.mark.parametrize("prefetch", [True, False])
def test_sender_that_loses_its_lease_mid_drain_stops(
    setup: tuple[Settings, Dispatcher, SinchClient], r: redis.Redis, sim: Simulator, prefetch: bool
) -> None:
    """A Sender whose lease passed to another while a POST was in flight stops at its next
    step and reports it: nothing after the POST in flight is posted.  With prefetch_take (the
    default) the batch it had taken, and marked in flight, while that POST ran stays marked:
    the new holder looks it up (not there) and sends it.  Each recipient accepted once, in
    order."""
    settings, d, http = setup
    plan = dataclasses.replace(settings.plans[PLAN], prefetch_take=prefetch)
    settings = dataclasses.replace(settings, plans={**settings.plans, PLAN: plan})
    cid, numbers = enqueue(d, 30)
    sim.faults = Faults(latency_ms=20)  # a POST longer than RECHECK_AFTER_S, as a real one
    stolen: list[str] = []

    class Thief(SinchClient):
        def send_batch(self, plan: PlanConfig, payload: bytes) -> ProviderResponse:
            resp = super().send_batch(plan, payload)
            if not stolen:  # another sender takes over while this POST was in flight
                r.delete(keys.lease(PLAN))
                stolen.append(take_lease(r))
            return resp

    thief = Thief(timeout_s=5)
    try:
        assert Sender(settings, r, thief).drain(PLAN) == "lost"
    finally:
        thief.close()
    assert len(sim.arrivals(PLAN)) == 1  # the batch taken ahead is checked before its POST
    assert r.llen(keys.lane(PLAN)) == 3  # its commits were refused: the new holder looks up
    assert for_client(r).release(PLAN, stolen[0])
    drain_all(Sender(settings, r, http), r)
    assert_fifo(sim, PLAN, numbers)
    assert d.status(cid).sent == 30


def test_a_plan_its_bucket_holds_back_takes_nothing_ahead(
    deploy: Callable[..., Deployment], r: redis.Redis, sim: Simulator
) -> None:
    """A take ahead of a plan whose bucket is empty after each batch would only answer a wait,
    one more script call per batch: the overlapped loop writes none there (each commit takes
    the next batch after the POST, as the strict loop does) and sends the same, in order."""
    dep = deploy([(PLAN, 2000, {"batch_size": 10, "burst": 10})])
    d = Dispatcher(dep.settings, r)
    http = SinchClient(timeout_s=5)
    _, numbers = enqueue(d, 150, seed=7)
    sender = Sender(dep.settings, r, http)
    ahead: list[str] = []
    take_later, commit_later = sender.scripts.take_later, sender.scripts.commit_later

    def spy_take(plan: str, token: str, bid: str, **kw: Any) -> Any:
        ahead.append(bid)
        return take_later(plan, token, bid, **kw)

    def spy_commit(plan: str, token: str, bid: str, campaign: str, **kw: Any) -> Any:
        if kw["take_next"] is not None:
            ahead.append(kw["take_next"])
        return commit_later(plan, token, bid, campaign, **kw)

    sender.scripts.take_later = spy_take  # type: ignore[method-assign]
    sender.scripts.commit_later = spy_commit  # type: ignore[method-assign]
    try:
        drain_all(sender, r)
    finally:
        http.close()
    assert_fifo(sim, PLAN, numbers)
    assert ahead == [], f"{len(ahead)} takes ahead of a plan with no tokens for them"


@pytest.mark.parametrize("action", ["cancel", "pause", "pause plan"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_control_during_a_post_stops_at_the_batch_being_posted(
    setup: tuple[Settings, Dispatcher, SinchClient],
    r: redis.Redis,
    sim: Simulator,
    prefetch: bool,
    action: str,
) -> None:
    """With prefetch_take (the default) the batch after the one being posted is already taken,
    marked in flight, when an operator acts; behind a POST of a real provider's length it is
    checked before its own POST and given back, so a pause or cancel stops the plan at the
    batch being posted, as without the overlap."""
    settings, d, http = setup
    plan = dataclasses.replace(settings.plans[PLAN], prefetch_take=prefetch)
    settings = dataclasses.replace(settings, plans={**settings.plans, PLAN: plan})
    cid, numbers = enqueue(d, 30)
    sim.faults = Faults(latency_ms=20)  # a POST longer than RECHECK_AFTER_S, as a real one
    lane = [x.decode() for x in r.lrange(keys.lane(PLAN), 0, -1)]
    acted: list[str] = []

    class Operator(SinchClient):
        def send_batch(self, plan: PlanConfig, payload: bytes) -> ProviderResponse:
            resp = super().send_batch(plan, payload)
            if not acted:
                if prefetch:  # the next batch was taken while this POST ran
                    wait_until(
                        lambda: r.hexists(keys.batch(PLAN, lane[1]), Batch.INFLIGHT), 5, "taken"
                    )
                if action == "cancel":
                    d.cancel(cid)
                elif action == "pause":
                    d.pause(cid)
                else:
                    d.pause_plan(PLAN)
                acted.append(action)
            return resp

    operator = Operator(timeout_s=5)
    try:
        Sender(settings, r, operator).drain(PLAN)
    finally:
        operator.close()
    assert [a.client_reference for a in sim.arrivals(PLAN)] == [lane[0]]
    assert not r.hexists(keys.batch(PLAN, lane[1]), Batch.INFLIGHT)  # given back: no lookup
    st = d.status(cid)
    if action == "cancel":
        assert (st.state, st.sent, st.canceled, st.pending) == ("canceled", 10, 20, 0)
        return
    assert st.state == "paused" and st.sent == 10
    if action == "pause":
        d.resume(cid)
    else:
        d.resume_plan(PLAN)
    drain_all(Sender(settings, r, http), r)
    assert_fifo(sim, PLAN, numbers)
    assert d.status(cid).sent == 30
    assert sim.stats()[PLAN]["lookups"] == 0  # nothing was left marked in flight


@pytest.mark.slow
def test_plans_of_a_sigkilled_worker_resume_on_a_live_worker(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([("kill-a", 20, {"batch_size": 5}), ("kill-b", 30, {"batch_size": 5})])
    d = Dispatcher(dep.settings, r)
    expected = {p: mobiles(300, seed=i) for i, p in enumerate(("kill-a", "kill-b"))}
    ids = [
        d.enqueue(Campaign(plan=p, sender="Acme", body="Hi", recipients=["+" + x for x in nums]))
        for p, nums in expected.items()
    ]
    victim = dep.start_worker()
    wait_until(
        lambda: all(len(sim.accepted_recipients(p)) >= 60 for p in expected), 60, "sending started"
    )
    dep.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    for p in expected:
        assert len(sim.accepted_recipients(p)) < len(expected[p]), f"{p} finished before the kill"
    dep.start_worker()
    wait_until(
        lambda: all(d.status(c).state == "done" for c in ids), 90, "campaigns done after the kill"
    )
    for p, nums in expected.items():
        assert_fifo(sim, p, nums)
        resumed = min(a.t for a in sim.arrivals(p) if a.t > killed_at)
        print(f"{p}: first batch {resumed - killed_at:.1f} s after the SIGKILL")


@pytest.mark.parametrize("retries", [0, 3])
def test_enqueue_whose_reply_is_lost_is_written_once_and_reported_queued(
    setup: tuple[Settings, Dispatcher, SinchClient], redis_server: Any, r: redis.Redis, retries: int
) -> None:
    """The EXEC reached Redis but its reply was lost (connection cut).  The campaign is queued,
    so enqueue must say so (a caller told "failed" would enqueue it again: sent twice), and a
    client that retries on connection errors must not queue its batches a second time."""
    settings, _, _ = setup

    class LoseReply(redis.Connection):
        """Cuts the connection once, right after a MULTI ... EXEC was sent in full."""

        armed = True
        exec_sent = False

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            chunks = [command] if isinstance(command, bytes | str) else list(command)
            LoseReply.exec_sent = any(b"EXEC" in bytes(c) for c in chunks if isinstance(c, bytes))
            super().send_packed_command(chunks, check_health)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            if LoseReply.armed and LoseReply.exec_sent:
                LoseReply.armed = False
                time.sleep(0.2)  # the server runs the whole transaction meanwhile
                self.disconnect()
                raise redis.ConnectionError("reply lost (test)")
            return super().read_response(*args, **kwargs)

    pool = redis.ConnectionPool.from_url(
        redis_server.url, connection_class=LoseReply, retry=Retry(NoBackoff(), retries)
    )
    client = redis.Redis(connection_pool=pool)
    d = Dispatcher(settings, client)
    cid: str | None
    try:
        cid = d.enqueue(
            Campaign(
                plan=PLAN, sender="Acme", body="Hi", recipients=["+46701234567", "+46701234568"]
            )
        )
    finally:
        client.close()
    assert not LoseReply.armed, "the reply was never cut"
    assert [x.decode() for x in r.lrange(keys.lane(PLAN), 0, -1)] == [f"{cid}.0"]
    assert stat(r, "pending") == stat(r, "enqueued") == 2


class CutMidWrite(redis.Connection):
    """Sends half of any large request, then the connection breaks (every time)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, bytes | str) else list(command)
        size = sum(len(c) for c in chunks)
        if size < 1_000_000:
            super().send_packed_command(chunks, check_health)
            return
        if not self._sock:
            self.connect()
        assert self._sock is not None
        sent = 0
        for c in chunks:
            if sent > size // 2:
                break
            self._sock.sendall(c if isinstance(c, bytes) else str(c).encode())
            sent += len(c)
        self.disconnect()
        raise redis.ConnectionError("connection cut mid-write (test)")


def assert_nothing_queued(r: redis.Redis, plan: str) -> None:
    assert r.llen(keys.lane(plan)) == 0
    assert not list(r.scan_iter(match=f"dsp:{{{plan}}}:*", count=10_000))
    assert r.hlen(keys.CAMPAIGNS) == 0
    assert r.zscore(keys.DUE, plan) is None


@pytest.mark.slow
def test_million_recipient_enqueue_is_atomic_and_sent_batches_leave_redis(
    deploy: Callable[..., Deployment], redis_server: Any, r: redis.Redis, sim: Simulator
) -> None:
    dep = deploy([("big", 1_000_000)])
    settings = dep.settings
    numbers = [f"+4670{i:07d}" for i in range(1_000_000)]
    campaign = Campaign(plan="big", sender="Acme", body="Hello", recipients=numbers)
    base_memory = int(r.info("memory")["used_memory"])

    # 1. The connection breaks halfway through the write: nothing of it is queued.
    pool = redis.ConnectionPool.from_url(redis_server.url, connection_class=CutMidWrite)
    cut = redis.Redis(connection_pool=pool)
    with pytest.raises(RedisUnavailable):
        Dispatcher(settings, cut).enqueue(campaign)
    cut.close()
    assert_nothing_queued(r, "big")

    # 2. Redis runs out of memory partway through the transaction: nothing is queued.
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", base_memory + 8_000_000)
    try:
        with pytest.raises(StorageError, match=r"maxmemory|EXECABORT"):
            Dispatcher(settings, r).enqueue(campaign)
    finally:
        r.config_set("maxmemory", 0)
    assert_nothing_queued(r, "big")

    # 3. It goes through: one campaign, 1,000 batches of 1,000, in order.
    d = Dispatcher(settings, r)
    cid = d.enqueue(campaign)
    assert r.llen(keys.lane("big")) == 1000
    assert d.status(cid).recipients == 1_000_000
    queued_memory = int(r.info("memory")["used_memory"]) - base_memory
    assert queued_memory > 10_000_000

    # 4. Sent and accepted batches leave Redis: only the campaign's record and counters stay.
    http = SinchClient(timeout_s=30)
    try:
        sender = Sender(settings, r, http, timing=Timing(slice_s=30))
        deadline = time.monotonic() + 300
        while r.llen(keys.lane("big")):
            assert time.monotonic() < deadline
            sender.drain("big")
    finally:
        http.close()
    st = d.status(cid)
    assert (st.state, st.sent) == ("done", 1_000_000)
    assert sim.stats()["big"]["recipients_accepted"] == 1_000_000
    assert not list(r.scan_iter(match="dsp:{big}:b:*", count=10_000))
    left = int(r.info("memory")["used_memory"]) - base_memory
    assert left < queued_memory / 20, f"{left} bytes still held after sending"
