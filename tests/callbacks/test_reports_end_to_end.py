"""Delivery reports the whole way: workers post batches asking for reports, the simulator
reports 90% Delivered, 6% Failed and 4% Expired with 20% of callbacks repeated (so some come
out of order), the receiver counts them: status and metrics equal the simulator's own tally."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from prometheus_client import generate_latest

from dispatcher import Campaign, Dispatcher
from dispatcher.callbacks import make_wsgi_app
from dispatcher.callbacks.server import make_server, serve_in_thread
from dispatcher.devtools.localredis import free_port
from dispatcher.observability.exporter import registry_for
from sinch_simulator import ReportSettings, Simulator
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "reports"


@pytest.mark.slow
def test_status_and_metrics_match_the_simulators_tally(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    port = free_port()
    dep = deploy([(PLAN, 2000, {"batch_size": 500})], callbacks=f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, make_wsgi_app(dep.settings, r))
    serve_in_thread(server)
    sim.reports = ReportSettings(
        mix={"Delivered": 0.90, "Failed": 0.06, "Expired": 0.04}, delay_s=0.3, repeat_ratio=0.2,
        retry_base_s=0.2,
    )  # fmt: skip
    try:
        d = Dispatcher(dep.settings, r)
        numbers = mobiles(10_000, seed=21)
        cid = d.enqueue(
            Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
        )
        dep.start_worker(concurrency=1)
        dep.start_worker(concurrency=1)
        wait_until(lambda: d.status(cid).state == "done", 60, "the campaign sent")
        wait_until(lambda: sim.reports_pending() == 0, 60, "every callback delivered")
        tally = sim.report_tally(PLAN)
        assert sum(tally.values()) == 10_000 and set(tally) == {"delivered", "failed", "expired"}
        delivery = d.status(cid).delivery
        assert {s: delivery[s] for s in tally} == tally
        assert sum(delivery.values()) == 10_000
        text = generate_latest(registry_for(dep.settings, r)).decode()
        for status, n in tally.items():
            line = (
                f'dispatcher_delivery_reports_total{{plan="{PLAN}",status="{status}"}} {float(n)}'
            )
            assert line in text
    finally:
        server.shutdown()
        server.server_close()
