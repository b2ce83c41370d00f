"""Properties checked from outside: the rate envelope, FIFO, and that no secret leaks anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlsplit

import httpx
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.devtools.localredis import free_port
from dispatcher.storage import keys
from sinch_simulator import Arrival, Simulator
from tests.support.deploy import ROOT, Deployment
from tests.support.numbers import mobiles

JITTER_S = 0.25  # CONTRACT.md 1: checked at the provider, allowing 250 ms of jitter


def worst_window(arrivals: Sequence[Arrival], rate: float, burst: float) -> tuple[float, str]:
    """The largest share of the envelope any window used: max over windows [t_i, t_j] of
    recipients / (burst + rate * T), with T = max(1 s, t_j - t_i + jitter).  <= 1.0 passes.

    Also describes the worst window, for the assertion message.
    """
    ts = [a.t for a in arrivals]
    ns = [len(a.to) for a in arrivals]
    worst, where = 0.0, "no arrivals"
    for i in range(len(ts)):
        total = 0
        for j in range(i, len(ts)):
            total += ns[j]
            span = ts[j] - ts[i]
            allowed = burst + rate * max(1.0, span + JITTER_S)
            if total / allowed > worst:
                worst = total / allowed
                where = f"{total} recipients in {span:.3f} s (allowed {allowed:.0f})"
    return worst, where


def bucket_excess(arrivals: Sequence[Arrival], rate: float, burst: float) -> float:
    """The stricter token-bucket reading: max over windows of recipients - (burst + rate * span),
    in recipients (what the provider's own limiter, with 250 ms tolerance, would refuse beyond
    rate * 0.25)."""
    worst, best_start, total = -float("inf"), -float("inf"), 0.0
    for a in arrivals:
        best_start = max(best_start, rate * a.t - total)
        total += len(a.to)
        worst = max(worst, total - rate * a.t + best_start - burst)
    return worst


def assert_fifo(sim: Simulator, plan: str, enqueued: list[str]) -> None:
    got = sim.accepted_recipients(plan)
    assert len(got) == len(set(got)), f"{plan}: a recipient arrived twice"
    assert len(got) == len(enqueued), f"{plan}: {len(enqueued) - len(got)} recipients missing"
    assert got == enqueued, f"{plan}: arrivals differ from enqueue order"


def assert_envelope(
    sim: Simulator, plan: str, rate: float, burst: float, since: float = 0.0
) -> float:
    arrivals = [a for a in sim.arrivals(plan) if a.t >= since]
    worst, where = worst_window(arrivals, rate, burst)
    assert worst <= 1.0, f"{plan}: envelope exceeded: {where}"
    return worst


def enqueue_interleaved(
    d: Dispatcher, plans: dict[str, tuple[float, int, int]], campaigns_per_plan: int = 3
) -> tuple[dict[str, list[str]], list[str]]:
    """Several campaigns per plan, enqueued round-robin across plans; returns the expected
    arrival order per plan and the campaign ids."""
    numbers = {p: mobiles(n, seed=i) for i, (p, (_, _, n)) in enumerate(plans.items())}
    ids: list[str] = []
    for k in range(campaigns_per_plan):
        for p, nums in numbers.items():
            size = -(-len(nums) // campaigns_per_plan)
            part = nums[k * size : (k + 1) * size]
            if part:
                ids.append(
                    d.enqueue(
                        Campaign(
                            plan=p, sender="Acme", body="Hi", recipients=["+" + x for x in part]
                        )
                    )
                )
    return numbers, ids


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def tokens_of(dep: Deployment) -> set[str]:
    """The deployment's secrets: plan tokens, the callback secret, and the passwords in its Redis and broker URLs."""
    found = {
        v
        for k, v in dep.env.items()
        if (k.endswith("_TOKEN") or k == "DISPATCH_CALLBACK_SECRET") and v
    }
    urls = [
        dep.redis_url,
        dep.env.get("DISPATCH_REDIS_URL", ""),
        dep.env.get("DISPATCH_BROKER_URL", ""),
    ]
    for p in {urlsplit(u).password for u in urls} - {None, ""}:
        assert p is not None
        found |= {p, unquote(p)}  # as written in the URL, and as sent to Redis
    return found


def redis_dump(r: redis.Redis) -> str:
    """Every key and value in Redis: plan state, stats (the metrics' source), DLQ, broker."""
    out: list[str] = []
    for key in r.scan_iter(count=1000):
        kind = _s(r.type(key))
        value: object
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        out.append(f"{key!r} {value!r}")
    return "\n".join(out)


def metrics_text(dep: Deployment) -> str:
    """What Prometheus would scrape from `dispatcher metrics` for the whole deployment."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "metrics", "--port", str(port), "--host", "127.0.0.1"],
        env=dep.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                if resp.status_code == 200:
                    return resp.text
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"dispatcher metrics did not serve: {out[-2000:]}")
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            rest = proc.stdout.read().decode()
            for token in tokens_of(dep):
                assert token not in rest


def cli_outputs(dep: Deployment, r: redis.Redis) -> str:
    outs: list[str] = []
    campaigns = [_s(c) for c in r.hkeys(keys.CAMPAIGNS)]
    commands = [("plans",), ("plans", "--json"), ("dlq", "list"), ("dlq", "list", "--json")]
    commands += [("status", c, "--json") for c in campaigns[:5]]
    entries = json.loads(dep.cli("dlq", "list", "--json").stdout or "[]")
    commands += [("dlq", "show", e["id"]) for e in entries[:5]]
    for args in commands:
        out = dep.cli(*args)
        outs.append(f"$ {' '.join(args)}\n{out.stdout}{out.stderr}")
    return "\n".join(outs)


def assert_no_secrets(
    dep: Deployment, r: redis.Redis, texts: Iterable[str] = (), *, also: Iterable[str] = ()
) -> dict[str, int]:
    """Fail if any token of the deployment (or in ``also``) is in any output of the run.

    Returns the number of characters looked at per source (so a caller can show it is not
    looking at nothing).
    """
    tokens = tokens_of(dep) | set(also)
    assert tokens and all(len(t) >= 8 for t in tokens)
    sources = {
        "worker logs": dep.log_text(),
        "redis (state, stats, DLQ, broker)": redis_dump(r),
        "cli": cli_outputs(dep, r),
        "metrics": metrics_text(dep),
        "other": "\n".join(texts),
    }
    for where, text in sources.items():
        for token in tokens:
            assert token not in text, f"a token appears in the {where}"
    assert "Bearer " not in sources["worker logs"] + sources["redis (state, stats, DLQ, broker)"]
    return {k: len(v) for k, v in sources.items()}
