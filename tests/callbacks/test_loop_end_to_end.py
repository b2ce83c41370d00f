"""The loop closed through real processes: workers post batches to the simulator, the simulator
posts reports and inbound messages to `dispatcher callbacks`' server, and what comes back changes
what is sent next (a campaign failing at 40% pauses itself; a STOP stops a running campaign)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.callbacks import make_wsgi_app
from dispatcher.callbacks.server import make_server, serve_in_thread
from dispatcher.devtools.localredis import free_port
from sinch_simulator import ReportSettings, Simulator
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles


@pytest.fixture
def receiver(r: redis.Redis) -> Iterator[Callable[[Deployment], None]]:
    servers = []

    def start(dep: Deployment) -> None:
        port = int(str(dep.settings.callback_base_url).rsplit(":", 1)[1])
        server = make_server("127.0.0.1", port, make_wsgi_app(dep.settings, r))
        serve_in_thread(server)
        servers.append(server)

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.slow
def test_a_campaign_whose_reports_fail_at_40_percent_pauses_itself(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    r: redis.Redis,
    receiver: Callable[[Deployment], None],
) -> None:
    plan = "halting"
    opts = {"batch_size": 20, "halt_failure_ratio": 0.3, "halt_min_reports": 200}
    dep = deploy([(plan, 100, opts)], callbacks=f"http://127.0.0.1:{free_port()}")
    receiver(dep)
    sim.reports = ReportSettings(mix={"Delivered": 0.6, "Failed": 0.4}, delay_s=0.1)
    d = Dispatcher(dep.settings, r)
    cid = d.enqueue(
        Campaign(plan=plan, sender="Acme", body="Hi", recipients=mobiles(3000, seed=51))
    )
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).state == "paused", 60, "the campaign to halt itself")
    s = d.status(cid)
    assert s.paused_by == "failures"
    assert s.sent < 3000 and s.pending > 0  # halted with most of it still unsent
    reported = sum(s.delivery.values())
    assert reported >= 200 and s.delivery["failed"] > 0.3 * reported
    pause = next(e for e in d.audit() if e.action == "campaign.pause")
    assert pause.actor == "halt"
    sent_at_halt = len(sim.accepted_recipients(plan))
    # Paused means paused: nothing more goes out (the batch in flight at the halt may land).
    wait_until(lambda: sim.reports_pending() == 0, 30, "the reports of what was sent")
    assert len(sim.accepted_recipients(plan)) <= sent_at_halt + opts["batch_size"]


@pytest.mark.slow
def test_a_stop_from_a_recipient_reaches_its_running_campaign_and_the_next_one(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    r: redis.Redis,
    receiver: Callable[[Deployment], None],
) -> None:
    plan = "stopping"
    dep = deploy([(plan, 40, {"batch_size": 10})], callbacks=f"http://127.0.0.1:{free_port()}")
    receiver(dep)
    d = Dispatcher(dep.settings, r)
    numbers = mobiles(300, seed=52)
    cid = d.enqueue(Campaign(plan=plan, sender="Acme", body="Hi", recipients=numbers))
    dep.start_worker(concurrency=1)
    wait_until(lambda: d.status(cid).sent >= 40, 30, "sending")
    url = d.callback_url(plan)
    assert url is not None
    stopper, changed_mind = numbers[-1], numbers[-2]
    sim.send_inbound(url, "+" + stopper, "Stop.")
    sim.send_inbound(url, "+" + changed_mind, "STOP please")
    wait_until(lambda: changed_mind in d.suppressed(plan), 10, "the STOPs stored")
    sim.send_inbound(url, changed_mind, "start")
    wait_until(lambda: changed_mind not in d.suppressed(plan), 10, "the START stored")
    wait_until(lambda: d.status(cid).state == "done", 60, "the campaign")
    got = sim.accepted_recipients(plan)
    assert stopper not in got and changed_mind in got
    assert len(got) == len(set(got)) == 299
    s = d.status(cid)
    assert (s.sent, s.suppressed, s.pending) == (299, 1, 0)
    again = d.enqueue(Campaign(plan=plan, sender="Acme", body="Hi", recipients=numbers[-3:]))
    assert (again.recipients, again.suppressed) == (2, 1)
