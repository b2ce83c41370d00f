"""Redis outages: SIGKILL the state Redis (with AOF) and restart it on the same port, again and
again, while two workers send a campaign.  Every worker process must survive every reconnect
with its ticker still beating, and the campaign must end with every recipient exactly once, in
order.  With Redis as the broker too, each restart is also a broker outage for Celery: the case
in which kombu's Redis transport used to kill a worker (issue 16).  With RabbitMQ as the
broker, only the state goes away.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.devtools.localredis import LocalRedis
from sinch_simulator import Simulator
from tests.support.deploy import Deployment, wait_until

pytestmark = pytest.mark.slow

RESTARTS = 10
RATE = 60
RECIPIENTS = 3000  # 50 s of sending at RATE: the restarts all land while it sends


def _rabbit_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def aof_redis() -> Iterator[LocalRedis]:
    # appendfsync always: the persistence docs/operations.md asks for, under which a SIGKILL
    # loses no acknowledged write.
    with LocalRedis(appendonly=True, appendfsync="always") as server:
        yield server


def _at(beat: dict[str, object]) -> float:
    at = beat.get("at")
    return float(at) if isinstance(at, int | float) else 0.0


def _beats(dep: Deployment) -> list[dict[str, object]]:
    out = []
    for i in range(len(dep.procs)):
        try:
            out.append(json.loads(Path(dep.env["HEALTH_DIR"], f"w{i}.health").read_text()))
        except (OSError, ValueError):
            out.append({})
    return out


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_workers_survive_repeated_redis_restarts(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    aof_redis: LocalRedis,
    broker: str,
    tmp_path: Path,
) -> None:
    if broker == "amqp" and not _rabbit_answers():
        pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
    plan = f"outage-{broker}-{os.getpid()}"
    dep = deploy([(plan, RATE, {"batch_size": 20})], redis_url=aof_redis.url)
    if broker == "amqp":
        dep.env["DISPATCH_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672//"
    dep.env["HEALTH_DIR"] = str(tmp_path)
    r = redis.Redis.from_url(aof_redis.url)
    d = Dispatcher(dep.settings, r)
    numbers = [f"4670{i:07d}" for i in range(2_000_000, 2_000_000 + RECIPIENTS)]
    cid = d.enqueue(
        Campaign(plan=plan, sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
    )
    workers = [
        dep.start_worker(
            concurrency=2,
            extra_env={"DISPATCH_HEALTH_FILE": str(tmp_path / f"w{i}.health")},
            as_users_run_it=True,
        )
        for i in range(2)
    ]
    wait_until(lambda: len(sim.accepted_recipients(plan)) > 100, 60, "sending to start")

    def alive_and_beating(since: float, n: int) -> bool:
        dead = [w.pid for w in workers if w.poll() is not None]
        assert not dead, f"worker(s) {dead} exited after restart {n}:\n{dep.log_text()[-4000:]}"
        # A dead ticker thread stops beating; one that lost Redis beats with redis=false.
        return all(b.get("redis") is True and _at(b) > since for b in _beats(dep))

    for n in range(1, RESTARTS + 1):
        aof_redis.crash()
        down_at = time.time()
        time.sleep(0.5)
        aof_redis.start()
        sent_before = len(sim.accepted_recipients(plan))
        wait_until(
            lambda b=sent_before, n=n: (
                alive_and_beating(0, n)  # type: ignore[misc]
                and len(sim.accepted_recipients(plan)) > b + RATE // 2
            ),
            45,
            f"sending to resume after restart {n}",
        )
        wait_until(
            lambda t=down_at + 0.5, n=n: alive_and_beating(t, n),  # type: ignore[misc]
            20,
            f"every ticker to beat with Redis up after restart {n}",
        )
        assert len(sim.accepted_recipients(plan)) < RECIPIENTS, (
            "the campaign ended before the outages did"
        )

    wait_until(lambda: d.status(cid).state == "done", 120, "the campaign to be done")
    got = sim.accepted_recipients(plan)
    assert len(got) == len(set(got)), "a recipient arrived twice"
    assert got == numbers, "arrivals differ from enqueue order"
    st = d.status(cid)
    assert (st.sent, st.dead_lettered) == (RECIPIENTS, 0)
    assert all(w.poll() is None for w in workers)
    assert "Unrecoverable error" not in dep.log_text()
    r.close()
