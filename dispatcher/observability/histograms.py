"""Per-process latency histograms (prometheus-client).

Under Celery's prefork pool every child process observes into its own files in
``PROMETHEUS_MULTIPROC_DIR`` (multiprocess mode), and one server per host aggregates them; a
metrics server started inside each child would let only one of them bind the port and lose
the rest without a word.  The deployment-wide counters and gauges are not here: they live in
Redis and are served by ``dispatcher metrics`` (see ``exporter.py``).
"""

from __future__ import annotations

from prometheus_client import Histogram

REQUEST_DURATION = Histogram(
    "dispatcher_request_duration_seconds",
    "Time for one POST of a batch to the provider, by plan.",
    ["plan"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TOKEN_WAIT = Histogram(
    "dispatcher_token_wait_seconds",
    "Wait imposed by the plan's token bucket before a batch may go, by plan.",
    ["plan"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
