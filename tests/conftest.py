"""Real parts only: a redis-server this session starts on a free port, the project's simulator
over real HTTP, and real ``celery -A workers worker`` processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings

from dispatcher.devtools.localredis import LocalRedis
from sinch_simulator import PlanSpec, Simulator
from tests.support.deploy import Deployment

# Two shared cores that also run the session's servers and workers: a slow draw there is the
# machine's load, not a strategy that generates too much.  The properties still run in full.
settings.register_profile("shared-cores", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-cores")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture
def r(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator([]) as s:
        yield s


@pytest.fixture
def deploy(
    tmp_path: Path, redis_server: LocalRedis, r: redis.Redis, sim: Simulator
) -> Iterator[Callable[..., Deployment]]:
    """``deploy([("p1", 100), ...])`` -> a Deployment whose plans point at the simulator."""
    made: list[Deployment] = []

    def make(
        plans: Sequence[tuple[str, float] | tuple[str, float, dict[str, object]]],
        *,
        sim_rate_factor: float = 1.0,
        redis_url: str | None = None,
        callbacks: bool | str = False,
    ) -> Deployment:
        """``callbacks``: True, or the receiver's base URL, for batches that ask for reports."""
        redis_url = redis_url or redis_server.url
        lines = [f'redis_url = "{redis_url}"', ""]
        if callbacks:  # every batch then carries its plan's callback URL (with its token)
            base = callbacks if isinstance(callbacks, str) else "https://hooks.example.com"
            lines.insert(1, f'callback_base_url = "{base}"')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCH_", "PYTEST_"))}
        if callbacks:
            env["DISPATCH_CALLBACK_SECRET"] = "cb-secret-9a8b7c6d5e4f"
        for spec in plans:
            plan, rate = spec[0], spec[1]
            extra = spec[2] if len(spec) > 2 else {}  # type: ignore[misc]
            token_env = plan.upper().replace("-", "_") + "_TOKEN"
            token = f"tok-{plan}-s3cr3t"
            env[token_env] = token
            lines += [
                f"[plans.{plan}]",
                f'base_url = "{sim.url}"',
                f'token_env = "{token_env}"',
                f"rate = {rate}",
            ]
            lines += [f"{k} = {_toml(v)}" for k, v in extra.items()]  # type: ignore[union-attr]
            lines.append("")
            burst = float(extra.get("burst", rate))  # type: ignore[union-attr]
            sim.add_plan(PlanSpec(plan, token, rate * sim_rate_factor, burst * sim_rate_factor))
        cfg = tmp_path / "dispatch.toml"
        cfg.write_text("\n".join(lines))
        env["DISPATCH_CONFIG"] = str(cfg)
        # Several worker "hosts" share this machine: only tests that read the per-host
        # histograms give a worker a metrics port (start_worker(extra_env=...)).
        env["DISPATCH_WORKER_METRICS_PORT"] = "0"
        d = Deployment(cfg, env, redis_url)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop_all()


def _toml(v: object) -> str:
    """A plan setting as TOML: Python's repr but for booleans (``true``, not ``True``)."""
    return str(v).lower() if isinstance(v, bool) else repr(v)
