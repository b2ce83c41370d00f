"""``dispatcher metrics``: the deployment-wide Prometheus endpoint, read from Redis per scrape.

The outcome counters are incremented by the same Lua scripts that commit each outcome
(commit.lua, hold.lua), so they are exact across every worker process and host and survive
restarts of all of them; this exporter holds no state (beyond the previous scrape's text of
each plan, reused while the plan's fields are unchanged) and only translates the per-plan stats
and state hashes into metric families at scrape time.  Any number of exporters may run, on any
host, and all serve the same numbers.

Labels are bounded by construction: the plan id (validated by the config), the outcome, the
provider's HTTP status or a transport error word, and the provider's error code (capped in
length and character set, since it comes from a remote body).  Nothing per recipient, per
campaign or per batch, and never a token.

When Redis cannot be read, the scrape still succeeds with ``dispatcher_redis_up 0`` and the
configured limits only: a 500 would make Prometheus drop every series at once, and serving
zeros for the counters would read as a counter reset.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dispatcher.config import Settings, redacted_url
from dispatcher.errors import StorageError
from dispatcher.models import DELIVERY_STATUSES
from dispatcher.observability.textformat import PREFIX, Family, header, lines, listen, text
from dispatcher.storage.connect import connect
from dispatcher.storage.fields import (
    SNAPSHOT_HEAD_AGE_MS,
    SNAPSHOT_PAUSED_CAMPAIGNS,
    SNAPSHOT_STATE_PREFIX,
    State,
    Stats,
)
from dispatcher.storage.store import Store

log = logging.getLogger("dispatcher.observability.exporter")

# Provider codes come from a remote body; a misbehaving provider must not be able to mint
# unbounded label values (a code is normally a short snake_case word).
_CODE_OK = re.compile(r"[^A-Za-z0-9_.\-]")
_CODE_MAX = 64

# Plain per-plan counters in the stats hash: field -> (metric name, help).
_COUNTERS: Mapping[str, tuple[str, str]] = {
    Stats.SENT: (
        "recipients_sent",
        "Recipients in batches the provider accepted (201), or found by a lookup after an "
        "ambiguous failure.",
    ),
    Stats.ENQUEUED: ("recipients_enqueued", "Valid recipients put into the plan's lane."),
    Stats.RETRIES: (
        "retries",
        "Attempts that failed with a retryable error (5xx, no answer) and will be resent.",
    ),
    Stats.RATE_WAITS: (
        "rate_waits",
        "Answers 429: the whole plan backed off and lowered its effective rate.",
    ),
    Stats.CIRCUIT_OPENED: (
        "circuit_opened",
        "Times the plan's circuit opened (401, blocked account, wrong URL ...).",
    ),
    Stats.REPLAYED: (
        "dead_letter_replayed_recipients",
        "Recipients put back into the lane from the DLQ by `dispatcher dlq replay`.",
    ),
    Stats.PURGED: (
        "dead_letter_purged_recipients",
        "Recipients removed from the DLQ by `dispatcher dlq purge`.",
    ),
    Stats.CANCELED: (
        "canceled_recipients",
        "Recipients of canceled campaigns that were never posted (`dispatcher campaigns cancel`).",
    ),
    Stats.SUPPRESSED: (
        "suppressed_recipients",
        "Recipients dropped at enqueue because they opted out (STOP, `dispatcher suppress`).",
    ),
    Stats.EXPIRED: (
        "expired_recipients",
        "Recipients not posted by their campaign's expire_at, so never posted.",
    ),
}


# Counted before a body is read, so under the type "unknown" (see callbacks/app.py).
_CALLBACK_REFUSALS = {("unknown", "unauthorized"), ("unknown", "invalid")}


def _int(value: str | None) -> int:
    """A stats field as a number; a hand-edited or half-written field reads as 0."""
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            return 0


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _code(code: str) -> str:
    return _CODE_OK.sub("_", code)[:_CODE_MAX]


def _status(status: str) -> str:
    """HTTP status or transport error word; "none" when the script recorded no answer."""
    return _code(status) or "none"


class DeploymentCollector(Collector):
    """Reads every plan's stats and state from Redis at each scrape (a few round trips)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        *,
        store_factory: Callable[[redis.Redis], Store] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or connect(
            settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=3,
            health_check_interval=30,
        )
        self.store = (store_factory or Store)(self.client)
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._text_cache: dict[str, tuple[Mapping[str, str], list[str]]] = {}

    def describe(self) -> Iterable[Metric]:
        # Metric names depend on what Redis holds; returning nothing tells the registry not to
        # call collect() at registration time (which would touch Redis before serving).
        return []

    def snapshot(self) -> dict[str, dict[str, str]] | None:
        """Every plan's fields, or None when Redis cannot be read (logged once per outage)."""
        try:
            plans = sorted(set(self.store.known_plans()) | set(self.settings.plans))
            snap = self.store.plan_snapshot(plans)
        except StorageError as exc:
            what = (exc.__cause__ or exc).__class__.__name__
            with self._lock:
                if self._last_error != what:
                    log.warning(
                        "cannot read Redis at %s (%s); serving dispatcher_redis_up 0",
                        redacted_url(self.settings.redis_url),
                        what,
                    )
                self._last_error = what
            return None
        with self._lock:
            if self._last_error is not None:
                log.info("Redis at %s readable again", redacted_url(self.settings.redis_url))
            self._last_error = None
        return snap

    def collect(self) -> Iterator[Metric]:
        """The families for prometheus-client's registry (tests, and any caller that wants a
        Collector); ``serve`` writes the same families with ``render``, which skips the
        client's per-sample objects and checks."""
        for fam in self.families():
            cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            metric = cls(PREFIX + fam.name, fam.doc, labels=list(fam.labels))
            for values, value in fam.samples:
                metric.add_metric(list(values), value)
            yield metric

    def render(self) -> bytes:
        """One scrape in the Prometheus text format (0.0.4), the same series ``collect`` gives.

        At 10,000 plans a scrape is ~360,000 samples; building a prometheus-client sample
        object per series and validating each label name made it 3.4-4.6 s against a 2 s
        budget (docs/benchmarks.md, "Cost per plan"), so the lines are written here directly.
        Most plans are idle between two scrapes, so each plan's lines are kept with the fields
        they were made from and reused while Redis returns the same fields: a scrape then
        costs the Redis read and one dict comparison per idle plan.  Label names are this
        module's own constants; label values are escaped as the format asks.
        """
        snap = self.snapshot()
        if snap is None:
            return text(self._assemble(None))
        up, *meta = self._assemble({})
        cache, fresh = self._text_cache, {}
        per_plan: list[list[str]] = []
        for plan_id, fields in sorted(snap.items()):
            hit = cache.get(plan_id)
            if hit is None or hit[0] != fields:
                fams = self._assemble({plan_id: fields})[1:]
                hit = (fields, [lines(f) for f in fams])
            fresh[plan_id] = hit
            per_plan.append(hit[1])
        self._text_cache = fresh  # plans gone from Redis and the config drop out
        up.samples.append(((), 1.0))
        out = [text([up]).decode()]
        for i, fam in enumerate(meta):
            out.append(header(fam))
            out.extend(texts[i] for texts in per_plan)
        return "".join(out).encode()

    def families(self) -> list[Family]:
        """This scrape's families: Redis read once (``snapshot``), then pure translation."""
        return self._assemble(self.snapshot())

    def _assemble(self, snap: Mapping[str, Mapping[str, str]] | None) -> list[Family]:
        """``redis_up`` (without its sample when ``snap`` is not None and empty: ``render``
        adds it), the limits and the Redis-derived families of the plans in ``snap``; None:
        Redis could not be read."""
        up = Family(
            "redis_up",
            "gauge",
            "1 when this exporter could read Redis for this scrape, else 0 (and the Redis-derived "
            "series are absent from this scrape).",
            (),
        )
        if snap is None or snap:
            up.samples.append(((), 1.0 if snap is not None else 0.0))
        configured = self.settings.plans if snap is None else snap.keys() & self.settings.plans
        fams = [up, *self._limits(snap or {}, sorted(configured))]
        if snap is not None:
            fams += list(self._families(snap))
        return fams

    def _limits(
        self, snap: Mapping[str, Mapping[str, str]], plans: Iterable[str]
    ) -> Iterator[Family]:
        """The limits in force: a runtime `plans set` (read from Redis) wins over the file."""
        rate = Family(
            "rate_limit_per_second",
            "gauge",
            "Rate of the plan in force, in recipients per second, for the whole deployment: "
            "the config file's, or a runtime `dispatcher plans set`.",
            labels=("plan",),
        )
        burst = Family(
            "rate_limit_burst",
            "gauge",
            "Burst of the plan in force (token bucket size), in recipients.",
            labels=("plan",),
        )
        runtime = Family(
            "rate_limit_runtime",
            "gauge",
            "1 while a runtime `dispatcher plans set` overrides the plan's config file limits.",
            labels=("plan",),
        )
        for plan_id in plans:
            cfg = self.settings.plans[plan_id]
            fields = snap.get(plan_id, {})
            rt_rate = _float(fields.get(SNAPSHOT_STATE_PREFIX + State.RATE))
            rt_burst = _float(fields.get(SNAPSHOT_STATE_PREFIX + State.BURST))
            rate.add_metric([plan_id], rt_rate if rt_rate is not None else cfg.rate)
            burst.add_metric([plan_id], rt_burst if rt_burst is not None else cfg.burst)
            if snap:
                overridden = any(SNAPSHOT_STATE_PREFIX + f in fields for f in State.RUNTIME_FIELDS)
                runtime.add_metric([plan_id], 1.0 if overridden else 0.0)
        yield rate
        yield burst
        yield runtime

    def _families(self, snap: Mapping[str, Mapping[str, str]]) -> Iterator[Family]:
        counters = {
            field: Family(name, "counter", doc, labels=("plan",))
            for field, (name, doc) in _COUNTERS.items()
        }
        batches = Family(
            "batches",
            "counter",
            "Batches that left the lane, by outcome: accepted by the provider or dead-lettered.",
            labels=("plan", "outcome"),
        )
        responses = Family(
            "provider_responses",
            "counter",
            "Answers to POST /batches, by HTTP status (or transport error: timeout, dropped, "
            "connect) and provider code.",
            labels=("plan", "status", "code"),
        )
        dead = Family(
            "dead_lettered_recipients",
            "counter",
            "Recipients put into the dead-letter queue, by the provider's code.",
            labels=("plan", "code"),
        )
        lookups = Family(
            "lookups",
            "counter",
            "Lookups by client_reference after an ambiguous failure: found at the provider "
            "(not resent) or missing (sent again).",
            labels=("plan", "result"),
        )
        delivery = Family(
            "delivery_reports",
            "counter",
            "Recipients by their final status in Sinch's delivery reports, each recipient once.",
            labels=("plan", "status"),
        )
        callbacks = Family(
            "callbacks",
            "counter",
            "Callbacks received, by type and result (ok, orphaned, ignored, invalid, "
            "unauthorized).",
            labels=("plan", "type", "result"),
        )
        queue = Family(
            "queue_recipients",
            "gauge",
            "Recipients waiting in the plan's lane (including the batch in flight).",
            labels=("plan",),
        )
        age = Family(
            "queue_oldest_age_seconds",
            "gauge",
            "Age of the batch at the head of the lane (0 when the lane is empty), by Redis time.",
            labels=("plan",),
        )
        dlq = Family(
            "dead_letter_recipients",
            "gauge",
            "Recipients currently in the dead-letter queue (not yet replayed or purged).",
            labels=("plan",),
        )
        eff = Family(
            "effective_rate_per_second",
            "gauge",
            "Rate the plan's token bucket refills at now: the configured rate, or less while it "
            "recovers from 429s.  Not zeroed by an open circuit: see dispatcher_circuit_open.",
            labels=("plan",),
        )
        circuit = Family(
            "circuit_open",
            "gauge",
            "1 while the plan's circuit is open (sending stopped, queue kept, probing), else 0.",
            labels=("plan",),
        )
        plan_paused = Family(
            "plan_paused",
            "gauge",
            "1 while the plan is paused (`dispatcher plans pause`), else 0.",
            labels=("plan",),
        )
        campaigns_paused = Family(
            "campaigns_paused",
            "gauge",
            "Campaigns of the plan paused now (`dispatcher campaigns pause`, or halted by their "
            "own failures).",
            labels=("plan",),
        )
        for plan_id, fields in sorted(snap.items()):
            for field, family in counters.items():
                family.add_metric([plan_id], _int(fields.get(field)))
            batches.add_metric([plan_id, "accepted"], _int(fields.get(Stats.BATCHES_ACCEPTED)))
            batches.add_metric(
                [plan_id, "dead_lettered"], _int(fields.get(Stats.BATCHES_DEAD_LETTERED))
            )
            lookups.add_metric([plan_id, "found"], _int(fields.get(Stats.LOOKUPS_FOUND)))
            lookups.add_metric([plan_id, "missing"], _int(fields.get(Stats.LOOKUPS_MISSING)))
            lookups.add_metric([plan_id, "failed"], _int(fields.get(Stats.LOOKUPS_FAILED)))
            reported: dict[str, int] = {}
            received: dict[tuple[str, str], int] = {}
            by_response: dict[tuple[str, str], int] = {}
            by_code: dict[str, int] = {}
            for key, value in fields.items():
                if key.startswith(Stats.RESP_PREFIX):
                    status, _, code = key[len(Stats.RESP_PREFIX) :].partition(":")
                    k = (_status(status), _code(code))
                    by_response[k] = by_response.get(k, 0) + _int(value)
                elif key.startswith(Stats.DLQ_PREFIX):
                    c = _code(key[len(Stats.DLQ_PREFIX) :])
                    by_code[c] = by_code.get(c, 0) + _int(value)
                elif key.startswith(Stats.DELIVERY_PREFIX):
                    reported[key[len(Stats.DELIVERY_PREFIX) :]] = _int(value)
                elif key.startswith(Stats.CALLBACK_PREFIX):
                    kind, _, result = key[len(Stats.CALLBACK_PREFIX) :].partition(":")
                    received[(kind, result)] = _int(value)
            # Every final status and both refusals from the start: a rate or a ratio over them
            # is 0, not "no data", before the first report (and an alert can see it change).
            for status in DELIVERY_STATUSES:
                delivery.add_metric([plan_id, status], reported.get(status, 0))
            for kind, result in sorted(received.keys() | _CALLBACK_REFUSALS):
                callbacks.add_metric([plan_id, kind, result], received.get((kind, result), 0))
            for (status, code), n in sorted(by_response.items()):
                responses.add_metric([plan_id, status, code], n)
            for code, n in sorted(by_code.items()):
                dead.add_metric([plan_id, code], n)

            pending = _int(fields.get(Stats.PENDING))
            queue.add_metric([plan_id], max(0, pending))
            head_ms = _float(fields.get(SNAPSHOT_HEAD_AGE_MS))
            if head_ms is not None:
                age.add_metric([plan_id], head_ms / 1000)
            elif pending <= 0:
                age.add_metric([plan_id], 0.0)
            # else: a head whose enqueue time is unknown; no sample beats a wrong one.
            dlq.add_metric([plan_id], max(0, _int(fields.get(Stats.DLQ_PENDING))))

            cfg = self.settings.plans.get(plan_id)
            lowered = _float(fields.get(SNAPSHOT_STATE_PREFIX + State.EFF_RATE))
            in_force = _float(fields.get(SNAPSHOT_STATE_PREFIX + State.RATE))
            if in_force is None and cfg is not None:
                in_force = cfg.rate
            if in_force is not None:
                eff.add_metric([plan_id], min(lowered, in_force) if lowered else in_force)
            elif lowered is not None:
                eff.add_metric([plan_id], lowered)
            paused = SNAPSHOT_STATE_PREFIX + State.PAUSED in fields
            plan_paused.add_metric([plan_id], 1.0 if paused else 0.0)
            campaigns_paused.add_metric([plan_id], _int(fields.get(SNAPSHOT_PAUSED_CAMPAIGNS)))
            circuit.add_metric(
                [plan_id],
                1.0
                if fields.get(SNAPSHOT_STATE_PREFIX + State.CIRCUIT) == State.CIRCUIT_OPEN
                else 0.0,
            )

        yield from counters.values()
        yield batches
        yield responses
        yield dead
        yield lookups
        yield delivery
        yield callbacks
        yield queue
        yield age
        yield dlq
        yield eff
        yield circuit
        yield plan_paused
        yield campaigns_paused


def registry_for(settings: Settings, client: redis.Redis | None = None) -> CollectorRegistry:
    """A registry with only the deployment collector: no process or platform metrics of the
    exporter itself, so that every exporter of a deployment serves the same series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(settings, client))
    return registry


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Serve ``/metrics`` in the foreground until Ctrl-C or SIGTERM."""
    collector = DeploymentCollector(settings)
    try:
        httpd = listen(host, port, collector)
    except OSError as exc:
        raise SystemExit(
            f"dispatcher: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    print(
        f"dispatcher metrics: serving http://{host}:{httpd.server_port}/metrics "
        f"(Redis {redacted_url(settings.redis_url)}, {len(settings.plans)} configured plans)",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.is_set() and thread.is_alive():
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        httpd.shutdown()
        httpd.server_close()
