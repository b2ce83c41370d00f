"""Benchmarks: ``make bench`` (``python -m bench``) runs every ``bench_*`` module in turn and
writes their tables to docs/benchmarks.md.

Each module has ``run(quick: bool) -> str`` returning a Markdown section.  The figures are
measured on whatever machine runs them, against a private redis-server and the project's
simulator in separate processes; compare them as ratios taken in the same run, never as
absolute numbers from another machine.  Nothing here is asserted as a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis_version = "?"
    with contextlib.suppress(Exception):
        from dispatcher.devtools.localredis import find_redis_server

        out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True)
        redis_version = out.stdout.split("v=", 1)[1].split()[0]
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"redis-server {redis_version}, {platform.system()} {platform.release()}"
    )


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v == 0 or abs(v) >= 100:
                return f"{v:,.0f}"
            if abs(v) >= 10:
                return f"{v:.1f}"
            return f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def free_port() -> int:
    from dispatcher.devtools.localredis import free_port as fp

    return fp()


@dataclass(frozen=True)
class SimPlan:
    plan: str
    token: str
    rate: float  # <= 0: the simulator never answers 429
    burst: float | None = None

    @property
    def arg(self) -> str:
        spec = f"{self.plan}:{self.token}:{self.rate:g}"
        return spec + (f":{self.burst:g}" if self.burst is not None else "")


class SimProcess:
    """The simulator in its own process (so it never competes for a client's GIL)."""

    def __init__(self, plans: Sequence[SimPlan]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "sinch_simulator", "--port", str(self.port)]
        for p in plans:
            args += ["--plan", p.arg]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return json.loads(resp.read())

    def arrivals(self, plan: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._get(f"/_sim/arrivals?plan={plan}")
        return data

    def stats(self) -> dict[str, dict[str, int]]:
        data: dict[str, dict[str, int]] = self._get("/_sim/stats")
        return data

    def set_faults(self, **faults: Any) -> None:
        """POST /_sim/faults, e.g. ``latency_ms=400`` (a reset clears them)."""
        req = urllib.request.Request(
            self.url + "/_sim/faults", data=json.dumps(faults).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30):
            pass

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/_sim/reset", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=30):
            pass

    def stop(self) -> None:
        stop_group(self.proc)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Deployment:
    """A config file for plans on the simulator, and ``celery -A workers worker`` processes."""

    redis_url: str
    sim_url: str
    plans: Sequence[tuple[str, float, dict[str, Any]]]
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dispatcher-bench-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        lines = [f'redis_url = "{self.redis_url}"', ""]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        for plan, rate, extra in self.plans:
            token_env = plan.upper().replace("-", "_") + "_TOKEN"
            self.env[token_env] = token_of(plan)
            lines += [
                f"[plans.{plan}]",
                f'base_url = "{self.sim_url}"',
                f'token_env = "{token_env}"',
                f"rate = {rate}",
            ]
            lines += [
                f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                for k, v in extra.items()
            ]
            lines.append("")
        self.config = self.dir / "dispatch.toml"
        self.config.write_text("\n".join(lines))
        self.env["DISPATCH_CONFIG"] = str(self.config)

    @property
    def settings(self) -> Any:
        from dispatcher.config import Settings

        return Settings.load(self.config, env=self.env)

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        log = open(self.dir / f"worker-{n}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "workers", "worker",
                "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--hostname", f"bench{n}@%h",
            ],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            stop_group(p)
        self.procs.clear()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def token_of(plan: str) -> str:
    return f"bench-{plan}-token"


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def mobiles(n: int, start: int = 0) -> list[str]:
    """n distinct Swedish mobile numbers in E.164 with '+'."""
    return [f"+4670{i:07d}" for i in range(start, start + n)]


def worst_window(
    arrivals: Sequence[tuple[float, int]], rate: float, burst: float, jitter_s: float = 0.25
) -> tuple[float, str]:
    """Largest share of the contract's envelope any window used (<= 1.0 keeps it): max over
    windows [t_i, t_j] of recipients / (burst + rate * max(1 s, t_j - t_i + jitter))."""
    worst, where = 0.0, "-"
    ts = [t for t, _ in arrivals]
    ns = [n for _, n in arrivals]
    for i in range(len(ts)):
        total = 0
        for j in range(i, len(ts)):
            total += ns[j]
            span = ts[j] - ts[i]
            allowed = burst + rate * max(1.0, span + jitter_s)
            if total / allowed > worst:
                worst, where = total / allowed, f"{total} in {span:.2f} s"
            if span > 30.0:  # keeps it O(n); the mean-rate column covers longer spans
                break
    return worst, where


def peak_window(arrivals: Sequence[tuple[float, int]], window_s: float = 1.0) -> float:
    """Most recipients that arrived within any window of ``window_s`` seconds."""
    best, total, i = 0, 0, 0
    for j in range(len(arrivals)):
        total += arrivals[j][1]
        while arrivals[j][0] - arrivals[i][0] > window_s:
            total -= arrivals[i][1]
            i += 1
        best = max(best, total)
    return float(best)
