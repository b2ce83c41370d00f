"""The whole send path: real ``celery -A workers worker`` processes, a private redis-server and
the simulator in its own process.

* Ceiling: one plan with a limit far above what the machine can push; the recipients/s the
  workers get through the simulator, as a ratio to a bare httpx client posting the same
  request bodies, one after another, to the same simulator in the same run (target >= 0.9).
* Accuracy: plans under a backlog; the mean rate against the limit (target >= 97%) and the
  worst window of the contract's envelope (<= 100% keeps it), from the simulator's log.

Rates are taken from the simulator's arrival log: (recipients - first batch) / (last arrival -
first arrival), so worker start-up is not counted against anyone.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import redis

from bench import (
    Deployment,
    SimPlan,
    SimProcess,
    md_table,
    mobiles,
    token_of,
    wait_for,
    worst_window,
)
from dispatcher.api import Dispatcher, build_batches
from dispatcher.campaign.prepare import prepare
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.models import Campaign

WORKERS = 2
BODY = "Hello from the benchmark"
ROUNDS = 5


def arrival_rate(arrivals: list[dict[str, Any]]) -> tuple[float, int, float]:
    """(recipients/s after the first batch, recipients, seconds from first to last arrival)."""
    ok = [a for a in arrivals if a["status"] == 201]
    ok.sort(key=lambda a: a["t"])
    total = sum(len(a["to"]) for a in ok)
    span = ok[-1]["t"] - ok[0]["t"]
    return (total - len(ok[0]["to"])) / span if span > 0 else 0.0, total, span


def bare_client(sim: SimProcess, plan: str, payloads: list[bytes]) -> None:
    headers = {"Authorization": f"Bearer {token_of(plan)}", "Content-Type": "application/json"}
    url = f"{sim.url}/xms/v1/{plan}/batches"
    with httpx.Client(timeout=30) as client:
        for body in payloads:
            resp = client.post(url, content=body, headers=headers)
            if resp.status_code != 201:
                raise RuntimeError(f"bare client got {resp.status_code}")


def ceiling(quick: bool) -> str:
    # Recipients per round: enough for about 1 s of the bare client at either size on this
    # machine (it posts ~400,000 rec/s in batches of 1,000 and ~100,000 in batches of 100).
    # Rounds of 100 requests (0.25 s) made the ratio swing 0.69 / 0.94 / 1.32 in one run.
    sizes = [(1000, 100_000 if quick else 400_000), (100, 30_000 if quick else 100_000)]
    rounds = 3 if quick else ROUNDS
    rows: list[list[Any]] = []
    # Each size three ways: the default send loop (each Redis round trip written before a POST
    # and read after it, overlap.py), the loop with that round trip between two POSTs
    # (prefetch_take = false, the only loop before 2026-12-03), and a window of two
    # (max_in_flight = 2: two POSTs at once, which strict FIFO does not allow).
    variants: list[tuple[str, dict[str, Any]]] = [
        ("disp", {}), ("off", {"prefetch_take": False}), ("w2", {"max_in_flight": 2}),
    ]  # fmt: skip
    labels = {
        "disp": "default (round trip behind the POST)",
        "off": "prefetch_take = false (round trip between POSTs)",
        "w2": "max_in_flight = 2",
    }
    plans = [f"{kind}-{size}" for size, _ in sizes for kind in ("bare", "disp", "off", "w2")]
    with (
        LocalRedis() as server,
        SimProcess([SimPlan(p, token_of(p), 0) for p in plans]) as sim,
        Deployment(
            server.url,
            sim.url,
            [
                (f"{kind}-{size}", 1_000_000, {"batch_size": size, **extra})
                for size, _ in sizes
                for kind, extra in variants
            ],
        ) as dep,
    ):
        r = redis.Redis.from_url(server.url)
        settings = dep.settings
        d = Dispatcher(settings, r)
        for _ in range(WORKERS):
            dep.start_worker()
        for size, n in sizes:
            # Rounds alternate bare and dispatcher (both ways), so load from elsewhere on a
            # shared machine hits all alike; the median round's ratio is reported.
            per_round = n
            results: dict[str, list[tuple[float, float]]] = {k: [] for k, _ in variants}
            for k in range(rounds):
                numbers = mobiles(per_round, k * per_round)
                prepared = prepare(BODY, numbers)
                base = settings.plans[f"disp-{size}"]
                payloads = [
                    b.payload for b in build_batches(f"cbare{k}", base, "Bench", BODY, prepared)
                ]
                for kind, _ in variants:
                    plan = settings.plans[f"{kind}-{size}"]
                    sim.reset()
                    bare_client(sim, f"bare-{size}", payloads)
                    bare_rate, _, _ = arrival_rate(sim.arrivals(f"bare-{size}"))
                    cid = d.enqueue(
                        Campaign(plan=plan.id, sender="Bench", body=BODY, recipients=numbers)
                    )
                    wait_for(lambda c=cid: d.status(c).state == "done", 600, "the campaign")  # type: ignore[misc]
                    disp_rate, total, _ = arrival_rate(sim.arrivals(plan.id))
                    if total != per_round:
                        raise RuntimeError(f"{plan.id}: {total} of {per_round} recipients arrived")
                    results[kind].append((bare_rate, disp_rate))
            for kind, _ in variants:
                res = sorted(results[kind], key=lambda x: x[1] / x[0])
                bare_rate, disp_rate = res[rounds // 2]
                rows.append(
                    [size, labels[kind], per_round, per_round // size,
                     bare_rate, disp_rate, f"{disp_rate / bare_rate:.2f}",
                     " / ".join(f"{b / a:.2f}" for a, b in res)]
                )  # fmt: skip
        r.close()
    return "\n".join(
        [
            "## Dispatcher against the ceiling",
            "",
            f"One plan with a limit of 1,000,000/s, {WORKERS} worker processes "
            "(`celery -A workers worker --concurrency 1` each), against a bare `httpx.Client` "
            "posting the same request bodies one after another to the same simulator process, "
            f"in {rounds} alternating rounds of about 1 s of the bare client each (median "
            "shown), each round measuring the bare client right before each dispatcher "
            "variant: the default loop (the commit of each accepted batch, fused with the "
            "take of the one after the next, written to Redis before the next POST and read "
            "after it), `prefetch_take = false` (that round trip between two POSTs, as before "
            "2026-12-03) and `max_in_flight = 2` (two POSTs at once). "
            "A plan has one sender at a time (FIFO), so one sequential client is the ceiling "
            "of strict order; a window of two is not strict order, and may pass it. "
            "Target: ratio >= 0.9.",
            "",
            md_table(
                [
                    "batch size",
                    "send loop",
                    "recipients/round",
                    "requests/round",
                    "bare httpx rec/s",
                    "dispatcher rec/s",
                    "ratio (median)",
                    "ratios of all rounds",
                ],
                rows,
            ),
            "",
        ]
    )


ACCURACY = [(50.0, 10), (200.0, 20), (1000.0, 100)]  # (rate, batch_size); burst = rate


def accuracy(quick: bool) -> str:
    seconds = 8 if quick else 20
    plans = [(f"acc-{int(rate)}", rate, size) for rate, size in ACCURACY]
    rows: list[list[Any]] = []
    with (
        LocalRedis() as server,
        SimProcess([SimPlan(p, token_of(p), 0) for p, _, _ in plans]) as sim,
        Deployment(
            server.url, sim.url, [(p, rate, {"batch_size": size}) for p, rate, size in plans]
        ) as dep,
    ):
        r = redis.Redis.from_url(server.url)
        d = Dispatcher(dep.settings, r)
        ids = []
        start = 0
        for p, rate, _ in plans:
            n = int(rate * (seconds + 1))
            ids.append(
                d.enqueue(Campaign(plan=p, sender="Bench", body="Hi", recipients=mobiles(n, start)))
            )
            start += n
        for _ in range(WORKERS):
            dep.start_worker()
        wait_for(lambda: all(d.status(c).state == "done" for c in ids), 10 * seconds + 60, "done")
        for p, rate, size in plans:
            arrivals = sorted(sim.arrivals(p), key=lambda a: a["t"])
            total = sum(len(a["to"]) for a in arrivals)
            span = arrivals[-1]["t"] - arrivals[0]["t"]
            mean = (total - rate) / span  # a perfect limiter: burst at once, then exactly rate
            worst, where = worst_window([(a["t"], len(a["to"])) for a in arrivals], rate, rate)
            n429 = sum(1 for a in arrivals if a["status"] == 429)
            rows.append(
                [
                    p,
                    rate,
                    size,
                    total,
                    span,
                    mean,
                    f"{mean / rate:.1%}",
                    f"{worst:.1%}",
                    where,
                    n429,
                ]
            )
        r.close()
    return "\n".join(
        [
            "## Accuracy under a backlog",
            "",
            f"Three plans at once, {WORKERS} worker processes, burst = rate, a backlog of about "
            f"{seconds + 1} s per plan. Mean rate = (recipients - burst) / (last arrival - first "
            "arrival), which is exactly the limit for a perfect limiter (target >= 97%). Worst "
            "window = the largest share of `burst + rate x max(1 s, T + 0.25 s)` that any window "
            "of arrivals used (<= 100% keeps CONTRACT.md guarantee 1). The simulator enforced no "
            "limit of its own here; 429s would show in the last column.",
            "",
            md_table(
                [
                    "plan",
                    "rate/s",
                    "batch",
                    "recipients",
                    "seconds",
                    "mean rec/s",
                    "mean/limit",
                    "worst window",
                    "worst window is",
                    "429s",
                ],
                rows,
            ),
            "",
        ]
    )


def run(quick: bool = False) -> str:
    t = time.monotonic()
    out = ceiling(quick) + "\n" + accuracy(quick)
    return out + f"\n_(dispatch benchmarks took {time.monotonic() - t:.0f} s)_\n"


if __name__ == "__main__":
    import sys

    print(run("--quick" in sys.argv))
