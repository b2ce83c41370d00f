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

    def acquire(cost: int) -> bool:
        return bool(limiter.try_acquire("bench", weight=cost, blocking=False))

    return acquire


def measure(
    server: LocalRedis, name: str, make: Callable[[redis.ConnectionPool], Callable[[int], bool]],
    cost: int, seconds: float,
) -> list[Any]:  # fmt: skip
    admin = redis.Redis.from_url(server.url)
    admin.flushall()
    pool = redis.ConnectionPool.from_url(server.url, connection_class=Counting)
    acquire = make(pool)
    for _ in range(50):  # warm up: scripts loaded, connection open
        acquire(cost)
    admin.flushall()
    acquire(cost)
    before_cmds = commandstats(admin)
    before_mem = int(admin.info("memory")["used_memory"])
    Counting.round_trips = 0
    n = granted = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            granted += acquire(cost)
        n += 100
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    trips = Counting.round_trips
    after = commandstats(admin)
    mem = int(admin.info("memory")["used_memory"]) - before_mem
    cmds = sum(v - before_cmds.get(k, 0) for k, v in after.items() if k != "cmdstat_info")
    admin.close()
    pool.disconnect()
    if granted != n:
        name += f" ({n - granted} denied!)"
    return [name, cost, n / elapsed, trips / n, cmds / n, max(0, mem) / n]


ROUNDS = 3


def run(quick: bool = False) -> str:
    seconds = 1.5 if quick else 4.0
    rows: list[list[Any]] = []
    with LocalRedis() as server:
        candidates: list[tuple[str, Callable[[redis.ConnectionPool], Callable[[int], bool]]]] = [
            ("ours: bucket.lua (token bucket, Redis TIME)", ours),
            (
                "limits: moving window",
                lambda p: limits_limiter(p, server.url, "moving"),
            ),
            (
                "limits: sliding window counter",
                lambda p: limits_limiter(p, server.url, "sliding"),
            ),
            ("pyrate-limiter: RedisBucket", pyrate),
        ]
        for cost in (1, 100):
            # Rounds alternate between limiters, and the median round is kept: on a shared
            # machine a slow patch then hits every limiter alike.
            rounds: dict[str, list[list[Any]]] = {}
            for _ in range(ROUNDS):
                for name, make in candidates:
                    try:
                        row = measure(server, name, make, cost, seconds / ROUNDS)
                    except ImportError as exc:
                        row = [f"{name} (not installed: {exc.name})", cost, 0.0, 0.0, 0.0, 0.0]
                    rounds.setdefault(name, []).append(row)
            for name, _ in candidates:
                rows.append(sorted(rounds[name], key=lambda row: float(row[2]))[ROUNDS // 2])
    ours_rate = {row[1]: row[2] for row in rows if row[0].startswith("ours")}
    table = md_table(
        ["limiter", "cost", "acquires/s", "vs ours", "round trips/acquire",
         "Redis commands/acquire", "Redis bytes/acquire"],
        [[r[0], r[1], r[2], f"{r[2] / ours_rate[r[1]]:.2f}x" if ours_rate.get(r[1]) else "-",
          r[3], r[4], r[5]] for r in rows],
    )  # fmt: skip
    return "\n".join(
        [
            "## Limiter: acquires per second and Redis work per acquire",
            "",
            "One client thread, every acquire granted (limit 10,000,000/s), "
            f"{seconds:g} s per row (median of {ROUNDS} alternating rounds), each limiter on a "
            "flushed private redis-server. "
            "Commands include those run inside Lua scripts (INFO commandstats); "
            "bytes/acquire is the Redis used_memory growth divided by acquires "
            "(what a weighted limiter keeps per unit of cost shows here).",
            "",
            table,
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
