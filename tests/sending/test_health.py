"""``dispatcher health``: what a liveness probe runs on a worker host."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from dispatcher.devtools.localredis import LocalRedis
from tests.support.deploy import Deployment, wait_until


def test_health_follows_the_worker_and_needs_no_redis(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    private = LocalRedis().start()
    dep = deploy([("hp", 10)], redis_url=private.url)
    beat = tmp_path / "w.health"
    assert dep.cli("health", "--file", str(beat)).returncode == 1  # no worker yet
    proc = dep.start_worker(extra_env={"DISPATCH_HEALTH_FILE": str(beat)})
    wait_until(lambda: dep.cli("health", "--file", str(beat)).returncode == 0, 60, "healthy")
    # Redis gone: the worker waits, alive; the probe must not have it restarted.
    private.crash()
    wait_until(
        lambda: (
            json.loads(dep.cli("health", "--file", str(beat), "--json").stdout).get("redis")
            is False
        ),
        20,
        "the beat to say Redis is down",
    )
    out = dep.cli("health", "--file", str(beat), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True
    dep.kill(proc, signal.SIGKILL)
    out = dep.cli("health", "--file", str(beat))
    assert out.returncode == 1 and "is gone" in out.stderr, out
    private.stop()
