"""Enqueue at scale: a 1,000,000-recipient campaign.

* "once validated": ``build_batches`` (split into batches and render each request body) plus
  ``Store.write_campaign`` (one MULTI/EXEC, then the plan is kicked), from an already
  validated recipient list.  Targets: < 3 s and < 250 MB peak RSS.
* the full ``Dispatcher.enqueue`` from raw user input (normalize, validate, de-duplicate, then
  the same), for comparison.

Each case runs in a fresh child process so that its peak RSS (``ru_maxrss``) is its own; the
Redis memory it takes is the INFO used_memory delta.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

import redis

from bench import ROOT, md_table
from dispatcher.devtools.localredis import LocalRedis

N = 1_000_000
BODY = "Hello from the benchmark"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(case: str, url: str, n: int) -> dict[str, Any]:
    """Runs in the child process: one case, its figures as a dict."""
    from dispatcher.api import Dispatcher, build_batches
    from dispatcher.campaign.prepare import Prepared
    from dispatcher.config import Settings
    from dispatcher.models import Campaign

    settings = Settings.from_mapping(
        {
            "redis_url": url,
            "plans": {"big": {"base_url": "http://127.0.0.1:9", "token_env": "T", "rate": 1000}},
        },
        env={"T": "x"},
    )
    r = redis.Redis.from_url(url)
    d = Dispatcher(settings, r)
    plan = settings.plans["big"]
    if case == "validated":
        recipients = [f"4670{i:07d}" for i in range(n)]
        prepared = Prepared(recipients, [], 0, None, "GSM-7", 1, n, 1)
        rss_before = _rss_mb()
        t = time.perf_counter()
        batches = build_batches("cbench", plan, "Bench", BODY, prepared)
        t_build = time.perf_counter() - t
        d.store.write_campaign("big", "cbench", {"recipients": n, "batches": len(batches)}, batches)
        elapsed = time.perf_counter() - t
        queued = r.llen("dsp:{big}:lane")
    else:
        raw = [f"+46 70-{i:07d}" for i in range(n)]
        rss_before = _rss_mb()
        t = time.perf_counter()
        cid = d.enqueue(Campaign(plan="big", sender="Bench", body=BODY, recipients=raw))
        elapsed = time.perf_counter() - t
        t_build = float("nan")
        queued = d.status(cid).recipients
    return {
        "seconds": elapsed,
        "build_s": t_build,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _rss_mb(),
        "queued": queued,
    }


def measure(case: str, server: LocalRedis, n: int) -> dict[str, Any]:
    admin = redis.Redis.from_url(server.url)
    admin.flushall()
    base = int(admin.info("memory")["used_memory"])
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_enqueue", "--child", case, server.url, str(n)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["redis_mb"] = (int(admin.info("memory")["used_memory"]) - base) / 1e6
    admin.flushall()
    admin.close()
    return result


def run(quick: bool = False) -> str:
    n = 200_000 if quick else N
    rows: list[list[Any]] = []
    with LocalRedis() as server:
        for case, label, targets in (
            ("validated", "build_batches + write_campaign (once validated)", "< 3 s, < 250 MB"),
            ("enqueue", "Dispatcher.enqueue (validation included)", "-"),
        ):
            m = measure(case, server, n)
            rows.append(
                [
                    label,
                    n,
                    m["seconds"],
                    "-" if m["build_s"] != m["build_s"] else f"{m['build_s']:.2f}",
                    m["peak_rss_mb"],
                    m["peak_rss_mb"] - m["rss_before_mb"],
                    m["redis_mb"],
                    targets,
                ]
            )
    return "\n".join(
        [
            "## Enqueue at scale",
            "",
            f"One campaign of {n:,} recipients, batches of 1,000, body `{BODY}`, into a private "
            "redis-server; each case in a fresh child process. Peak RSS is the child's "
            "ru_maxrss, including the recipient list it starts from; 'added over input' "
            "leaves out what that list alone took.",
            "",
            md_table(
                [
                    "what",
                    "recipients",
                    "seconds",
                    "of which build s",
                    "peak RSS MB",
                    "added over input MB",
                    "Redis MB",
                    "target",
                ],
                rows,
            ),
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        print(run("--quick" in sys.argv))
