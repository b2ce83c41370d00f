"""A plan with a wrong token: its circuit opens, the other plan is not held up, nothing of the
failing plan is lost or dead-lettered; once the token is fixed (workers restarted with the new
environment) and the plan resumed (`dispatcher plans resume ID`), it finishes.

Real workers, real Redis, the simulator over real HTTP.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from sinch_simulator import Simulator
from tests.support.checks import assert_no_secrets
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles


def plans_json(dep: Deployment) -> dict[str, Any]:
    out = dep.cli("plans", "--json")
    assert out.returncode == 0, out.stderr
    return {p["plan"]: p for p in json.loads(out.stdout)}


@pytest.mark.slow
def test_wrong_token_opens_the_circuit_then_resume_finishes(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([("healthy", 800, {"batch_size": 50}), ("locked", 800, {"batch_size": 50})])
    right = dep.env["LOCKED_TOKEN"]
    wrong = "tok-locked-typo-5ecret"
    dep.env["LOCKED_TOKEN"] = wrong  # what the workers are started with
    d = Dispatcher(dep.settings, r)
    locked_numbers = [mobiles(300, 1), mobiles(300, 2)]
    healthy_numbers = mobiles(2000, 3)
    # The failing plan's campaigns are queued first: they must not hold the other one up.
    locked = [
        d.enqueue(
            Campaign(plan="locked", sender="Acme", body="Hi", recipients=["+" + n for n in ns])
        )
        for ns in locked_numbers
    ]
    healthy = d.enqueue(
        Campaign(
            plan="healthy", sender="Acme", body="Hi", recipients=["+" + n for n in healthy_numbers]
        )
    )
    worker = dep.start_worker(concurrency=2)

    wait_until(lambda: d.status(healthy).state == "done", 60, "the healthy plan to finish")
    wait_until(lambda: plans_json(dep)["locked"]["circuit"] == "open", 30, "the circuit to open")
    assert sim.accepted_recipients("healthy") == healthy_numbers

    # Open: stopped, visible, queue intact, nothing dead-lettered.
    p = plans_json(dep)["locked"]
    assert (p["circuit"], p["pending"], p["circuit_code"]) == ("open", 600, "401")
    for cid in locked:
        st = d.status(cid)
        assert (st.state, st.sent, st.dead_lettered, st.pending) == ("paused", 0, 0, 300)
    assert d.dead_letters() == []
    out = dep.cli("dlq", "list", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []
    arrivals = sim.arrivals("locked")
    # One probe (the next is 30 s away): only the head batch was tried, and it was refused.
    assert {a.status for a in arrivals} == {401}
    assert {a.client_reference for a in arrivals} == {f"{locked[0]}.0"}
    human = dep.cli("plans")
    assert "open" in human.stdout and "401" in human.stdout
    assert "plan locked: circuit open after 401" in dep.log_text()

    # Fix the token where the workers read it, restart them, resume the plan.
    dep.env["LOCKED_TOKEN"] = right
    dep.kill(worker, signal.SIGTERM)
    dep.start_worker(concurrency=2)
    resumed = dep.cli("plans", "resume", "locked")
    assert resumed.returncode == 0 and "circuit closed" in resumed.stdout, resumed.stderr
    wait_until(lambda: all(d.status(c).state == "done" for c in locked), 60, "the resumed plan")

    # Everything arrived once, in enqueue order; nothing was dead-lettered.
    assert sim.accepted_recipients("locked") == locked_numbers[0] + locked_numbers[1]
    for cid in locked:
        st = d.status(cid)
        assert (st.sent, st.dead_lettered, st.pending) == (300, 0, 0)
    p = plans_json(dep)["locked"]
    assert (p["circuit"], p["pending"]) == ("closed", 0)
    assert d.dead_letters() == []
    assert_no_secrets(dep, r, [human.stdout, resumed.stdout], also=[right, wrong])
