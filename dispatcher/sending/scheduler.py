"""The ticker: starts drains of plans whose time has come, inside the worker command.

No beat process (CONTRACT.md guarantee 5): every worker host runs one ticker thread that claims
due plans from the ``due`` schedule (atomically, so each due plan is claimed by one host) and
sends a drain task for each.  A plan waiting for tokens or a cool-down therefore holds no
worker slot and no countdown task (which the Redis broker would deliver twice past its
visibility timeout, PEERS.md 2).

The ticker only tops the broker queue up to ``queue_max`` waiting drains: the schedule (due
order) is the queue, not the broker (claim order).  So a claim is never minutes old when its
task runs, and slots that keep a plan through a short wait (``slot.py``) find the plans due
next in the schedule, in due order, to serve meanwhile.  A slow sweep re-kicks any plan with a
non-empty lane that somehow has neither a lease nor a due time, so nothing queued can be
forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from dispatcher.config import WorkerConfig
from dispatcher.sending.health import Heartbeat
from dispatcher.storage import keys, persistence
from dispatcher.storage.base import as_text
from dispatcher.storage.scripts import for_client

log = logging.getLogger("dispatcher.sending.scheduler")


class Ticker(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        start_drain: Callable[[str], None],
        *,
        interval_s: float = WorkerConfig.tick_s,
        claim_max: int = WorkerConfig.claim_max,
        claim_s: float = WorkerConfig.claim_s,
        sweep_every_s: float = WorkerConfig.sweep_s,
        heartbeat: Heartbeat | None = None,
        backlog: Callable[[], int] | None = None,
        queue_max: int = WorkerConfig.queue_max,
    ) -> None:
        """``backlog`` tells how many drain tasks wait in the broker; without it the ticker
        claims whatever is due (tests that run drains themselves)."""
        super().__init__(name="dispatcher-ticker", daemon=True)
        self.r = client
        self.start_drain = start_drain
        self.interval_s = interval_s
        self.claim_max = claim_max
        self.claim_ms = int(claim_s * 1000)
        self.sweep_every_s = sweep_every_s
        self.heartbeat = heartbeat
        self.backlog = backlog
        self.queue_max = queue_max
        self._more = False  # the last tick claimed all it could: more may be due
        self._stop = threading.Event()
        self._scripts = for_client(client)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        last_sweep = 0.0
        down_since: float | None = None
        while not self._stop.is_set():
            if self.heartbeat is not None:
                self.heartbeat.beat(redis_up=down_since is None)
            try:
                self.tick()
                if time.monotonic() - last_sweep > self.sweep_every_s:
                    self.sweep()
                    last_sweep = time.monotonic()
                if down_since is not None:
                    log.warning(
                        "Redis is reachable again after %.0f s", time.monotonic() - down_since
                    )
                    down_since = None
                    persistence.report(self.r)  # a restarted Redis may have another config
            except redis.RedisError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.error(
                        "cannot reach Redis (%s); queued campaigns are kept and resume when it "
                        "is back", exc.__class__.__name__,
                    )  # fmt: skip
                self._stop.wait(1.0)
                continue
            except Exception:
                log.exception("ticker: failed to start drains; retrying")
                self._stop.wait(1.0)
                continue
            if not self._more:
                self._stop.wait(self.interval_s)

    def room(self) -> int:
        """How many drains this tick may start: claim_max, less what the broker is full by."""
        if self.backlog is None:
            return self.claim_max
        return max(0, min(self.claim_max, self.queue_max - self.backlog()))

    def tick(self) -> list[str]:
        n = self.room()
        plans = self._scripts.claim(n, self.claim_ms) if n else []
        for plan in plans:
            self.start_drain(plan)
        self._more = bool(n) and len(plans) == n
        return plans

    def sweep(self) -> int:
        plans = [as_text(p) for p in self.r.smembers(keys.PLANS)]
        if not plans:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for p in plans:
            pipe.llen(keys.lane(p))
            pipe.exists(keys.lease(p))
            pipe.zscore(keys.DUE, p)
        out = pipe.execute()
        kicked = 0
        for i, p in enumerate(plans):
            llen, leased, due = out[3 * i : 3 * i + 3]
            if llen and not leased and due is None:
                self.r.zadd(keys.DUE, {p: 0}, lt=True)
                kicked += 1
        if kicked:
            log.warning("sweep: %d plan(s) had queued batches and no schedule; restarted", kicked)
        return kicked
