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

from celery import Celery, signals

from dispatcher import procmetrics
from dispatcher.config import Settings
from dispatcher.errors import ConfigError
from dispatcher.runtime import Runtime
from dispatcher.scheduler import Ticker

try:
    settings = Settings.load()
except ConfigError as exc:
    print(str(exc), file=sys.stderr)
    raise SystemExit(2) from None

runtime = Runtime(settings)

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

_ticker: Ticker | None = None
log = logging.getLogger("dispatcher.worker")


@signals.worker_ready.connect
def _start_ticker(**_: Any) -> None:
    """One ticker per worker host process, in the parent (it outlives pool children)."""
    global _ticker
    from workers.tasks import drain

    def start(plan: str) -> None:
        drain.apply_async((plan,))

    _ticker = Ticker(runtime.redis, start)
    _ticker.start()
    log.info("dispatcher ticker started; plans: %s", ", ".join(sorted(settings.plans)) or "none")


@signals.worker_shutdown.connect
def _stop_ticker(**_: Any) -> None:
    if _ticker is not None:
        _ticker.stop()


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
