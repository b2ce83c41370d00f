"""The baseline a user would otherwise pick: Celery's built-in ``rate_limit``.

A task that POSTs one batch of 50 recipients, with ``rate_limit`` set to the plan's limit / 50
tasks per second, run by two worker processes (two ``celery worker`` commands, as two hosts or
containers would run it).  ``rate_limit`` is enforced by each worker on its own and counts
tasks, not recipients (PEERS.md 1), so the provider should see about twice the limit.  Ours
runs the same load against the same limit in the same run, with burst = one batch (what
Celery's bucket of one task allows).

This module is also the Celery app of the baseline: ``celery -A bench.bench_celery_baseline
worker`` (configured from the environment by ``run``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from bench import (
    ROOT,
    Deployment,
    SimPlan,
    SimProcess,
    md_table,
    mobiles,
    peak_window,
    stop_group,
    token_of,
    wait_for,
)

LIMIT = 500.0  # recipients per second, the plan's limit
BATCH = 50

app = Celery(
    "baseline",
    broker=os.environ.get("BASELINE_BROKER", "redis://127.0.0.1:6379/15"),
    set_as_current=False,
)
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)

_local = threading.local()


@app.task(name="baseline.send", rate_limit=os.environ.get("BASELINE_RATE_LIMIT", "10/s"))
def send(payload: str) -> int:
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=30)
    resp = client.post(
        os.environ["BASELINE_URL"],
        content=payload.encode(),
        headers={
            "Authorization": f"Bearer {os.environ['BASELINE_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    return resp.status_code


def _figures(arrivals: list[dict[str, Any]]) -> tuple[float, float, float]:
    ok = sorted(
        ((a["t"], len(a["to"])) for a in arrivals if a["status"] == 201), key=lambda x: x[0]
    )
    total = sum(n for _, n in ok)
    span = ok[-1][0] - ok[0][0]
    mean = (total - ok[0][1]) / span if span > 0 else 0.0
    return peak_window(ok, 1.0), peak_window(ok, 5.0) / 5.0, mean


def celery_run(sim: SimProcess, broker_url: str, tasks: int) -> tuple[float, float, float]:
    from dispatcher.api import build_batches
    from dispatcher.campaign.prepare import prepare
    from dispatcher.config import PlanConfig

    plan = PlanConfig("celery", sim.url, "T", LIMIT, LIMIT, BATCH)
    numbers = mobiles(tasks * BATCH, 5_000_000)
    payloads = [
        b.payload.decode()
        for b in build_batches("ccel", plan, "Bench", "Hi", prepare("Hi", numbers))
    ]
    env = {
        **os.environ,
        "BASELINE_BROKER": broker_url,
        "BASELINE_URL": f"{sim.url}/xms/v1/celery/batches",
        "BASELINE_TOKEN": token_of("celery"),
        "BASELINE_RATE_LIMIT": f"{LIMIT / BATCH:g}/s",
    }
    logdir = Path(tempfile.mkdtemp(prefix="celery-baseline-"))
    procs = []
    for i in range(2):
        log = open(logdir / f"w{i}.log", "wb")  # noqa: SIM115 - the child owns it
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.bench_celery_baseline",
                    "worker",
                    "--concurrency",
                    "1",
                    "--pool",
                    "prefork",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--hostname",
                    f"baseline{i}@%h",
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        log.close()
    try:
        wait_for(
            lambda: all("ready" in (logdir / f"w{i}.log").read_text() for i in range(2)),
            60,
            "baseline workers",
        )
        producer = Celery("producer", broker=broker_url, set_as_current=False)
        with producer.connection_for_write() as conn:
            for p in payloads:
                producer.send_task("baseline.send", (p,), connection=conn)
        wait_for(
            lambda: len(sim.arrivals("celery")) >= tasks, 30 + 4 * tasks / (LIMIT / BATCH), "sent"
        )
    finally:
        for proc in procs:
            stop_group(proc)
    return _figures(sim.arrivals("celery"))


def ours_run(sim: SimProcess, redis_url: str, tasks: int) -> tuple[float, float, float]:
    from dispatcher.api import Dispatcher
    from dispatcher.models import Campaign

    with Deployment(
        redis_url, sim.url, [("ours", LIMIT, {"burst": float(BATCH), "batch_size": BATCH})]
    ) as dep:
        r = redis.Redis.from_url(redis_url)
        d = Dispatcher(dep.settings, r)
        cid = d.enqueue(
            Campaign(plan="ours", sender="Bench", body="Hi", recipients=mobiles(tasks * BATCH))
        )
        dep.start_worker()
        dep.start_worker()
        wait_for(lambda: d.status(cid).state == "done", 60 + 4 * tasks / (LIMIT / BATCH), "sent")
        r.close()
    return _figures(sim.arrivals("ours"))


def run(quick: bool = False) -> str:
    from dispatcher.devtools.localredis import LocalRedis

    tasks = 100 if quick else 250
    with (
        LocalRedis() as server,
        SimProcess(
            [SimPlan("celery", token_of("celery"), 0), SimPlan("ours", token_of("ours"), 0)]
        ) as sim,
    ):
        broker = server.url.rsplit("/", 1)[0] + "/1"
        c_peak, c_peak5, c_mean = celery_run(sim, broker, tasks)
        o_peak, o_peak5, o_mean = ours_run(sim, server.url, tasks)
    envelope_1s = BATCH + LIMIT  # burst + rate x 1 s: what the contract allows in 1 s
    rows = [
        [
            "Celery `rate_limit` (10/s per task, 2 workers)",
            c_peak,
            f"{c_peak / LIMIT:.2f}x",
            c_peak5,
            f"{c_peak5 / LIMIT:.2f}x",
            c_mean,
            f"{c_mean / LIMIT:.2f}x",
        ],
        [
            "ours (burst 50, 2 workers)",
            o_peak,
            f"{o_peak / LIMIT:.2f}x",
            o_peak5,
            f"{o_peak5 / LIMIT:.2f}x",
            o_mean,
            f"{o_mean / LIMIT:.2f}x",
        ],
    ]
    return "\n".join(
        [
            "## Celery's rate_limit as the baseline",
            "",
            f"Plan limit {LIMIT:g} recipients/s, {tasks} batches of {BATCH} recipients, two worker "
            f"processes each. Celery: a task with `rate_limit='{LIMIT / BATCH:g}/s'` (limit / "
            f"{BATCH}) that POSTs one batch. Peak 1 s = most recipients the provider saw in any "
            f"1 s window (the contract allows burst + rate x 1 s = {envelope_1s:g} for ours); "
            "peak 5 s is the busiest 5 s window's rate; mean is over the whole run.",
            "",
            md_table(
                [
                    "sender",
                    "peak 1 s",
                    "vs limit",
                    "peak 5 s rec/s",
                    "vs limit",
                    "mean rec/s",
                    "vs limit",
                ],
                rows,
            ),
            "",
        ]
    )


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
