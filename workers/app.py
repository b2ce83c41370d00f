"""Celery configuration and the worker's lifecycle hooks; the work itself is in dispatcher/."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, signals

from dispatcher.config import ConfigError, Settings
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
