"""Bad control input gets one line and exit 2, and leaves Redis as it was; concurrent control
actions leave one consistent state; a worker killed between a cancel and its commit loses
nothing and sends nothing twice."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import Campaign, ControlError, Dispatcher, NotFound
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.storage import keys
from sinch_simulator import Faults, Simulator
from tests.support.checks import redis_dump
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "ctl"


def _enqueue(d: Dispatcher, n: int, seed: int = 0) -> str:
    return d.enqueue(
        Campaign(
            plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in mobiles(n, seed=seed)]
        )
    )


def test_bad_control_input_is_one_line_exit_2_and_changes_nothing(
    deploy: Callable[..., Deployment], r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    cid = _enqueue(d, 30)
    before = sorted(redis_dump(r).splitlines())
    for args, words in [
        (("campaigns", "pause", "c-nope"), "no campaign 'c-nope'"),
        (("campaigns", "cancel", "c-nope"), "no campaign 'c-nope'"),
        (("plans", "pause", "nope"), "no plan 'nope'"),
        (("plans", "set", "nope", "--rate", "5"), "no plan 'nope'"),
        (("plans", "set", PLAN, "--rate", "0"), "rate 0 must be a number > 0"),
        (("plans", "set", PLAN, "--rate", "-3"), "rate -3 must be a number > 0"),
        (("plans", "set", PLAN, "--burst", "0.5"), "burst 0.5 must be a number >= 1"),
        (("plans", "set", PLAN, "--batch-size", "60"), "batch_size 60 is more than burst 50"),
        (("plans", "set", PLAN), "give at least one of rate, burst, batch_size"),
    ]:
        out = dep.cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, out.stderr)
    assert sorted(redis_dump(r).splitlines()) == before
    # A done campaign cannot be paused or canceled: it has nothing left to stop.
    d.cancel(cid)
    with pytest.raises(ControlError, match="is canceled"):
        d.pause(cid)
    assert d.cancel(cid).state == "canceled"  # idempotent
    empty = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["nope"]))
    assert d.status(empty).state == "done"
    for verb in ("pause", "cancel"):
        out = dep.cli("campaigns", verb, empty)
        assert out.returncode == 2 and "is done" in out.stderr, out.stderr
    with pytest.raises(NotFound):
        d.resume("c-nope")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.sampled_from(["pause", "resume", "cancel"]), min_size=2, max_size=6))
def test_concurrent_controls_leave_one_consistent_state(
    deploy_once: tuple[Deployment, Dispatcher], ops: list[str]
) -> None:
    _, d = deploy_once
    r = d.redis
    r.flushall()
    first, cid, last = (_enqueue(d, 40, seed=s) for s in range(3))
    barrier = threading.Barrier(len(ops))
    errors: list[BaseException] = []

    def act(op: str) -> None:
        barrier.wait()
        try:
            getattr(d, op)(cid, actor=f"op-{op}")
        except ControlError:
            pass  # a pause or resume after the cancel: refused, nothing changed
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=act, args=(op,)) for op in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = d.status(cid)
    lane = [x.decode() for x in r.lrange(keys.lane(PLAN), 0, -1)]
    held = [x.decode() for x in r.lrange(keys.held(PLAN, cid), 0, -1)]
    mine = [x for x in lane if x.startswith(cid + ".")]
    marker = f"#{cid}" in lane
    if "cancel" in ops:
        assert s.state == "canceled" and s.canceled == 40 and s.pending == 0
        assert mine == [] and held == [] and not marker
    elif s.state == "paused":
        assert mine == [] and len(held) == 4 and marker and lane.count(f"#{cid}") == 1
    else:
        assert s.state == "queued" and len(mine) == 4 and held == [] and not marker
    # The campaigns around it never move.
    assert [x for x in lane if not x.startswith(("#", cid))] == [
        f"{first}.{i}" for i in range(4)
    ] + [f"{last}.{i}" for i in range(4)]
    stats = int(r.hget(keys.stats(PLAN), "pending") or 0)
    assert stats == 80 + s.pending


@pytest.fixture
def deploy_once(deploy: Callable[..., Deployment], r: redis.Redis) -> tuple[Deployment, Dispatcher]:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    return dep, Dispatcher(dep.settings, r)


@pytest.mark.slow
def test_a_worker_killed_between_a_cancel_and_its_commit_loses_nothing(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    cid = _enqueue(d, 200)
    # Every answer is slow, so a batch is surely in flight when the cancel lands.
    sim.faults = Faults(latency_ms=1500)
    worker = dep.start_worker(concurrency=1)
    wait_until(
        lambda: bool(r.hget(keys.batch(PLAN, f"{cid}.1"), "inflight")), 30, "batch 1 in flight"
    )
    canceled = d.cancel(cid)
    assert canceled.state == "canceled"
    dep.kill(worker, signal.SIGKILL)
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).pending == 0, 60, "the in-flight batch resolved")
    s = d.status(cid)
    got = sim.accepted_recipients(PLAN)
    assert len(got) == len(set(got)) == s.sent
    assert s.sent + s.canceled == s.recipients == 200
    assert r.llen(keys.lane(PLAN)) == 0


def test_control_metrics_follow_the_actions(
    deploy: Callable[..., Deployment], r: redis.Redis
) -> None:
    from prometheus_client import generate_latest

    from dispatcher.observability.exporter import registry_for

    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    keep, drop = _enqueue(d, 30, seed=1), _enqueue(d, 20, seed=2)

    def sample(name: str) -> float:
        text = generate_latest(registry_for(dep.settings, r)).decode()
        line = next(
            x for x in text.splitlines() if x.startswith(f'dispatcher_{name}{{plan="{PLAN}"}}')
        )
        return float(line.rsplit(" ", 1)[1])

    assert (sample("plan_paused"), sample("campaigns_paused")) == (0, 0)
    d.pause_plan(PLAN, actor="ops")
    d.pause(keep, actor="ops")
    d.cancel(drop, actor="ops")
    d.set_plan(PLAN, rate=20, actor="ops")
    assert (sample("plan_paused"), sample("campaigns_paused")) == (1, 1)
    assert sample("canceled_recipients_total") == 20
    assert (sample("rate_limit_per_second"), sample("rate_limit_runtime")) == (20, 1)
    assert [(e.action, e.actor) for e in d.audit()][:4] == [
        ("plan.set", "ops"),
        ("campaign.cancel", "ops"),
        ("campaign.pause", "ops"),
        ("plan.pause", "ops"),
    ]
    d.reset_plan(PLAN)
    d.resume_plan(PLAN)
    assert (
        sample("plan_paused"),
        sample("rate_limit_per_second"),
        sample("rate_limit_runtime"),
    ) == (0, 50, 0)
    out = dep.cli("audit", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["action"] == "plan.resume"


def test_runtime_limits_pauses_and_the_audit_survive_a_redis_crash_with_aof(
    deploy: Callable[..., Deployment],
) -> None:
    with LocalRedis(appendonly=True, appendfsync="always") as server:
        dep = deploy([(PLAN, 50, {"batch_size": 10})], redis_url=server.url)
        client = redis.Redis.from_url(server.url)
        d = Dispatcher(dep.settings, client)
        cid = _enqueue(d, 30)
        d.set_plan(PLAN, rate=12, burst=20, actor="ops")
        d.pause(cid, actor="ops")
        server.crash()  # SIGKILL: only what the AOF holds comes back
        server.start()
        p = next(x for x in d.plans() if x.plan == PLAN)
        assert (p.rate, p.burst, p.source) == (12, 20, "runtime")
        assert d.status(cid).state == "paused"
        assert [e.action for e in d.audit()][:2] == ["campaign.pause", "plan.set"]
        client.close()
