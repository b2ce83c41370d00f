"""``dispatcher demo``: the whole system on one machine, with nothing installed but the project.

It starts a private Redis, the simulator and real Celery worker processes (exactly what a user
runs: ``celery -A workers worker``), enqueues campaigns on three plans with different limits,
shows live progress against each limit, checks the simulator's log for order and duplicates,
and cleans up every process it started, also on Ctrl-C.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dispatcher.api import Dispatcher
from dispatcher.config import Settings
from dispatcher.devtools.localredis import LocalRedis, free_port
from dispatcher.errors import ControlError
from dispatcher.models import Campaign
from dispatcher.storage.connect import connect
from sinch_simulator import PlanSpec, ReportSettings, Simulator


@dataclass(frozen=True)
class DemoPlan:
    plan: str
    rate: float
    recipients: int
    body: str


PLANS: tuple[DemoPlan, ...] = (
    DemoPlan("acme-alerts", 50, 400, "ALERT: disk usage on db-3 is at 91%"),
    DemoPlan("globex-news", 300, 4000, "Hi ${name}, this week's deals: globex.example/deals"),
    DemoPlan("initech-otp", 20, 150, "Your Initech code is 493 201"),
)  # fmt: skip


def swedish_mobiles(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"+46 70{rng.randrange(10_000_000):07d}" for _ in range(n)]


def worker_command(concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


@contextmanager
def workers_running(
    env: dict[str, str], count: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the Celery worker in its own process group; stop the whole group on exit."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        worker_command(count), env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def write_config(
    path: Path,
    sim_url: str,
    plans: Sequence[DemoPlan],
    redis_url: str,
    callback_base_url: str | None = None,
) -> None:
    lines = [f'redis_url = "{redis_url}"', ""]
    if callback_base_url:
        lines.insert(1, f'callback_base_url = "{callback_base_url}"')
    for p in plans:
        env = p.plan.upper().replace("-", "_") + "_TOKEN"
        lines += [
            f"[plans.{p.plan}]",
            f'base_url = "{sim_url}"',
            f'token_env = "{env}"',
            f"rate = {p.rate:g}",
            "",
        ]
    path.write_text("\n".join(lines))


def token_env(plans: Sequence[DemoPlan]) -> dict[str, str]:
    return {p.plan.upper().replace("-", "_") + "_TOKEN": f"demo-{p.plan}-secret" for p in plans}


def run_demo(*, workers: int = 2, scale: float = 1.0) -> int:
    # Piped (a CI log, `| tee`): rich would assume 80 columns and cut the summary's cells.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    plans = [DemoPlan(p.plan, p.rate, max(1, int(p.recipients * scale)), p.body) for p in PLANS]
    tokens = token_env(plans)
    with tempfile.TemporaryDirectory(prefix="dispatcher-demo-") as tmp, LocalRedis() as rds:
        specs = [
            PlanSpec(p.plan, tokens[p.plan.upper().replace("-", "_") + "_TOKEN"], p.rate)
            for p in plans
        ]
        with Simulator(specs) as sim, receiving() as (hooks_url, start_receiver):
            # Sinch reports what happened to each message; the demo's receiver counts it.
            sim.reports = ReportSettings(mix=_MIX, delay_s=0.3, retry_base_s=0.5)
            cfg = Path(tmp) / "dispatch.toml"
            write_config(cfg, sim.url, plans, rds.url, hooks_url)
            # One worker host here: no per-host metrics server needed (and 9809 may be taken).
            env = {**os.environ, **tokens, "DISPATCH_CONFIG": str(cfg)}
            env["DISPATCH_CALLBACK_SECRET"] = secrets.token_hex(16)
            env["DISPATCH_WORKER_METRICS_PORT"] = "0"
            console.print(
                f"[bold]dispatcher demo[/]: Redis {rds.url}, simulator {sim.url}, "
                f"{workers} Celery worker process(es)"
            )
            with workers_running(env, workers, Path(tmp) / "worker.log") as proc:
                d = Dispatcher(Settings.load(cfg, env=env), connect(rds.url))
                start_receiver(d)
                ids: dict[str, str] = {}
                for i, p in enumerate(plans):
                    numbers = swedish_mobiles(p.recipients, seed=i)
                    numbers += [*numbers[:3], "+46 70 12", "not-a-number"]  # show the report
                    params = (
                        {"name": {numbers[0]: "Ann", "default": "there"}}
                        if "${" in p.body
                        else None
                    )
                    res = d.enqueue(Campaign(plan=p.plan, sender="Demo", body=p.body,
                                             recipients=numbers, parameters=params))  # fmt: skip
                    ids[p.plan] = res.campaign_id
                    console.print(
                        f"  enqueued [cyan]{p.plan}[/]: {res.recipients} recipients in "
                        f"{res.batches} batches, {res.duplicates} duplicates dropped, "
                        f"{len(res.invalid)} invalid ({'; '.join(i.reason for i in res.invalid)})"
                    )
                run = _Run(d, sim, plans, ids, started=time.monotonic())
                with Live(console=console, refresh_per_second=8) as live:
                    while len(run.finished) < len(plans):
                        _operator(run, console)
                        if proc.poll() is not None:
                            console.print(
                                f"[red]the worker exited ({proc.returncode}); see its log[/]"
                            )
                            console.print((Path(tmp) / "worker.log").read_text()[-2000:])
                            return 1
                        live.update(run.progress())
                        time.sleep(0.125)
                    live.update(run.progress())
                # The last reports arrive a moment after the last batch.
                deadline = time.monotonic() + 10
                while sim.reports_pending() and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.3)
                console.print(run.summary())
                d.close()
    console.print("all processes stopped; nothing left behind.")
    return 0


def _bar(done: int, total: int, width: int = 16) -> str:
    filled = int(width * done / total) if total else width
    return "█" * filled + "·" * (width - filled)


# What the demo's operator does, seconds after sending starts: hold the largest campaign for a
# moment, as one would a wrong text, then let it go on from where it stopped.
_PAUSE_PLAN, _PAUSE_AT_S, _RESUME_AT_S = "globex-news", 2.0, 4.0


def _operator(run: _Run, console: Console) -> None:
    elapsed = time.monotonic() - run.started
    cid = run.ids.get(_PAUSE_PLAN)
    if cid is None or _PAUSE_PLAN in run.finished:
        return
    try:
        if elapsed >= _PAUSE_AT_S and run.paused_at is None:
            run.d.pause(cid, actor="demo")
            run.paused_at = time.time()
            console.print(f"  operator: [yellow]dispatcher campaigns pause {cid}[/]")
        elif elapsed >= _RESUME_AT_S and run.paused_at is not None and run.resumed_at is None:
            run.d.resume(cid, actor="demo")
            run.resumed_at = time.time()
            console.print(f"  operator: [green]dispatcher campaigns resume {cid}[/]")
    except ControlError:
        run.paused_at = run.resumed_at = run.resumed_at or time.time()  # it finished first


@dataclass
class _Run:
    """What the live view and the summary read: the system, the plans, and when each finished."""

    d: Dispatcher
    sim: Simulator
    plans: Sequence[DemoPlan]
    ids: dict[str, str]
    started: float
    finished: dict[str, float] = field(default_factory=dict)
    paused_at: float | None = None  # wall clock, as the simulator's arrivals
    resumed_at: float | None = None

    def paused_s(self, plan: str) -> float:
        """How long the operator held this plan's campaign (the mean leaves it out)."""
        if plan != _PAUSE_PLAN or self.paused_at is None or self.resumed_at is None:
            return 0.0
        return self.resumed_at - self.paused_at

    def progress(self) -> Table:
        return _progress(self)

    def summary(self) -> Table:
        return _summary(self)


