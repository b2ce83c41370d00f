"""Celery configuration and the worker's lifecycle hooks; the work itself is in dispatcher/."""

from __future__ import annotations

import os
import tempfile

# prometheus-client picks per-process files (multiprocess mode) or plain memory when it is
# first imported, which happens below (dispatcher.runtime -> sender -> metrics): so this comes
# first.  Without an operator's directory each worker host gets a private one.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ.get(
    "PROMETHEUS_MULTIPROC_DIR"
) or tempfile.mkdtemp(prefix="dispatcher-metrics-")

import logging
import sys
from typing import Any

import redis
from celery import Celery, bootsteps, signals

from dispatcher import brokerguard, health, persistence, procmetrics
from dispatcher.config import Settings
from dispatcher.errors import ConfigError
from dispatcher.health import Heartbeat
from dispatcher.runtime import Runtime
from dispatcher.scheduler import Ticker

try:
    settings = Settings.load()
except ConfigError as exc:
    print(str(exc), file=sys.stderr)
    raise SystemExit(2) from None

log = logging.getLogger("dispatcher.worker")
runtime = Runtime(settings)
# Without it a Redis broker restart can kill the worker for good (dispatcher/brokerguard.py).
brokerguard.install()

app = Celery("dispatcher", broker=settings.broker_url, include=["workers.tasks"])
app.conf.update(
    # A drain holds a plan's lease; if its worker dies the task is not needed again (the
    # schedule re-kicks the plan), but acks_late + prefetch 1 keep messages off dead workers.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue="dispatcher",
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 120},
    worker_send_task_events=False,
)


class _CheckRedis(bootsteps.StartStopStep):
    """Refuse to start on a Redis that would evict the dispatcher's keys (docs/operations.md).

    An unreachable Redis is no reason to refuse: the worker waits for it like for any outage,
    and the ticker checks again each time Redis comes back.
    """

    def start(self, worker: Any) -> None:
        try:
            ok = persistence.report(runtime.redis)
        except redis.RedisError as exc:
            log.warning(
                "cannot check Redis now (%s); it is checked when Redis answers",
                exc.__class__.__name__,
            )
            return
        if not ok:
            raise SystemExit(2)


app.steps["worker"].add(_CheckRedis)

_ticker: Ticker | None = None


@signals.worker_ready.connect
def _start_ticker(sender: Any = None, **_: Any) -> None:
    """One ticker per worker host process, in the parent (it outlives pool children)."""
    global _ticker
    from workers.tasks import drain

    def start(plan: str) -> None:
        drain.apply_async((plan,))

    hostname = str(getattr(sender, "hostname", "") or "worker")
    w = settings.worker
    _ticker = Ticker(
        runtime.redis,
        start,
        interval_s=w.tick_s,
        claim_max=int(w.claim_max),
        claim_s=w.claim_s,
        sweep_every_s=w.sweep_s,
        heartbeat=Heartbeat(health.default_path(), hostname),
    )
    _ticker.start()
    log.info("dispatcher ticker started; plans: %s", ", ".join(sorted(settings.plans)) or "none")


@signals.worker_shutdown.connect
def _stop_ticker(**_: Any) -> None:
    if _ticker is not None:
        _ticker.stop()
        if _ticker.heartbeat is not None:
            _ticker.heartbeat.clear()


# Latency histograms: one server per worker host, in the parent (see dispatcher/procmetrics.py).
@signals.worker_init.connect
def _claim_metrics_dir(**_: Any) -> None:
    procmetrics.claim_dir()


@signals.worker_ready.connect
def _serve_worker_metrics(**_: Any) -> None:
    procmetrics.start_server()


@signals.worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    procmetrics.child_exited(pid)


@signals.worker_shutdown.connect
def _stop_worker_metrics(**_: Any) -> None:
    procmetrics.stop_server()
