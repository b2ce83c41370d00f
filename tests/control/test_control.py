"""Operators stop and steer running work (CONTRACT.md "Campaign and plan control"), checked
at the provider's side: real workers, real Redis, the simulator's arrival log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.support.checks import assert_envelope, worst_window
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "ctl"


def _campaigns_in_arrival_order(sim: Simulator) -> list[str]:
    """The campaign of each accepted batch, runs collapsed: [A, C, B] means all of A's
    batches arrived, then C's, then B's."""
    runs: list[str] = []
    for a in sim.arrivals(PLAN):
        if a.status != 201 or not a.client_reference:
            continue
        c = a.client_reference.split(".", 1)[0]
        if not runs or runs[-1] != c:
            runs.append(c)
    return runs


def _three(d: Dispatcher, n: int) -> tuple[list[str], list[list[str]]]:
    numbers = [mobiles(n, seed=s) for s in range(3)]
    ids = [
        d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in ns]))
        for ns in numbers
    ]
    return ids, numbers


@pytest.mark.slow
def test_a_paused_campaign_keeps_its_place_and_later_ones_go_ahead(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    (a, b, c), numbers = _three(d, 100)
    paused = dep.cli("campaigns", "pause", b, "--json")
    assert paused.returncode == 0, paused.stderr
    st = json.loads(paused.stdout)
    assert (st["state"], st["paused_by"]) == ("paused", "campaign")
    dep.start_worker(concurrency=1)
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(c).state == "done", 60, "the campaign after the paused one")
    assert d.status(b).sent == 0
    assert _campaigns_in_arrival_order(sim) == [a, c]
    listed = json.loads(dep.cli("campaigns", "--plan", PLAN, "--json").stdout)
    assert [x["campaign_id"] for x in listed] == [c, b, a]  # newest first
    assert {x["campaign_id"]: x["state"] for x in listed} == {a: "done", b: "paused", c: "done"}

    resumed = dep.cli("campaigns", "resume", b)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: d.status(b).state == "done", 60, "the resumed campaign")
    assert _campaigns_in_arrival_order(sim) == [a, c, b]
    got = sim.accepted_recipients(PLAN)
    assert got == numbers[0] + numbers[2] + numbers[1]  # exactly once, FIFO within each
    for cid in (a, b, c):
        s = d.status(cid)
        assert s.sent + s.canceled == s.recipients == 100
    assert_envelope(sim, PLAN, 50, 50)
    actions = [(e.action, e.target) for e in d.audit()]
    assert actions[:2] == [("campaign.resume", b), ("campaign.pause", b)]


@pytest.mark.slow
def test_cancel_half_way_sends_nothing_more_but_a_batch_in_flight(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    (_, _, c), numbers = _three(d, 150)
    dep.start_worker(concurrency=1)
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(c).sent >= 60, 60, "the third campaign half-way")
    canceled = dep.cli("campaigns", "cancel", c, "--json")
    assert canceled.returncode == 0, canceled.stderr
    before = {x.client_reference for x in sim.arrivals(PLAN) if x.status == 201}
    st = json.loads(canceled.stdout)
    assert st["state"] == "canceled"
    time.sleep(1.5)  # long enough for several more batches at 5 batches/s, were any sent
    after = [
        x.client_reference for x in sim.arrivals(PLAN)
        if x.status == 201 and x.client_reference not in before
    ]  # fmt: skip
    assert len(after) <= 1, f"sent after the cancel: {after}"
    wait_until(lambda: d.status(c).pending == 0, 10, "the in-flight batch committed")
    s = d.status(c)
    assert s.sent + s.canceled == s.recipients == 150 and s.canceled > 0
    got = sim.accepted_recipients(PLAN)
    assert len(got) == len(set(got))
    assert got == numbers[0] + numbers[1] + numbers[2][: s.sent]  # FIFO for what was sent
    again = dep.cli("campaigns", "cancel", c, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["canceled"] == s.canceled
    assert r.llen(f"dsp:{{{PLAN}}}:lane") == 0


@pytest.mark.slow
def test_plans_set_halves_then_doubles_the_rate_mid_campaign(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 100, {"batch_size": 25})])
    d = Dispatcher(dep.settings, r)
    cid = d.enqueue(
        Campaign(
            plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in mobiles(1800, seed=1)]
        )
    )
    dep.start_worker(concurrency=2)
    wait_until(lambda: d.status(cid).sent >= 200, 30, "sending at the first rate")
    out = dep.cli("plans", "set", PLAN, "--rate", "50", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sources"]["rate"] == "runtime"
    t_half = time.time()
    time.sleep(7)
    # Doubled back to 100/s: the simulator, like Sinch, refuses more than the plan's own limit.
    assert dep.cli("plans", "set", PLAN, "--rate", "100", "--burst", "100").returncode == 0
    t_double = time.time()
    time.sleep(5)
    assert dep.cli("plans", "reset", PLAN).returncode == 0
    wait_until(lambda: d.status(cid).state == "done", 60, "the campaign")

    arrivals = sim.arrivals(PLAN)
    slow = [a for a in arrivals if t_half + 2 <= a.t < t_double]
    fast = [a for a in arrivals if t_double + 2 <= a.t < t_double + 5]
    for part, rate in ((slow, 50), (fast, 100)):
        worst, where = worst_window(part, rate, rate)
        assert worst <= 1.0, f"envelope of {rate}/s exceeded: {where}"
        # The mean over the part, first arrival to last (a regular stream: no edge bias).
        mean = sum(len(a.to) for a in part[1:]) / (part[-1].t - part[0].t)
        assert mean >= 0.97 * rate, f"{mean:.1f}/s at a rate of {rate}/s"
    got = sim.accepted_recipients(PLAN)
    assert len(got) == len(set(got)) == 1800


@pytest.mark.slow
def test_a_scheduled_campaign_is_held_until_due_then_paced(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    dep.start_worker(concurrency=1)
    send_at = time.time() + 8
    later = d.enqueue(
        Campaign(
            plan=PLAN, sender="Acme", body="Later", recipients=["+" + x for x in mobiles(200, seed=2)],
            send_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(send_at)),
        )
    )  # fmt: skip
    assert d.status(later).state == "scheduled"
    # Held here, so posted without send_at: the provider's queue stays out of it.
    held = r.lrange(keys.held(PLAN, later), 0, -1)
    assert len(held) == 20
    assert all(
        b"send_at" not in (r.hget(keys.batch(PLAN, h.decode()), "payload") or b"") for h in held
    )
    assert r.llen(keys.lane(PLAN)) == 0
    now = d.enqueue(
        Campaign(
            plan=PLAN, sender="Acme", body="Now", recipients=["+" + x for x in mobiles(50, seed=9)]
        )
    )
    wait_until(lambda: d.status(now).state == "done", 30, "the campaign due now")
    assert d.status(later).sent == 0
    wait_until(lambda: d.status(later).state == "done", 40, "the scheduled campaign")
    first = min(a.t for a in sim.arrivals(PLAN) if (a.client_reference or "").startswith(later))
    assert first >= int(send_at) - 0.25  # send_at has whole seconds
    assert_envelope(sim, PLAN, 50, 50)


@pytest.mark.slow
def test_an_expired_campaign_ends_done_with_its_unsent_recipients_expired(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 20, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    expire_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
    cid = d.enqueue(
        Campaign(
            plan=PLAN, sender="Acme", body="Soon stale", recipients=["+" + x for x in mobiles(300, seed=3)],
            expire_at=expire_at,
        )
    )  # fmt: skip
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).state == "done", 40, "the expiring campaign")
    s = d.status(cid)
    assert s.expired > 0 and s.sent + s.expired == s.recipients == 300, s
    assert len(sim.accepted_recipients(PLAN)) == s.sent
    assert s.finished_at is not None


@pytest.mark.slow
def test_cancel_at_provider_deletes_the_accepted_batches_and_reports_each_answer(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 50, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    cid = d.enqueue(
        Campaign(
            plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in mobiles(200, seed=4)]
        )
    )
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).sent >= 60, 30, "some batches accepted")
    out = dep.cli("campaigns", "cancel", cid, "--at-provider", "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    accepted = {a.batch_id for a in sim.arrivals(PLAN) if a.status == 201}
    answers = st["at_provider"]
    assert {a["batch_id"] for a in answers} <= accepted and len(answers) >= 6
    assert all(a["status"] == 200 for a in answers), answers
    assert d.audit()[0].action == "campaign.cancel_at_provider"
    assert "s3cr3t" not in out.stdout + out.stderr