def _progress(run: _Run) -> Table:
    d, sim, plans, ids = run.d, run.sim, run.plans, run.ids
    started, finished = run.started, run.finished
    table = Table(title="sending: recipients/s over the last 2 s against each plan's limit")
    for col in ("plan", "progress", "done / total", "now /s", "limit /s", "state"):
        table.add_column(col)
    now = time.time()
    for p in plans:
        st = d.status(ids[p.plan])
        recent = (
            sum(len(a.to) for a in sim.arrivals(p.plan) if a.status == 201 and a.t > now - 2.0) / 2
        )
        if st.state == "done" and p.plan not in finished:
            finished[p.plan] = time.monotonic() - started
        table.add_row(
            p.plan, _bar(st.sent + st.dead_lettered, st.recipients),
            f"{st.sent + st.dead_lettered} / {st.recipients}", f"{recent:.0f}", f"{p.rate:g}",
            f"{st.state} ({st.paused_by})" if st.paused_by else st.state,
        )  # fmt: skip
    return table


def _summary(run: _Run) -> Table:
    d, sim, plans, ids, finished = run.d, run.sim, run.plans, run.ids, run.finished
    table = Table(
        title="summary, checked against the simulator's own log (mean/s leaves out a pause)"
    )
    table.add_column("plan", no_wrap=True)
    # dlvd / fail: final statuses from the delivery reports (fail: failed, expired, ...).
    for col in (
        "limit",
        "sent",
        "DLQ",
        "secs",
        "mean/s",
        "of limit",
        "FIFO",
        "dups",
        "dlvd",
        "fail",
    ):
        table.add_column(col)
    for p in plans:
        st = d.status(ids[p.plan])
        arrivals = [a for a in sim.arrivals(p.plan) if a.status == 201]
        got = [t for a in arrivals for t in a.to]
        refs = [a.client_reference or "" for a in arrivals]
        order_ok = refs == sorted(refs, key=lambda r: int(r.rsplit(".", 1)[-1]))
        span = (arrivals[-1].t - arrivals[0].t) if len(arrivals) > 1 else 0.0
        span -= run.paused_s(p.plan)
        # The first `burst` recipients go at once; the rest at the limit.  A plan sent in one
        # batch has no rate to show: it went at once, inside its burst.
        # After a pause the bucket is full again: a second burst (the demo's burst is its rate).
        extra = min(p.rate, len(got)) if run.paused_s(p.plan) else 0
        mean = (len(got) - len(arrivals[0].to) - extra) / span if span > 0 else None
        rate_cells = (
            ("-", "one batch") if mean is None else (f"{mean:.1f}", f"{100 * mean / p.rate:.0f}%")
        )
        table.add_row(
            p.plan, f"{p.rate:g}", str(st.sent), str(st.dead_lettered),
            f"{finished.get(p.plan, 0):.1f}", *rate_cells,
            "yes" if order_ok else "[red]NO[/]", str(len(got) - len(set(got))),
            str(st.delivery.get("delivered", 0)),
            str(sum(n for k, n in st.delivery.items() if k != "delivered")),
        )  # fmt: skip
    return table


# What the demo's simulator reports for each message, as a real network might.
_MIX = {"Delivered": 0.95, "Failed": 0.03, "Expired": 0.02}


@contextmanager
def receiving() -> Iterator[tuple[str, Callable[[Dispatcher], None]]]:
    """The callback receiver (the one `dispatcher callbacks` runs) on a free local port:
    (its base URL, start(dispatcher))."""
    from dispatcher.callbacks import make_wsgi_app
    from dispatcher.callbacks.server import Server, make_server, serve_in_thread

    port = free_port()
    servers: list[Server] = []

    def start(d: Dispatcher) -> None:
        server = make_server("127.0.0.1", port, make_wsgi_app(d.settings, d.redis))
        servers.append(server)
        serve_in_thread(server)

    try:
        yield f"http://127.0.0.1:{port}", start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
