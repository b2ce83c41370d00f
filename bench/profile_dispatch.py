"""Where one plan's time goes per batch, against the bare client (a profile, not a benchmark
for docs/benchmarks.md): ``python -m bench.profile_dispatch [--batches N] [--size S]``.

The drain runs in this process (the same ``Sender`` a worker builds, on a private
redis-server and the simulator in its own process), with its Redis scripts and HTTP calls
timed by wrapping the Sender's own objects; CPU seconds of Redis (INFO cpu), the simulator
(/proc/PID/stat) and this process are read before and after, so each part is shown as µs per
batch for the dispatcher and for a bare ``httpx.Client`` posting the same bodies.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import redis

from bench import Deployment, SimPlan, SimProcess, mobiles, token_of
from dispatcher.api import Dispatcher
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.models import Campaign
from dispatcher.sending.drain import Sender, Timing
from dispatcher.sinch.client import SinchClient
from dispatcher.storage import keys
from dispatcher.storage.fields import Batch
from dispatcher.storage.pending import Pending

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def redis_cpu(r: redis.Redis) -> float:
    info: dict[str, Any] = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Meter:
    def __init__(self, r: redis.Redis, sim: SimProcess) -> None:
        self.r, self.sim = r, sim

    def __enter__(self) -> Meter:
        self.t = time.perf_counter()
        self.c = (self_cpu(), redis_cpu(self.r), proc_cpu(self.sim.proc.pid))
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t
        c = (self_cpu(), redis_cpu(self.r), proc_cpu(self.sim.proc.pid))
        self.client_cpu, self.redis_cpu, self.sim_cpu = (
            b - a for a, b in zip(self.c, c, strict=True)
        )


def timed(spent: dict[str, list[float]], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name].append(time.perf_counter() - t)

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--profile", action="store_true", help="cProfile the drain (slower)")
    ap.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the plan's prefetch_take (--no-prefetch: a Redis round trip between POSTs)",
    )
    args = ap.parse_args()
    size, nb = args.size, args.batches
    plan_id, bare_id = f"disp-{size}", f"bare-{size}"
    with (
        LocalRedis() as server,
        SimProcess([SimPlan(p, token_of(p), 0) for p in (plan_id, bare_id)]) as sim,
        Deployment(
            server.url,
            sim.url,
            [(plan_id, 1_000_000, {"batch_size": size, "prefetch_take": args.prefetch})],
        ) as dep,
    ):
        r = redis.Redis.from_url(server.url)
        settings = dep.settings
        d = Dispatcher(settings, r)
        w = settings.worker
        http = SinchClient(timeout_s=w.http_timeout_s, connect_timeout_s=w.http_connect_timeout_s)
        sender = Sender(settings, r, http, timing=Timing.from_config(w))
        sender.timing = Timing(**{**vars(sender.timing), "slice_s": 3600.0})  # one drain
        spent: dict[str, list[float]] = defaultdict(list)
        # Wrap the Sender's own collaborators (this process only), not drain.py.
        sender.scripts.take = timed(spent, "take", sender.scripts.take)  # type: ignore[method-assign]
        sender.scripts.commit = timed(spent, "commit+take", sender.scripts.commit)  # type: ignore[method-assign]
        sender.scripts.give_back = timed(spent, "give_back (check)", sender.scripts.give_back)  # type: ignore[method-assign]
        sender.scripts.take_later = timed(spent, "take, written", sender.scripts.take_later)  # type: ignore[method-assign]
        sender.scripts.commit_later = timed(
            spent, "commit+take, written", sender.scripts.commit_later
        )  # type: ignore[method-assign]
        Pending.result = timed(spent, "their replies, read", Pending.result)  # type: ignore[method-assign]
        orig_post = http._http.post
        http._http.post = timed(spent, "httpx.post", orig_post)  # type: ignore[method-assign]
        http.send_batch = timed(spent, "send_batch", http.send_batch)  # type: ignore[method-assign]
        orig_json = httpx.Response.json
        httpx.Response.json = timed(spent, "resp.json", orig_json)  # type: ignore[method-assign]

        for k in range(2):  # warm up (k=0) then measure (k=1)
            n = nb * size if k else 5 * size
            numbers = mobiles(n, k * 100_000)
            cid = d.enqueue(
                Campaign(
                    plan=plan_id,
                    sender="Bench",
                    body="Hello from the benchmark",
                    recipients=numbers,
                )
            )
            lane = r.lrange(keys.lane(plan_id), 0, -1)
            payloads = [r.hget(keys.batch(plan_id, b.decode()), Batch.PAYLOAD) for b in lane]
            spent.clear()
            r.config_resetstat()
            prof = cProfile.Profile() if args.profile and k else None
            with Meter(r, sim) as m_disp:
                if prof:
                    prof.enable()
                why = sender.drain(plan_id)
                if prof:
                    prof.disable()
            assert d.status(cid).state == "done", (why, d.status(cid))
            stats: dict[str, Any] = r.info("commandstats")
            with Meter(r, sim) as m_bare, httpx.Client(timeout=30) as c:
                headers = {
                    "Authorization": f"Bearer {token_of(bare_id)}",
                    "Content-Type": "application/json",
                }
                url = f"{sim.url}/xms/v1/{bare_id}/batches"
                for body in payloads:
                    assert body is not None
                    resp = c.post(url, content=body, headers=headers)
                    assert resp.status_code == 201
        batches = len(spent["send_batch"])
        us = lambda x: x / batches * 1e6  # noqa: E731
        body_b, reply_b = len(payloads[0] or b""), len(resp.content)
        print(f"size {size}, {batches} batches; body {body_b} B, reply {reply_b} B")
        print(f"{'':28s} {'dispatcher':>12s} {'bare':>10s}   (µs per batch)")
        print(f"{'wall':28s} {us(m_disp.wall):12.0f} {us(m_bare.wall):10.0f}")
        print(
            f"{'this process CPU':28s} {us(m_disp.client_cpu):12.0f} {us(m_bare.client_cpu):10.0f}"
        )
        print(f"{'Redis CPU':28s} {us(m_disp.redis_cpu):12.0f} {us(m_bare.redis_cpu):10.0f}")
        print(f"{'simulator CPU':28s} {us(m_disp.sim_cpu):12.0f} {us(m_bare.sim_cpu):10.0f}")
        for name in (
            "send_batch", "httpx.post", "resp.json", "commit+take", "take", "take, written",
            "commit+take, written", "their replies, read", "give_back (check)",
        ):  # fmt: skip
            v = spent.get(name, [])
            print(f"  {name:26s} {sum(v) / batches * 1e6:12.0f}   ({len(v)} calls)")
        ev = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        print(
            f"  {'EVALSHA time in Redis':26s} {ev['usec'] / batches:12.0f}   ({ev['calls']} calls)"
        )
        rates = batches * size / m_disp.wall, batches * size / m_bare.wall
        ratio = m_bare.wall / m_disp.wall
        print(f"  {'rec/s':26s} {rates[0]:12.0f} {rates[1]:10.0f}  ratio {ratio:.2f}")
        inner = sorted(
            ((v["usec"] / batches, v["calls"] / batches, k[8:]) for k, v in stats.items()
             if k not in ("cmdstat_evalsha", "cmdstat_config")), reverse=True,
        )  # fmt: skip
        print("  inside the scripts, per batch:", ", ".join(
            f"{name} {calls:.1f}x {u:.1f} µs" for u, calls, name in inner[:12]))  # fmt: skip
        if prof:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(22)
            print(s.getvalue())
        http.close()
        r.close()
        _ = json


if __name__ == "__main__":
    main()
