"""Real parts only: a redis-server this session starts on a free port, the project's simulator
over real HTTP, and real ``celery -A workers worker`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from dispatcher.config import Settings
from dispatcher.devtools.localredis import LocalRedis
from sinch_simulator import PlanSpec, Simulator

ROOT = Path(__file__).resolve().parent.parent


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


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until true; a test fails (never passes) when the system does not get there."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Deployment:
    """A config file, the environment with plan tokens, and the worker processes started."""

    config: Path
    env: dict[str, str]
    redis_url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.load(self.config, env=self.env)

    def start_worker(
        self,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        *,
        as_users_run_it: bool = False,
    ) -> subprocess.Popen[bytes]:
        """``as_users_run_it`` keeps Celery's gossip, mingle and heartbeat on (its defaults), as
        a plain ``celery -A workers worker`` has them; the other tests turn them off to start
        faster."""
        log = self.config.parent / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        out = open(log, "wb")  # noqa: SIM115 - the child owns it; closed when we drop it
        env = {
            **self.env,
            "DISPATCH_HEALTH_FILE": str(self.config.parent / f"worker-{len(self.logs)}.health"),
            **(extra_env or {}),
        }
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "workers", "worker",
                "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "INFO",
                *([] if as_users_run_it else ["--without-gossip", "--without-mingle", "--without-heartbeat"]),
                "--hostname", f"w{len(self.logs)}@%h",
            ],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Kill the worker's whole process group (parent and prefork children)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill(p, signal.SIGTERM)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=check,
        )  # fmt: skip


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
    ) -> Deployment:
        redis_url = redis_url or redis_server.url
        lines = [f'redis_url = "{redis_url}"', ""]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCH_", "PYTEST_"))}
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
            lines += [f"{k} = {v!r}" for k, v in extra.items()]  # type: ignore[union-attr]
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
