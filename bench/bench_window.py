"""A fast plan behind a slow provider: the mean rate against the plan's limit as the provider's
latency grows, for ``max_in_flight`` 1, 2 and 4 (docs/architecture.md, "A window of batches in
flight").

With one batch in flight a plan cannot go faster than ``batch_size / latency``: 1,000 / 0.4 s
is 2,500/s, 62.5% of a plan at 4,000/s.  A window of k batches raises that cap k times; the
token bucket still decides the rate.  Real workers, a private redis-server and the simulator
in its own process (its latency is uniform 0.5x-1.5x of the mean, its own limiter off).
"""

from __future__ import annotations

import time
from typing import Any

import redis

from bench import Deployment, SimPlan, SimProcess, md_table, mobiles, token_of, wait_for
from dispatcher.api import Dispatcher
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.models import Campaign

RATE = 4000.0
BATCH = 1000
LATENCIES_MS = (50, 200, 400)
WINDOWS = (1, 2, 4)
WORKERS = 2


def steady_rate(arrivals: list[dict[str, Any]]) -> float:
    """Recipients/s over the second half of the recipients: from the arrival that completed
    the first half to the last one.  By then the bucket's starting stock (burst, and what
    piled up while a latency-bound sender fell behind) is spent, so a sender held by the limit
    shows exactly the rate and one held by latency its ``batch_size / latency``."""
    ok = sorted((a for a in arrivals if a["status"] == 201), key=lambda a: a["t"])
    half = sum(len(a["to"]) for a in ok) / 2
    total, i = 0, 0
    while i < len(ok) and total < half:
        total += len(ok[i]["to"])
        i += 1
    if i >= len(ok):
        return 0.0
    rest = sum(len(a["to"]) for a in ok[i:])
    span = ok[-1]["t"] - ok[i - 1]["t"]
    return rest / span if span > 0 else 0.0


def run(quick: bool = False) -> str:
    t = time.monotonic()
    batches = 16 if quick else 40
    plans = [(f"win-k{k}", k) for k in WINDOWS]
    cells: dict[tuple[int, int], float] = {}
    with (
        LocalRedis() as server,
        SimProcess([SimPlan(p, token_of(p), 0) for p, _ in plans]) as sim,
        Deployment(
            server.url,
            sim.url,
            [(p, RATE, {"batch_size": BATCH, "max_in_flight": k}) for p, k in plans],
        ) as dep,
    ):
        r = redis.Redis.from_url(server.url)
        d = Dispatcher(dep.settings, r)
        for _ in range(WORKERS):
            dep.start_worker()
        start = 0
        for lat in LATENCIES_MS:
            for p, k in plans:
                sim.reset()
                sim.set_faults(latency_ms=lat)  # after the reset, which clears the faults
                n = batches * BATCH
                cid = d.enqueue(
                    Campaign(plan=p, sender="Bench", body="Hi", recipients=mobiles(n, start))
                )
                start += n
                wait_for(lambda c=cid: d.status(c).state == "done", 300, "the campaign")  # type: ignore[misc]
                cells[(lat, k)] = steady_rate(sim.arrivals(p))
        r.close()

    def cell(lat: int, k: int) -> str:
        return f"{cells[(lat, k)] / RATE:.0%} ({cells[(lat, k)]:,.0f}/s)"

    def cap(lat: int) -> str:
        return f"{min(1.0, BATCH / lat * 1000 / RATE):.1%}"

    rows = [[f"{lat} ms", *(cell(lat, k) for k in WINDOWS), cap(lat)] for lat in LATENCIES_MS]
    return "\n".join(
        [
            "## A fast plan behind a slow provider",
            "",
            f"One plan at {RATE:,.0f}/s (burst = rate), batches of {BATCH:,}, {batches} batches "
            f"per cell, {WORKERS} worker processes, the simulator answering after the latency "
            "shown (uniform 0.5x-1.5x of it) with no limit of its own. Mean = the second half of "
            "the recipients / the time from the arrival that completed the first half to the "
            "last (the bucket's starting stock spent by then), against the limit. "
            "With `max_in_flight = 1` the cap is batch / latency (last column).",
            "",
            md_table(
                [
                    "provider latency",
                    *(f"max_in_flight = {k}" for k in WINDOWS),
                    "cap of k = 1",
                ],
                rows,
            ),
            "",
            f"_(window benchmark took {time.monotonic() - t:.0f} s)_",
            "",
        ]
    )


if __name__ == "__main__":
    import sys

    print(run("--quick" in sys.argv))
