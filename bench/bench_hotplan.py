"""A hot plan beside many small plans (issue 14): does the plan under backlog keep its rate, and
how long do the small plans wait?

One plan at 400/s with a 12,000-recipient campaign (30 s of backlog) is enqueued first; as
soon as it is sending, N small plans at 5/s each get a 10-recipient campaign (two batches of
5: one at once, one a second later).  Two ``celery -A workers worker --concurrency 2``
processes, a private redis-server and the simulator in its own process, as a user runs them.

Figures, all from the simulator's arrival log (its clock, the same host's):

* hot plan mean as a share of its rate: (recipients - first batch) / (last - first arrival);
* the hot plan's gaps: per batch, the time between its arrival and the moment its plan's
  bucket held its tokens (a perfect sender: 0), p50/p99/max and their sum (the time lost);
* small plans, due -> sent per batch: a batch is due when it is enqueued and its plan's bucket
  (replayed from the arrivals) holds its recipients; p50/p99/max, and when the last arrived.

The set-up costs of many plans (config load, simulator start, worker start, enqueue) are
reported too: they grow with the plan count and were scaling bugs once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from bench import Deployment, SimPlan, SimProcess, md_table, mobiles, token_of, wait_for
from dispatcher.api import Dispatcher
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.models import Campaign

HOT_RATE = 400.0
HOT_RECIPIENTS = 12_000
SMALL_RATE = 5.0
SMALL_RECIPIENTS = 10
WORKERS, CONCURRENCY = 2, 2


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def due_waits(
    arrivals: Sequence[tuple[float, int]], ready_at: float, rate: float, burst: float
) -> list[float]:
    """Per batch, arrival - due, where due = max(ready_at, when the plan's bucket (full at
    ``ready_at``, refilled at ``rate``, drained by the actual arrivals) held its recipients)."""
    tokens, last, out = burst, ready_at, []
    for t, n in arrivals:
        # When would the bucket hold n, given what it held at `last`?
        due = last if tokens >= n else last + (n - tokens) / rate
        out.append(max(0.0, t - due))
        tokens = min(burst, tokens + rate * max(0.0, t - last)) - n
        last = t
    return out


def scenario(n_small: int, hot_recipients: int) -> dict[str, Any]:
    hot = "hot"
    small = [f"s{i:05d}" for i in range(n_small)]
    out: dict[str, Any] = {"plans": n_small}
    with LocalRedis() as server:
        t = time.monotonic()
        sim = SimProcess([SimPlan(p, token_of(p), 0) for p in [hot, *small]])
        out["sim_start_s"] = time.monotonic() - t
        with (
            sim,
            Deployment(
                server.url, sim.url, [(hot, HOT_RATE, {}), *((p, SMALL_RATE, {}) for p in small)]
            ) as dep,
        ):
            t = time.monotonic()
            settings = dep.settings
            out["config_load_s"] = time.monotonic() - t
            r = redis.Redis.from_url(server.url)
            d = Dispatcher(settings, r)
            d.enqueue(
                Campaign(plan=hot, sender="Bench", body="Hi", recipients=mobiles(hot_recipients))
            )
            t = time.monotonic()
            for _ in range(WORKERS):
                dep.start_worker(concurrency=CONCURRENCY)

            def hot_started() -> bool:
                return sim.stats()[hot]["batches_accepted"] > 0

            wait_for(hot_started, 120, "the hot plan's first batch", poll=0.05)
            out["worker_start_s"] = time.monotonic() - t
            enqueued: dict[str, float] = {}
            numbers = mobiles(n_small * SMALL_RECIPIENTS, 1_000_000)
            t = time.monotonic()
            for i, p in enumerate(small):
                rec = numbers[i * SMALL_RECIPIENTS : (i + 1) * SMALL_RECIPIENTS]
                d.enqueue(Campaign(plan=p, sender="Bench", body="Hi", recipients=rec))
                enqueued[p] = time.time()
            out["enqueue_s"] = time.monotonic() - t
            expected = hot_recipients + n_small * SMALL_RECIPIENTS

            def all_sent() -> bool:
                return sum(s["recipients_accepted"] for s in sim.stats().values()) >= expected

            wait_for(all_sent, 600, "every recipient", poll=0.5)
            arrivals: dict[str, list[tuple[float, int]]] = {}
            for a in sim.arrivals(""):
                if a["status"] == 201:
                    arrivals.setdefault(a["plan"], []).append((a["t"], len(a["to"])))
            r.close()
    for v in arrivals.values():
        v.sort()
    h = arrivals[hot]
    span = h[-1][0] - h[0][0]
    out["hot_mean"] = (sum(n for _, n in h) - h[0][1]) / span / HOT_RATE
    gaps = due_waits(h, h[0][0], HOT_RATE, HOT_RATE)[1:]
    out["hot_gap_p50"], out["hot_gap_p99"] = _pct(gaps, 0.5), _pct(gaps, 0.99)
    out["hot_gap_max"], out["hot_lost_s"] = max(gaps, default=0.0), sum(gaps)
    waits = [w for p in small for w in due_waits(arrivals[p], enqueued[p], SMALL_RATE, SMALL_RATE)]
    out["small_p50"], out["small_p99"] = _pct(waits, 0.5), _pct(waits, 0.99)
    out["small_max"] = max(waits, default=0.0)
    first_enqueue = min(enqueued.values())
    out["small_finish_s"] = max(v[-1][0] for p, v in arrivals.items() if p != hot) - first_enqueue
    out["hot_span_s"] = span
    return out


def run(quick: bool = False) -> str:
    sizes = [1_000] if quick else [1_000, 10_000]
    rows = []
    for n in sizes:
        o = scenario(n, HOT_RECIPIENTS)
        rows.append(
            [
                o["plans"],
                f"{o['hot_mean']:.1%}",
                o["hot_span_s"],
                f"{o['hot_gap_p50'] * 1000:.0f} / {o['hot_gap_p99'] * 1000:.0f} / "
                f"{o['hot_gap_max'] * 1000:.0f}",
                o["hot_lost_s"],
                f"{o['small_p50'] * 1000:.0f} / {o['small_p99'] * 1000:.0f} / "
                f"{o['small_max'] * 1000:.0f}",
                o["small_finish_s"],
                f"{o['config_load_s']:.2f} / {o['sim_start_s']:.2f} / "
                f"{o['worker_start_s']:.1f} / {o['enqueue_s']:.1f}",
            ]
        )
    return "\n".join(
        [
            "## Hot plan beside many plans",
            "",
            f"One plan at {HOT_RATE:g}/s (burst = rate, batches of 400) with a "
            f"{HOT_RECIPIENTS:,}-recipient campaign, and N plans at {SMALL_RATE:g}/s with a "
            f"{SMALL_RECIPIENTS}-recipient campaign each (two batches of 5), enqueued once the "
            f"hot plan sends; {WORKERS} `celery -A workers worker --concurrency {CONCURRENCY}`. "
            "Hot mean = (recipients - first batch) / (last - first arrival) / rate (target "
            ">= 97%). Gap = a batch's arrival after its tokens were there (a perfect sender: 0); "
            "lost = the gaps' sum. Small due -> sent: from when a batch was enqueued and its "
            "tokens were there to its arrival. Finish = last small arrival after the first small "
            "enqueue. Set-up = config load / simulator start / worker start to the first batch / "
            "enqueue of the N small campaigns, in seconds.",
            "",
            md_table(
                [
                    "small plans",
                    "hot mean/rate",
                    "hot seconds",
                    "hot gap ms p50 / p99 / max",
                    "hot lost s",
                    "small due->sent ms p50 / p99 / max",
                    "small finish s",
                    "set-up s",
                ],
                rows,
            ),
            "",
        ]
    )


if __name__ == "__main__":
    import sys

    print(run("--quick" in sys.argv))
