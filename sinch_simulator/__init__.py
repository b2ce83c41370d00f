"""A local stand-in for the Sinch SMS REST API ("xms" v1) batches endpoints.

The dispatcher's demo, tests and benchmarks need a provider they can run without a Sinch
account, that answers with the real API's status codes and bodies, and that *checks* what the
dispatcher promises: every POST is logged with its arrival time and answer, so a test can prove
rate envelopes, FIFO order and exactly-once delivery from the provider's side.  Faults (5xx,
dropped connections, forced 429s, blocked plans, illegal numbers, latency) can be switched on
at run time, in process or over the loopback-only ``/_sim`` control API.

It is a package of its own, not part of ``dispatcher``, and imports nothing from it: the
provider's rules are re-derived from the provider documents in ``rules.py``, so a test that
checks the dispatcher against the simulator cannot pass because both share one mistake.  Where
it deliberately differs from the real API (for example, it answers 429 when a plan goes over
its rate instead of queueing) is listed in ``docs/simulator.md``.

Modules, one job each:

- ``rules``: the provider's rules (MSISDNs, GSM-7 parts, limits, timestamps, batch ids)
- ``model``: :class:`PlanSpec`, :func:`parse_plan`, :class:`Arrival`
- ``faults``: :class:`Faults` and the checks of a fault's value
- ``validate``: checks of a send or dry-run request body
- ``bucket``: the per-plan, recipient-weighted rate limiter
- ``state``: plans, batches, stats and the arrival log, under one lock
- ``batches``: the ``/xms/v1/{plan}/batches`` endpoints
- ``control``: the ``/_sim`` control API
- ``wire``: replies, error bodies and header checks shared by the endpoints
- ``server``: the HTTP layer (HTTP/1.1 keep-alive on ``ThreadingHTTPServer``) and routing
- ``simulator``: :class:`Simulator`, which owns the state and serves it
- ``cli``: the one command line (``python -m sinch_simulator``, ``dispatcher simulator``)

Standard library only.
"""

from sinch_simulator.faults import Faults
from sinch_simulator.model import Arrival, PlanSpec, parse_plan
from sinch_simulator.reporter import ReportSettings
from sinch_simulator.rules import count_parts, normalize_msisdn
from sinch_simulator.simulator import Simulator

__all__ = [
    "Arrival",
    "Faults",
    "PlanSpec",
    "ReportSettings",
    "Simulator",
    "count_parts",
    "normalize_msisdn",
    "parse_plan",
]
