"""Failure injection: which faults exist, and how a value for one is checked.

The same checks serve the Python API (``Faults.update``), the ``/_sim/faults`` control API
(values arrive as JSON) and the command line, so a fault means the same thing however it was
switched on.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from sinch_simulator.rules import normalize_msisdn


@dataclass
class Faults:
    """Failure injection, changeable while the simulator serves.

    Plain attribute assignment is atomic, so tests may set fields directly; ``update`` exists
    for changing several fields at once and for values that arrive as JSON.  The throttle
    counters are consumed under the lock so that "the next n POSTs" means exactly n.
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    illegal_numbers: set[str] = field(default_factory=set)
    plan_errors: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    throttle: dict[str, tuple[int, float]] = field(default_factory=dict)
    retry_after_http_date: bool = False
    unavailable_retry_after_s: float | None = None  # injected 503s carry this Retry-After
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def update(self, **changes: Any) -> None:
        """Set several fields at once, checking and converting them as the control API does."""
        coerced = {name: _coerce_fault(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in coerced.items():
                setattr(self, name, value)

    def clear(self) -> None:
        """Back to no faults, in place, so that every holder of this object sees it."""
        with self._lock:
            self.error_rate = 0.0
            self.error_statuses = (500, 503)
            self.drop_rate = 0.0
            self.latency_ms = 0.0
            self.illegal_numbers = set()
            self.plan_errors = {}
            self.throttle = {}
            self.retry_after_http_date = False
            self.unavailable_retry_after_s = None

    def take_throttle(self, plan_id: str) -> float | None:
        """Consume one forced 429 of a plan; its Retry-After in seconds, or None."""
        with self._lock:
            entry = self.throttle.get(plan_id)
            if entry is None:
                return None
            n, retry_after = entry
            if n <= 1:
                del self.throttle[plan_id]
            else:
                self.throttle[plan_id] = (n - 1, retry_after)
            return retry_after if n >= 1 else None

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "error_rate": self.error_rate,
                "error_statuses": list(self.error_statuses),
                "drop_rate": self.drop_rate,
                "latency_ms": self.latency_ms,
                "illegal_numbers": sorted(self.illegal_numbers),
                "plan_errors": {k: list(v) for k, v in self.plan_errors.items()},
                "throttle": {k: list(v) for k, v in self.throttle.items()},
                "retry_after_http_date": self.retry_after_http_date,
                "unavailable_retry_after_s": self.unavailable_retry_after_s,
            }


FAULT_FIELDS: Final = (
    "error_rate",
    "error_statuses",
    "drop_rate",
    "latency_ms",
    "illegal_numbers",
    "plan_errors",
    "throttle",
    "retry_after_http_date",
    "unavailable_retry_after_s",
)


def number(value: Any, name: str) -> float:
    """A finite JSON number (not a bool) as a float, or ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite")
    return f


def http_status(value: Any, name: str) -> int:
    """An int HTTP status 100-599, or ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status (100-599)")
    return value


def _coerce_fault(name: str, value: Any) -> Any:
    """Check one Faults field, accepting the JSON shapes (lists for tuples and sets)."""
    if name in ("error_rate", "drop_rate"):
        f = number(value, name)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1")
        return f
    if name == "latency_ms":
        f = number(value, name)
        if f < 0:
            raise ValueError("latency_ms must be >= 0")
        return f
    if name == "error_statuses":
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("error_statuses must be a non-empty list of HTTP statuses")
        return tuple(http_status(v, "error_statuses[]") for v in value)
    if name == "illegal_numbers":
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError("illegal_numbers must be a list of MSISDNs")
        out: set[str] = set()
        for v in value:
            norm = normalize_msisdn(v) if isinstance(v, str) else None
            if norm is None:
                raise ValueError(f"illegal_numbers: {v!r} is not an MSISDN")
            out.add(norm)
        return out
    if name == "plan_errors":
        if not isinstance(value, dict):
            raise ValueError("plan_errors must be an object of plan id -> [status, code|null]")
        errors: dict[str, tuple[int, str | None]] = {}
        for plan, entry in value.items():
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise ValueError(f"plan_errors[{plan}] must be [status, code|null]")
            code = entry[1]
            if code is not None and not isinstance(code, str):
                raise ValueError(f"plan_errors[{plan}]: code must be a string or null")
            errors[str(plan)] = (http_status(entry[0], f"plan_errors[{plan}]"), code)
        return errors
    if name == "throttle":
        if not isinstance(value, dict):
            raise ValueError("throttle must be an object of plan id -> [n, retry_after_s]")
        throttle: dict[str, tuple[int, float]] = {}
        for plan, entry in value.items():
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise ValueError(f"throttle[{plan}] must be [n, retry_after_s]")
            n, after = entry
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"throttle[{plan}]: n must be an integer >= 0")
            after_f = number(after, f"throttle[{plan}] retry_after_s")
            if after_f < 0:
                raise ValueError(f"throttle[{plan}]: retry_after_s must be >= 0")
            if n > 0:
                throttle[str(plan)] = (n, after_f)
        return throttle
    if name == "retry_after_http_date":
        if not isinstance(value, bool):
            raise ValueError("retry_after_http_date must be true or false")
        return value
    if name == "unavailable_retry_after_s":
        if value is None:
            return None
        seconds = number(value, name)
        if seconds < 0:
            raise ValueError("unavailable_retry_after_s must be >= 0 or null")
        return seconds
    raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULT_FIELDS)})")
