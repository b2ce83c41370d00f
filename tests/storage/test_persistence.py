"""A worker refuses to start on a Redis that would evict its keys, and says why in one line."""

from __future__ import annotations

from collections.abc import Callable

import redis

from dispatcher.devtools.localredis import LocalRedis
from dispatcher.storage import persistence
from tests.support.deploy import Deployment, wait_until


def test_findings_follow_the_redis_config() -> None:
    with LocalRedis(appendonly=True, appendfsync="always") as server:
        r = redis.Redis.from_url(server.url)
        assert persistence.check(r) == []
        r.config_set("maxmemory-policy", "allkeys-lru")
        assert [f.level for f in persistence.check(r)] == ["warning"]
        r.config_set("maxmemory", "64mb")
        (fatal,) = persistence.check(r)
        assert (
            fatal.level == "fatal"
            and "allkeys-lru" in fatal.message
            and "noeviction" in fatal.message
        )
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("appendfsync", "everysec")
        assert ["appendfsync everysec" in f.message for f in persistence.check(r)] == [True]
        r.close()
    with LocalRedis() as server:  # no AOF
        r = redis.Redis.from_url(server.url)
        assert ["appendonly no" in f.message for f in persistence.check(r)] == [True]
        r.close()


def test_worker_refuses_to_start_on_an_evicting_redis(
    deploy: Callable[..., Deployment], r: redis.Redis
) -> None:
    dep = deploy([("evict", 10)])
    r.config_set("maxmemory", "256mb")
    r.config_set("maxmemory-policy", "volatile-lru")
    try:
        proc = dep.start_worker()
        code = proc.wait(60)
    finally:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "0")
    log = dep.log_text()
    assert code == 2, log
    lines = [line for line in log.splitlines() if "CRITICAL" in line]
    assert len(lines) == 1 and "maxmemory-policy volatile-lru" in lines[0], log
    assert "Traceback" not in log


def test_worker_starts_and_warns_without_aof(deploy: Callable[..., Deployment]) -> None:
    dep = deploy([("noaof", 10)])
    proc = dep.start_worker()
    try:
        wait_until(lambda: "ready" in dep.log_text() or proc.poll() is not None, 60, "worker ready")
        assert proc.poll() is None, dep.log_text()
        assert "appendonly no" in dep.log_text()
    finally:
        dep.kill(proc, 15)
