"""Cost per plan: the same deployment with 10, 100, 1,000 and 10,000 configured plans.

Real ``celery -A workers worker`` processes (2 hosts, ``--concurrency 2``), a private
redis-server and the simulator in its own process.  Per number of plans N:

1. **Memory** (no worker running yet): ``used_memory`` before and after one campaign of 10
   recipients per plan (this creates the plan's keys), then after ``K - 1`` more per plan (the
   plan's keys exist: the delta is campaigns and queued recipients only).
2. **Backlog**: the workers start on those ``N x K`` one-batch campaigns (at least 2,000
   batches in all).  ``INFO commandstats`` and ``INFO cpu`` deltas and the worker processes'
   CPU time (``/proc``, every process of each worker's session) over the drain, divided by
   the batches sent, with the idle rate (tickers only, measured just before) shown apart.
3. **Scheduler latency**: with the workers idle, one-batch campaigns are enqueued at a fixed
   total rate (the same for every N) to plans in turn; a campaign is due at once, so the time
   from its enqueue (the ``ZADD`` of its plan into the schedule, by the host's clock) to its
   batch's arrival at the simulator is due -> drain start plus one take and one POST (about
   2 ms on an idle machine).  Measured from outside, so no hot path carries instrumentation.
4. **Reads**: the wall time of ``dispatcher plans --json`` (a new process, as a user runs it)
   and of one ``/metrics`` scrape of a running ``dispatcher metrics``, the series it served,
   and the Redis bytes that every plan's keys keep after sending (``MEMORY USAGE``).

Nothing here is asserted; the tests check behaviour.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from bench import ROOT, Deployment, SimPlan, SimProcess, free_port, md_table, stop_group, token_of
from dispatcher.api import Dispatcher
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.models import Campaign
from dispatcher.sending.app import QUEUE

SIZES = (10, 100, 1_000, 10_000)
QUICK_SIZES = (10, 1_000)
WORKERS = 2
CONCURRENCY = 2
RECIPIENTS = 10  # per campaign: one batch
RATE = 1_000.0  # per plan; burst 10 = the batch, so a plan under backlog never waits long
BURST = 10.0
BACKLOG_BATCHES = 2_000  # at least this many in the backlog phase, at least 2 per plan
LATENCY_RATE = 40.0  # campaigns/s in the latency phase, the same for every N
LATENCY_S = 15.0
IDLE_S = 10.0  # one sweep per worker host (sweep_s) falls in it on average
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _plan(i: int) -> str:
    return f"p{i:05d}"


class Numbers:
    """Distinct mobiles, so that each arrival names its campaign by its first recipient."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> list[str]:
        out = [f"+4670{i:07d}" for i in range(self.next, self.next + n)]
        self.next += n
        return out


def _commandstats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    """command -> (calls, usec); the bench's own INFO calls left out."""
    raw: dict[str, Any] = r.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for k, v in raw.items()
        if k != "cmdstat_info"
    }


