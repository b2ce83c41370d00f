"""The limiter alone: acquires per second and Redis work per acquire, ours against the Redis
limiters a Python user would otherwise reach for, on one private redis-server in one run.

Every limiter gets a limit so high that every acquire is granted (the decision path is what
is measured, not waiting), from one client thread, for a weight of 1 and of 100 (a batch of
100 recipients is one acquire of cost 100).  Round trips are counted on the client's
connection; Redis commands (those run inside Lua scripts included) come from INFO
commandstats deltas; memory is the INFO used_memory delta after the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Any

import redis

from bench import md_table
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.storage.scripts import for_client

HUGE = 10_000_000  # per second: never the reason for a denial


class Counting(redis.Connection):
    round_trips = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.round_trips += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def commandstats(r: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = r.info("commandstats")
    return {k: int(v["calls"]) for k, v in info.items()}


def ours(pool: redis.ConnectionPool) -> Callable[[int], bool]:
    r = redis.Redis(connection_pool=pool)
    scripts = for_client(r)

    def acquire(cost: int) -> bool:
        return scripts.bucket("bench", HUGE, HUGE, cost).granted == 1

    return acquire


def limits_limiter(pool: redis.ConnectionPool, url: str, kind: str) -> Callable[[int], bool]:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    storage = RedisStorage(url, connection_pool=pool)
    strategy = MovingWindowRateLimiter if kind == "moving" else SlidingWindowCounterRateLimiter
    limiter = strategy(storage)
    item = RateLimitItemPerSecond(HUGE)

    def acquire(cost: int) -> bool:
        return bool(limiter.hit(item, "bench", cost=cost))

    return acquire


def pyrate(pool: redis.ConnectionPool) -> Callable[[int], bool]:
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    r = redis.Redis(connection_pool=pool)
    bucket = RedisBucket.init([Rate(HUGE, Duration.SECOND)], r, "pyrate-bench")
    limiter = Limiter(bucket)
    # Its leaker thread would go on using the pool after the slice, and fail once it is gone.
    _closers.append(limiter.close)

    def acquire(cost: int) -> bool:
        return bool(limiter.try_acquire("bench", weight=cost, blocking=False))

    return acquire


_closers: list[Callable[[], None]] = []


def close_limiters() -> None:
    while _closers:
        _closers.pop()()


Make = Callable[[redis.ConnectionPool], Callable[[int], bool]]


@dataclass
class Work:
    """What one acquire costs Redis, from a pass of its own (not timed)."""

    trips: float  # client round trips per acquire
    cmds: float  # Redis commands per acquire, those inside scripts included
    redis_us: float  # script time inside Redis per acquire (commandstats usec)
    key_bytes: float  # MEMORY USAGE of every key afterwards, per acquire


def work(server: LocalRedis, make: Make, cost: int, n: int = 2000) -> Work:
    admin = redis.Redis.from_url(server.url)
    admin.flushall()
    pool = redis.ConnectionPool.from_url(server.url, connection_class=Counting)
    acquire = make(pool)
    for _ in range(200):  # warm up: scripts loaded, connection open
        acquire(cost)
    admin.flushall()
    admin.config_resetstat()
    Counting.round_trips = 0
    for _ in range(n):
        acquire(cost)
    trips = Counting.round_trips
    stats: dict[str, Any] = admin.info("commandstats")
    key_bytes = sum(int(admin.memory_usage(k, samples=0) or 0) for k in admin.scan_iter())
    close_limiters()
    admin.close()
    pool.disconnect()
    cmds = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_config")
    script_us = sum(int(v["usec"]) for k, v in stats.items() if k.startswith("cmdstat_eval"))
    return Work(trips / n, cmds / n, script_us / n, key_bytes / n)


BLOCK = 50  # acquires per turn


def timed_round(
    server: LocalRedis, makes: list[Make], cost: int, seconds: float, turn: int
) -> list[float]:
    """Acquires per second of each limiter in one round: all of them live on one flushed
    server, taking turns of BLOCK acquires in an order that rotates every turn, so a slow
    patch of a shared machine falls on all of them alike."""
    admin = redis.Redis.from_url(server.url)
    admin.flushall()
    pools = [redis.ConnectionPool.from_url(server.url, connection_class=Counting) for _ in makes]
    acquires = [make(pool) for make, pool in zip(makes, pools, strict=True)]
    for acquire in acquires:
        for _ in range(200):  # warm up: scripts loaded, connection open, keys written
            acquire(cost)
    spent = [0.0] * len(makes)
    counts = [0] * len(makes)
    denied = 0
    deadline = time.perf_counter() + seconds * len(makes)
    while time.perf_counter() < deadline:
        for j in range(len(makes)):
            i = (turn + j) % len(makes)
            acquire = acquires[i]
            t = time.perf_counter()
            for _ in range(BLOCK):
                denied += not acquire(cost)
            spent[i] += time.perf_counter() - t
            counts[i] += BLOCK
        turn += 1
    close_limiters()
    for pool in pools:
        pool.disconnect()
    admin.close()
    if denied:
        raise RuntimeError(f"{denied} acquires denied at a limit that should never deny")
    return [c / s for c, s in zip(counts, spent, strict=True)]


ROUNDS = 9


def run(quick: bool = False) -> str:
    rounds = 5 if quick else ROUNDS
    seconds = 0.3 if quick else 1.0  # per limiter and round
    rows: list[list[Any]] = []
    with LocalRedis() as server:
        candidates: list[tuple[str, Make]] = [
            ("ours: bucket.lua (token bucket, Redis TIME)", ours),
            ("limits: moving window", lambda p: limits_limiter(p, server.url, "moving")),
            (
                "limits: sliding window counter",
                lambda p: limits_limiter(p, server.url, "sliding"),
            ),
            ("pyrate-limiter: RedisBucket", pyrate),
        ]
        for cost in (1, 100):
            live: list[tuple[str, Make]] = []
            for name, make in candidates:
                probe = redis.ConnectionPool.from_url(server.url)
                try:
                    make(probe)
                    close_limiters()
                    live.append((name, make))
                except ImportError as exc:
                    rows.append([f"{name} (not installed: {exc.name})", cost, *["-"] * 7])
                finally:
                    probe.disconnect()
            rates = [
                timed_round(server, [m for _, m in live], cost, seconds, turn=i)
                for i in range(rounds)
            ]
            for k, (name, make) in enumerate(live):
                ratios = [r[k] / r[0] for r in rates]
                w = work(server, make, cost)
                rows.append([
                    name, cost, median(r[k] for r in rates), f"{median(ratios):.2f}x",
                    " / ".join(f"{x:.2f}" for x in ratios), w.trips, w.cmds, w.redis_us,
                    w.key_bytes,
                ])  # fmt: skip
    table = md_table(
        ["limiter", "cost", "acquires/s (median)", "vs ours (median of rounds)",
         "vs ours, each round", "round trips/acquire", "Redis commands/acquire",
         "µs in Redis/acquire", "key bytes/acquire"],
        rows,
    )  # fmt: skip
    return "\n".join(
        [
            "## Limiter: acquires per second and Redis work per acquire",
            "",
            "One client thread, every acquire granted (limit 10,000,000/s), the same redis-py "
            "client and connection pool for every limiter, no pipelines (one round trip per "
            f"acquire for all). {rounds} rounds of about {seconds:g} s per limiter; in each "
            "round all limiters are live on one flushed private redis-server, warmed up with "
            f"200 acquires each, and take turns of {BLOCK} acquires in an order rotated every "
            "turn. 'vs ours' is a peer's rate over ours in the same round (above 1.00x: "
            "faster than ours); the median of those ratios is shown with every round's. "
            "The last three columns come from a separate untimed pass of 2,000 acquires per "
            "limiter on a flushed server: commands include those run inside Lua scripts "
            "(INFO commandstats); µs in Redis is the script time Redis itself measured "
            "(commandstats usec); key bytes/acquire is the MEMORY USAGE of every key left "
            "divided by acquires (what a weighted limiter keeps per unit of cost shows here).",
            "",
            table,
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
