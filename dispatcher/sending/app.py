"""The Celery app factory: ``create_app()`` builds the app that ``celery -A workers worker`` runs.

Nothing happens at import or in ``create_app()`` itself: the settings are read when Celery first
needs its configuration (the ``celery`` command, after it parsed its arguments), and everything
that touches the process (the metrics directory, the kombu guard, the ticker thread, the Redis
check) happens in the worker's own start-up signals, so importing ``workers`` from a test, a
web app or a shell changes nothing.  A bad config ends the ``celery`` command with one line and
exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import click
import redis
from celery import Celery, Task, bootsteps, signals

from dispatcher.config import BROKER_VISIBILITY_S, Settings
from dispatcher.errors import ConfigError

log = logging.getLogger("dispatcher.worker")

QUEUE = "dispatcher"
DRAIN_TASK = "dispatcher.drain"


class _BadConfig(click.ClickException):
    """Ends the ``celery`` command (a click program) with the problem lines and exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class DispatcherCelery(Celery):
    """A Celery app that knows its dispatcher settings, loaded once, when first needed."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__("dispatcher", **kwargs)
        self._settings = settings
        self._runtime: Any = None
        self.add_defaults(self._celery_conf)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.load()
            except ConfigError as exc:
                raise _BadConfig(str(exc)) from None
        return self._settings

    @property
    def runtime(self) -> Any:
        """The per-process runtime (Redis, HTTP client, sender), rebuilt after a fork."""
        if self._runtime is None:
            from dispatcher.sending.runtime import Runtime

            self._runtime = Runtime(self.settings)
        return self._runtime

    def _celery_conf(self) -> dict[str, Any]:
        return {
            "broker_url": self.settings.broker_url,
            # A drain holds a plan's lease; if its worker dies the task is not needed again
            # (the schedule re-kicks the plan), but acks_late + prefetch 1 keep messages off
            # dead workers and queued drains off busy ones.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_ignore_result": True,
            "task_default_queue": QUEUE,
            "broker_connection_retry_on_startup": True,
            "broker_transport_options": {"visibility_timeout": BROKER_VISIBILITY_S},
            "worker_send_task_events": False,
            # Running drains keep going through a broker blip: they need the state Redis, not
            # the broker, and cancelling them would only leave their leases to expire.
            "worker_cancel_long_running_tasks_on_connection_loss": False,
        }


def create_app(settings: Settings | None = None) -> DispatcherCelery:
    """The worker's Celery app.  ``settings`` defaults to ``Settings.load()``, read lazily."""
    app = DispatcherCelery(settings)
    drain = _register_drain(app)
    app.steps["worker"].add(_CheckRedis)
    _Lifecycle(app, drain).connect()
    return app


def queued_drains(app: Celery) -> int:
    """Drain tasks waiting in the broker for a worker slot (Redis and AMQP brokers alike);
    raises when the broker cannot be asked."""
    with app.pool.acquire(block=True, timeout=1) as conn:
        channel = conn.default_channel  # type: ignore[attr-defined]
        ok = channel.queue_declare(queue=QUEUE, passive=True)
        return int(ok.message_count)


def _register_drain(app: DispatcherCelery) -> Task[[str], str]:
    def drains_queued() -> bool:
        """True when drain tasks wait in the broker for a worker slot (all slots are busy)."""
        try:
            return queued_drains(app) > 0
        except Exception:
            return True  # when in doubt, give the slot back

    @app.task(name=DRAIN_TASK, ignore_result=True)
    def drain(plan: str) -> str:
        """Send the plan's head batches, keeping it through short token waits (slot.py)."""
        from dispatcher.sending import slot

        sender = app.runtime.sender
        sender.others_waiting = drains_queued
        w = app.settings.worker
        return slot.run(
            sender, plan, keep_s=w.keep_s, claim_ms=int(w.claim_s * 1000), poll_s=w.tick_s
        )

    return drain


class _CheckRedis(bootsteps.StartStopStep):
    """Refuse to start on a Redis that would evict the dispatcher's keys (docs/operations.md).

    An unreachable Redis is no reason to refuse: the worker waits for it like for any outage,
    and the ticker checks again each time Redis comes back.
    """

    def start(self, worker: Any) -> None:
        from dispatcher.storage import persistence

        app = worker.app
        if not isinstance(app, DispatcherCelery):
            return
        try:
            ok = persistence.report(app.runtime.redis)
        except redis.RedisError as exc:
            why = exc.__class__.__name__
            log.warning("cannot check Redis now (%s); it is checked when Redis answers", why)
            return
        if not ok:
            raise SystemExit(2)  # the worker's own start-up: Celery stops with this exit code


class _Lifecycle:
    """The worker's start-up and shutdown, connected to Celery's signals for this app only."""

    def __init__(self, app: DispatcherCelery, drain: Task[[str], str]) -> None:
        self.app = app
        self.drain = drain
        self.ticker: Any = None

    def _ours(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    def connect(self) -> None:
        signals.worker_init.connect(self.on_init, weak=False)
        signals.worker_ready.connect(self.on_ready, weak=False)
        signals.worker_process_shutdown.connect(self.on_child_exit, weak=False)
        signals.worker_shutdown.connect(self.on_shutdown, weak=False)

    def on_init(self, sender: Any = None, **_: Any) -> None:
        if not self._ours(sender):
            return
        from dispatcher.observability import procmetrics
        from dispatcher.sending import brokerguard

        # Before prometheus-client is first imported (by the drain, in the pool children).
        procmetrics.claim_dir(create=True)
        # Without it a Redis broker restart can kill the worker for good (see brokerguard).
        brokerguard.install()

    def on_ready(self, sender: Any = None, **_: Any) -> None:
        if not self._ours(sender):
            return
        from dispatcher.observability import procmetrics
        from dispatcher.sending.health import Heartbeat, default_path
        from dispatcher.sending.scheduler import Ticker

        settings, drain = self.app.settings, self.drain

        def start(plan: str) -> None:
            drain.apply_async((plan,))

        def backlog() -> int:
            try:
                return queued_drains(self.app)
            except Exception:
                return 0  # the broker cannot be asked: claim as before, sending will tell

        w = settings.worker
        self.ticker = Ticker(
            self.app.runtime.redis,
            start,
            interval_s=w.tick_s,
            claim_max=int(w.claim_max),
            backlog=backlog,
            queue_max=int(w.queue_max),
            claim_s=w.claim_s,
            sweep_every_s=w.sweep_s,
            heartbeat=Heartbeat(default_path(), str(getattr(sender, "hostname", "") or "worker")),
        )
        self.ticker.start()
        log.info(
            "dispatcher ticker started; plans: %s", ", ".join(sorted(settings.plans)) or "none"
        )
        procmetrics.start_server()

    def on_child_exit(self, pid: int | None = None, **_: Any) -> None:
        from dispatcher.observability import procmetrics

        procmetrics.child_exited(pid)

    def on_shutdown(self, sender: Any = None, **_: Any) -> None:
        from dispatcher.observability import procmetrics

        if self.ticker is not None:
            self.ticker.stop()
            if self.ticker.heartbeat is not None:
                self.ticker.heartbeat.clear()
            self.ticker = None
        procmetrics.stop_server()
