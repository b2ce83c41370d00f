"""Real parts: the Deployment of config, environment and real Celery worker processes; polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.config import Settings

ROOT = Path(__file__).resolve().parents[2]


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
