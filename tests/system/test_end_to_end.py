"""One campaign travels the whole way: API/CLI -> Redis -> Celery workers -> HTTP -> simulator."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.support.deploy import Deployment, wait_until
from tests.support.numbers import mobiles


@pytest.mark.slow
def test_three_plans_two_workers_5000_recipients_exactly_once_in_order(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    plans = {"alpha": (400, 1000), "bravo": (800, 1500), "charlie": (1500, 2500)}
    dep = deploy([(p, rate) for p, (rate, _) in plans.items()])
    d = Dispatcher(dep.settings, r)
    enqueued: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    # Two campaigns per plan, so that order across campaigns of one plan is checked too.
    for i, (plan, (_, n)) in enumerate(plans.items()):
        numbers = mobiles(n, seed=i)
        enqueued[plan] = numbers
        half = n // 2
        ids[plan] = [
            d.enqueue(
                Campaign(plan=plan, sender="Acme", body="Hello", recipients=["+" + x for x in part])
            )
            for part in (numbers[:half], numbers[half:])
        ]
    assert sum(len(v) for v in enqueued.values()) == 5000
    dep.start_worker(concurrency=1)
    dep.start_worker(concurrency=1)

    def all_done() -> bool:
        return all(d.status(c).state == "done" for cs in ids.values() for c in cs)

    wait_until(all_done, 120, "all campaigns done")
    for plan, numbers in enqueued.items():
        got = sim.accepted_recipients(plan)
        assert len(got) == len(set(got)), f"{plan}: a recipient arrived twice"
        assert got == numbers, f"{plan}: arrivals differ from enqueue order"
    for plan, cs in ids.items():
        for c in cs:
            out = dep.cli("status", c, "--json")
            assert out.returncode == 0, out.stderr
            st = json.loads(out.stdout)
            assert st["state"] == "done"
            assert (
                st["sent"]
                == st["recipients"]
                == len(enqueued[plan]) // 2 + (len(enqueued[plan]) % 2 if c == cs[1] else 0)
            )
            assert st["dead_lettered"] == 0 and st["pending"] == 0
    # Retention: accepted batches leave Redis once committed.
    for plan in plans:
        assert r.llen(keys.lane(plan)) == 0
        assert not list(r.scan_iter(match=f"dsp:{{{plan}}}:b:*"))
    assert "s3cr3t" not in dep.log_text()