def _redis_cpu(r: redis.Redis) -> float:
    cpu: dict[str, Any] = r.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def _delta(
    a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    return {
        k: (b[k][0] - a.get(k, (0, 0))[0], b[k][1] - a.get(k, (0, 0))[1])
        for k in b
        if b[k] != a.get(k)
    }


def _session_cpu(pgids: Sequence[int]) -> float:
    """CPU seconds (user + system) of every live process in these sessions (a worker and its
    pool children: each worker starts in its own session)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) in pgids:  # pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def _sent(sim: SimProcess) -> int:
    return sum(s.get("recipients_accepted", 0) for s in sim.stats().values())


def _wait_sent(sim: SimProcess, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (got := _sent(sim)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{got} of {n} recipients arrived in {timeout:.0f} s")
        time.sleep(0.5)


def _arrivals(sim: SimProcess) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = sim._get("/_sim/arrivals")
    return data


def _pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stdout


def _scrape(port: int) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as resp:
        body = resp.read()
    return time.perf_counter() - t, body


def _start_exporter(dep: Deployment) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(dep.dir / "exporter.log", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "metrics", "--port", str(port),
         "--host", "127.0.0.1"],
        env=dep.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError):
            _scrape(port)
            return proc, port
        if time.monotonic() > deadline or proc.poll() is not None:
            stop_group(proc)
            raise RuntimeError(
                "dispatcher metrics did not start: " + (dep.dir / "exporter.log").read_text()
            )
        time.sleep(0.2)


def _key_bytes(r: redis.Redis) -> tuple[int, int, int]:
    """(bytes of plans' own keys, bytes of campaign records and their lists, key count)."""
    plan_b = camp_b = n = 0
    keys = [k for k in r.scan_iter(match="dsp:{*", count=10_000)]
    for i in range(0, len(keys), 5_000):
        chunk = keys[i : i + 5_000]
        pipe = r.pipeline(transaction=False)
        for k in chunk:
            pipe.memory_usage(k, samples=0)
        for k, size in zip(chunk, pipe.execute(), strict=True):
            n += 1
            tail = k.split(b"}:", 1)[1]
            if tail.startswith((b"c:", b"pb:", b"q:")):
                camp_b += size or 0
            else:
                plan_b += size or 0
    return plan_b, camp_b, n


def one(n_plans: int, quick: bool) -> dict[str, Any]:
    plans = [_plan(i) for i in range(n_plans)]
    per_plan = max(2, BACKLOG_BATCHES // n_plans)
    numbers = Numbers()
    res: dict[str, Any] = {"plans": n_plans, "per_plan": per_plan}
    extra = {"burst": BURST, "batch_size": int(BURST)}
    with (
        LocalRedis() as server,
        SimProcess([SimPlan(p, token_of(p), 0) for p in plans]) as sim,
        Deployment(server.url, sim.url, [(p, RATE, extra) for p in plans]) as dep,
    ):
        r = redis.Redis.from_url(server.url)
        t = time.perf_counter()
        settings = dep.settings
        res["config_load_s"] = time.perf_counter() - t
        d = Dispatcher(settings, r)

        def enqueue(plan: str) -> str:
            return d.enqueue(
                Campaign(plan=plan, sender="Bench", body="Hi", recipients=numbers.take(RECIPIENTS))
            )

        # 1. memory, no workers yet
        mem0 = int(r.info("memory")["used_memory"])
        cs0 = _commandstats(r)
        t = time.perf_counter()
        for p in plans:
            enqueue(p)
        mem1 = int(r.info("memory")["used_memory"])
        for _ in range(per_plan - 1):
            for p in plans:
                enqueue(p)
        res["enqueue_s"] = time.perf_counter() - t
        mem2 = int(r.info("memory")["used_memory"])
        campaigns = n_plans * per_plan
        res["cmds_per_enqueue"] = sum(c for c, _ in _delta(cs0, _commandstats(r)).values()) / (
            campaigns
        )
        later = (mem2 - mem1) / (n_plans * (per_plan - 1))
        res["mem_per_campaign"] = later
        res["mem_per_queued_recipient"] = later / RECIPIENTS
        res["mem_plan_keys_at_enqueue"] = (mem1 - mem0) / n_plans - later

        # 2. the backlog drains (the clock starts at the first arrival: worker start-up is not
        # a batch's cost), then the idle rate: tickers and sweeps, nothing due
        for _ in range(WORKERS):
            dep.start_worker(CONCURRENCY)
        pgids = [p.pid for p in dep.procs]
        while not (sent0 := _sent(sim)):
            time.sleep(0.02)
        b_cs, b_cpu, b_rcpu = _commandstats(r), _session_cpu(pgids), _redis_cpu(r)
        b_t = time.monotonic()
        _wait_sent(sim, campaigns * RECIPIENTS, 600)
        b_wall = time.monotonic() - b_t
        delta = _delta(b_cs, _commandstats(r))
        cpu = _session_cpu(pgids) - b_cpu
        rcpu = _redis_cpu(r) - b_rcpu
        batches = (campaigns * RECIPIENTS - sent0) // RECIPIENTS
        cmds = sum(c for c, _ in delta.values())
        res["backlog_s"] = b_wall
        res["backlog_batches"] = campaigns
        res["batches_per_s"] = batches / b_wall
        res["cmds_per_batch"] = cmds / batches
        res["evalsha_per_batch"] = delta.get("evalsha", (0, 0))[0] / batches
        res["redis_us_per_batch"] = sum(u for _, u in delta.values()) / batches
        top = sorted(delta.items(), key=lambda kv: -kv[1][0])[:8]
        res["top_cmds_per_batch"] = {k: round(c / batches, 2) for k, (c, _) in top}
        res["redis_cpu_ms_per_batch"] = rcpu * 1000 / batches
        res["worker_cpu_ms_per_batch"] = cpu * 1000 / batches
        time.sleep(1.0)
        # Drain tasks still waiting in the broker (the state Redis is the broker here): ones
        # the ticker sent again for plans whose first task had not started within claim_s.
        res["broker_queue_after_backlog"] = r.llen(QUEUE)
        i_cs, i_cpu, i_rcpu = _commandstats(r), _session_cpu(pgids), _redis_cpu(r)
        i_t = time.monotonic()
        time.sleep(IDLE_S)
        idle_t = time.monotonic() - i_t
        idle_cmds = sum(c for c, _ in _delta(i_cs, _commandstats(r)).values()) / idle_t
        res["idle_cmds_per_s"] = idle_cmds
        res["idle_worker_cpu_per_s"] = (_session_cpu(pgids) - i_cpu) / idle_t
        res["idle_redis_cpu_per_s"] = (_redis_cpu(r) - i_rcpu) / idle_t
        res["idle_share"] = idle_cmds * b_wall / max(1, cmds)
        res["broker_queue_before_latency"] = r.llen(QUEUE)

        # 3. scheduler latency: campaigns due at once, at a fixed total rate
        seconds = LATENCY_S / (3 if quick else 1)
        count = int(LATENCY_RATE * seconds)
        enq_at: dict[str, float] = {}
        start = time.monotonic()
        for k in range(count):
            plan = plans[(k * 7919) % n_plans]  # spread over the plans, no plan twice in a row
            to = numbers.take(RECIPIENTS)
            enq_at[to[0].lstrip("+")] = time.time()
            d.enqueue(Campaign(plan=plan, sender="Bench", body="Hi", recipients=to))
            pause = start + (k + 1) / LATENCY_RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        _wait_sent(sim, (campaigns + count) * RECIPIENTS, 120)
        lat = []
        for a in _arrivals(sim):
            first = a["to"][0].lstrip("+") if a["to"] else ""
            if a["status"] == 201 and first in enq_at:
                lat.append((a["t"] - enq_at.pop(first)) * 1000)
        res["lat_n"] = len(lat)
        res["lat_p50_ms"] = _pct(lat, 0.5)
        res["lat_p99_ms"] = _pct(lat, 0.99)
        res["lat_max_ms"] = max(lat)

        # 4. reads: plans --json, one scrape; what a plan keeps in Redis after sending
        cli = [sys.executable, "-m", "dispatcher.cli", "plans", "--json"]
        times = []
        for _ in range(2):
            took, out = _timed(cli, dep.env)
            times.append(took)
        res["plans_json_s"] = min(times)
        res["plans_json_rows"] = len(json.loads(out))
        exporter, port = _start_exporter(dep)
        try:
            scrapes = [_scrape(port) for _ in range(3)]
        finally:
            stop_group(exporter)
        res["scrape_s"] = min(s for s, _ in scrapes)
        res["scrape_max_s"] = max(s for s, _ in scrapes)
        body = scrapes[-1][1]
        res["scrape_mb"] = len(body) / 1e6
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        res["series"] = series
        res["series_per_plan"] = series / n_plans
        plan_b, camp_b, nkeys = _key_bytes(r)
        res["plan_state_bytes"] = plan_b / n_plans
        res["campaign_record_bytes"] = camp_b / (campaigns + count)
        res["keys"] = nkeys
        r.close()
    return res


def due_ops(n_plans: int = 10_000) -> list[list[Any]]:
    """Redis time per operation on the schedule ``dsp:due`` holding ``n_plans`` plans
    (commandstats usec_per_call): what sizes the shard that holds it (docs/scaling.md)."""
    import random

    from dispatcher.storage import keys
    from dispatcher.storage.scripts import for_client

    rows: list[list[Any]] = []
    with LocalRedis() as server:
        r = redis.Redis.from_url(server.url)
        scripts = for_client(r)
        plans = [_plan(i) for i in range(n_plans)]
        far = int(time.time() * 1000) + 10**9
        r.zadd(keys.DUE, dict.fromkeys(plans, far))

        def measure(what: str, command: str, step: Any, times: int) -> None:
            r.config_resetstat()
            for k in range(times):
                step(k)
            stats: dict[str, Any] = r.info("commandstats")
            rows.append([what, stats[f"cmdstat_{command}"]["usec_per_call"]])

        rng = random.Random(1)
        measure(
            "ZADD (a due time)",
            "zadd",
            lambda k: r.zadd(keys.DUE, {rng.choice(plans): far + k}),
            5_000,
        )
        measure(
            "ZSCORE (the sweep, per plan)",
            "zscore",
            lambda k: r.zscore(keys.DUE, rng.choice(plans)),
            5_000,
        )
        measure(
            "schedule.lua (drain start and end)",
            "evalsha",
            lambda k: scripts.schedule(rng.choice(plans), 1000, "set"),
            5_000,
        )
        measure(
            "claim.lua, nothing due (an idle tick)",
            "evalsha",
            lambda k: scripts.claim(50, 20_000),
            5_000,
        )

        def claim_50(k: int) -> None:
            r.zadd(keys.DUE, dict.fromkeys(rng.sample(plans, 50), 0))
            scripts.claim(50, 20_000)

        measure("claim.lua, 50 plans due", "evalsha", claim_50, 300)
        r.close()
    return rows


def run(quick: bool = False) -> str:
    started = time.monotonic()
    results = [one(n, quick) for n in (QUICK_SIZES if quick else SIZES)]
    ops = due_ops()
    took = time.monotonic() - started
    rows = [
        [
            f"{x['plans']:,}",
            f"{x['lat_p50_ms']:.0f} / {x['lat_p99_ms']:.0f} ms",
            f"{x['cmds_per_batch']:.1f} ({x['evalsha_per_batch']:.1f})",
            f"{x['redis_us_per_batch']:.0f} µs / {x['redis_cpu_ms_per_batch']:.2f} ms",
            f"{x['worker_cpu_ms_per_batch']:.1f} ms",
            f"{x['batches_per_s']:,.0f}",
            f"{x['mem_plan_keys_at_enqueue']:,.0f} / {x['plan_state_bytes']:,.0f} B",
            f"{x['mem_per_queued_recipient']:,.0f} B",
            f"{x['plans_json_s']:.2f} s",
            f"{x['scrape_s']:.2f} s ({x['scrape_max_s']:.2f})",
            f"{x['series']:,} ({x['series_per_plan']:.0f}/plan, {x['scrape_mb']:.1f} MB)",
        ]
        for x in results
    ]
    idle = [
        [
            f"{x['plans']:,}",
            f"{x['per_plan']:,} x {x['plans']:,} = {x['backlog_batches']:,}",
            f"{x['backlog_s']:.1f} s",
            f"{x['idle_cmds_per_s']:.0f}",
            f"{x['idle_share']:.0%}",
            f"{x['idle_worker_cpu_per_s'] * 1000:.0f} ms/s",
            f"{x['idle_redis_cpu_per_s'] * 1000:.0f} ms/s",
            f"{x['cmds_per_enqueue']:.1f}",
            f"{x['enqueue_s']:.1f} s",
            f"{x['config_load_s']:.2f} s",
            f"{x['lat_n']:,}",
            f"{x['lat_max_ms']:.0f} ms",
            f"{x['broker_queue_after_backlog']:,} / {x['broker_queue_before_latency']:,}",
        ]
        for x in results
    ]
    return "\n".join(
        [
            "## Cost per plan: 10 to 10,000 plans",
            "",
            f"{WORKERS} worker hosts (`celery -A workers worker --concurrency {CONCURRENCY}` "
            "each), a private redis-server and the simulator; every plan at "
            f"{RATE:g} recipients/s with burst and batch {BURST:g}, campaigns of {RECIPIENTS} "
            "recipients (one batch). Scheduler latency: one-batch campaigns enqueued at "
            f"{LATENCY_RATE:g}/s in all, to the plans in turn, for "
            f"{LATENCY_S / (3 if quick else 1):g} s; "
            "enqueue (the plan's due time) to the batch's arrival at the provider, p50 / p99 "
            "(due -> drain start plus one take and one POST, ~2 ms). Redis commands per batch "
            "(of which EVALSHA), Redis time (commandstats µs / INFO cpu) and worker CPU (every "
            "worker process, /proc) are deltas over draining the backlog (at least 2,000 "
            "one-batch campaigns), divided by its batches; tickers' idle load is included and "
            "shown in the second table. Plan keys: bytes per plan when its first campaign is "
            "enqueued (used_memory delta) / what its keys keep after sending (MEMORY USAGE); a "
            "configured plan that never had a campaign keeps none. Per queued recipient: the "
            "used_memory delta of further campaigns, per recipient (campaign record included). "
            "`plans --json`: a new process, best of 2; scrape: one `GET /metrics` of a running "
            "`dispatcher metrics`, best (worst) of 3.",
            "",
            md_table(
                [
                    "plans",
                    "due -> sent p50 / p99",
                    "Redis cmds/batch (EVALSHA)",
                    "Redis µs / CPU per batch",
                    "worker CPU/batch",
                    "backlog batches/s",
                    "plan keys: at enqueue / after",
                    "per queued recipient",
                    "`plans --json`",
                    "`/metrics` scrape",
                    "series (per plan, size)",
                ],
                rows,
            ),
            "",
            md_table(
                [
                    "plans",
                    "backlog batches",
                    "drained in",
                    "idle Redis cmds/s",
                    "idle share of backlog cmds",
                    "idle worker CPU",
                    "idle Redis CPU",
                    "cmds/enqueue",
                    "enqueue time",
                    "config load",
                    "latency samples",
                    "latency max",
                    "drain tasks queued after the backlog / 10 s later",
                ],
                idle,
            ),
            "",
            "Commands per batch, the most frequent (backlog phase): "
            + "; ".join(
                f"{x['plans']:,} plans: "
                + ", ".join(f"{k} {v:g}" for k, v in x["top_cmds_per_batch"].items())
                for x in results
            )
            + ".",
            "",
            "Redis time per operation on the schedule `dsp:due` holding 10,000 plans "
            "(commandstats usec_per_call, a private redis-server):",
            "",
            md_table(["operation", "µs of Redis time"], ops),
            "",
            f"_(plans benchmark took {took:.0f} s)_",
            "",
        ]
    )


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
