"""The state on a real Redis Cluster (3 primaries + 3 replicas), the broker on a plain Redis:
exactly once, FIFO and the envelope hold through a SIGKILLed worker and a killed primary."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from dispatcher import Dispatcher, RedisUnavailable
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.storage import keys
from dispatcher.storage.connect import connect, is_cluster
from sinch_simulator import Simulator
from tests.support.checks import assert_envelope, assert_fifo, enqueue_interleaved, metrics_text
from tests.support.cluster import LocalCluster, cluster_support
from tests.support.deploy import Deployment, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    why = cluster_support()
    if why:
        pytest.skip(why)
    c = LocalCluster().start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cr(cluster: LocalCluster) -> Iterator[redis.Redis]:
    client = connect(cluster.url)
    assert is_cluster(client)
    yield client
    client.close()


def _deploy(
    deploy: Callable[..., Deployment],
    cluster: LocalCluster,
    redis_server: LocalRedis,
    plans: dict[str, tuple[float, int, int]],
) -> Deployment:
    dep = deploy([(p, rate, {"batch_size": size}) for p, (rate, size, _) in plans.items()],
                 redis_url=cluster.url)  # fmt: skip
    dep.env["DISPATCH_BROKER_URL"] = redis_server.url  # Celery's broker cannot be a cluster
    return dep


def _no_batch_twice(sim: Simulator) -> None:
    refs = [a.client_reference for a in sim.arrivals() if a.status == 201]
    assert len(refs) == len(set(refs)), "a batch was accepted twice"


def test_cluster_state_exactly_once_in_order_through_a_sigkilled_worker(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    redis_server: LocalRedis,
    cluster: LocalCluster,
    cr: redis.Redis,
) -> None:
    plans = {"k-alpha": (100.0, 10, 300), "k-bravo": (100.0, 10, 300), "k-charlie": (60.0, 5, 180)}
    dep = _deploy(deploy, cluster, redis_server, plans)
    # The plans' keys and the deployment-wide keys really are spread over the shards.
    shards = {cluster.primary_of(keys.lane(p)) for p in plans} | {cluster.primary_of(keys.DUE)}
    assert len(shards) >= 2, shards
    sim.faults.latency_ms = 20
    d = Dispatcher(dep.settings)  # builds its cluster client from the redis+cluster:// URL
    expected, ids = enqueue_interleaved(d, plans)
    victim = dep.start_worker(concurrency=2)
    dep.start_worker(concurrency=1)
    wait_until(lambda: len(sim.arrivals()) >= 10, 60, "sending to start on the cluster")
    dep.kill(victim, signal.SIGKILL)
    dep.start_worker(concurrency=1)
    wait_until(lambda: all(d.status(c).state == "done" for c in ids), 120, "all campaigns done")
    assert sum(len(a.to) for a in sim.arrivals() if a.status == 201) == 780
    for p, (rate, _, _) in plans.items():
        assert_fifo(sim, p, expected[p])
        assert_envelope(sim, p, rate, rate)
        assert cr.llen(keys.lane(p)) == 0
    _no_batch_twice(sim)
    out = dep.cli("status", ids[0], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "done"
    plans_out = dep.cli("plans", "--json")
    assert plans_out.returncode == 0, plans_out.stderr
    assert {row["plan"] for row in json.loads(plans_out.stdout)} == set(plans)
    scrape = metrics_text(dep)
    assert "dispatcher_redis_up 1.0" in scrape
    assert 'dispatcher_recipients_sent_total{plan="k-alpha"} 300.0' in scrape
    d.close()


def test_a_killed_primary_is_replaced_by_its_replica_and_no_recipient_is_lost_or_sent_twice(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    redis_server: LocalRedis,
    cluster: LocalCluster,
    cr: redis.Redis,
) -> None:
    plans = {"fo-a": (100.0, 10, 600), "fo-b": (100.0, 10, 300)}
    dep = _deploy(deploy, cluster, redis_server, plans)
    d = Dispatcher(dep.settings)
    expected, ids = enqueue_interleaved(d, plans)
    dep.start_worker(concurrency=2)
    dep.start_worker(concurrency=1)
    wait_until(lambda: len(sim.arrivals("fo-a")) >= 10, 60, "sending to start")
    primary = cluster.primary_of(keys.lane("fo-a"))
    cluster.kill(primary)  # SIGKILL: no handshake, the replica is promoted by the others' vote
    killed_at = time.time()
    wait_until(lambda: cluster.primary_of(keys.lane("fo-a")) != primary, 60, "a new primary")
    cluster.wait_ok()
    sent_at_kill = len(sim.accepted_recipients("fo-a"))

    def all_done() -> bool:
        try:
            return all(d.status(c).state == "done" for c in ids)
        except RedisUnavailable:  # the client is still learning the new slot map: ask again
            return False

    wait_until(all_done, 120, "all campaigns done")
    assert sent_at_kill < 600, "the campaign finished before the primary was killed"
    for p, (rate, _, _) in plans.items():
        assert_fifo(sim, p, expected[p])
        assert_envelope(sim, p, rate, rate)
    _no_batch_twice(sim)
    assert any(a.t > killed_at for a in sim.arrivals("fo-a")), "fo-a sent nothing after the kill"
    for c in ids:
        st = d.status(c)
        assert (st.state, st.sent, st.dead_lettered) == ("done", st.recipients, 0)
    d.close()
