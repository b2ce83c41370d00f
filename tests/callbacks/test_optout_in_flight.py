"""A number that opts out after its campaign was enqueued is not sent to, provided its batch
was not posted yet; a later campaign drops it at enqueue."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from sinch_simulator import Simulator
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "optout"


@pytest.mark.slow
def test_an_opt_out_during_a_campaign_stops_its_later_batches(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 40, {"batch_size": 10})])
    d = Dispatcher(dep.settings, r)
    numbers = mobiles(300, seed=11)
    cid = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
    )
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).sent >= 40, 30, "sending")
    late = [numbers[-1], numbers[-25], numbers[-50]]
    early = numbers[0]  # already sent: an opt-out cannot take back a posted batch
    d.suppress(["+" + n for n in [*late, early]], plan=PLAN)
    wait_until(lambda: d.status(cid).state == "done", 60, "the campaign")
    got = sim.accepted_recipients(PLAN)
    assert not set(late) & set(got)
    assert early in got
    assert len(got) == len(set(got)) == 297
    s = d.status(cid)
    assert (s.sent, s.suppressed, s.pending) == (297, 3, 0)
    again = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in numbers[:5]])
    )
    assert again.suppressed == 1 and again.recipients == 4
