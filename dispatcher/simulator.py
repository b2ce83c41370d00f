"""A local stand-in for the Sinch SMS REST API ("xms" v1) batches endpoints.

The dispatcher's demo, tests and benchmarks need a provider they can run without a Sinch
account, that answers with the real API's status codes and bodies, and that *checks* what the
dispatcher promises: every POST is logged with its arrival time and answer, so a test can prove
rate envelopes, FIFO order and exactly-once delivery from the provider's side.  Faults (5xx,
dropped connections, forced 429s, blocked plans, illegal numbers, latency) can be switched on
at run time, in process or over the loopback-only ``/_sim`` control API.

Where it deliberately differs from the real API (for example, it answers 429 when a plan goes
over its rate instead of queueing) is listed in ``docs/simulator.md``.

Standard library only: ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, because the
dispatcher talks to it through pooled httpx connections.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import email.utils
import hmac
import ipaddress
import json
import math
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Protocol, cast
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "Arrival",
    "Faults",
    "PlanSpec",
    "Simulator",
    "main",
    "parse_plan",
]

# Limits of the current API (shared/sinch/API.md §1.1, §2, §3.3).
MAX_RECIPIENTS: Final = 1000
MAX_BODY_CHARS: Final = 2000
MAX_CLIENT_REFERENCE: Final = 2048
MAX_CALLBACK_URL: Final = 2048
MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 30
MAX_EXPIRY_S: Final = 3 * 24 * 3600
DEFAULT_LIST_WINDOW_S: Final = 24 * 3600
DELIVERY_REPORTS: Final = frozenset(
    {"none", "summary", "full", "per_recipient", "per_recipient_final"}
)

# A request body larger than this is answered 413 and the connection closed: 1000 recipients
# with a few parameters each stay far below it, and it bounds what a broken client can make
# the simulator buffer.
_MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
# Idle keep-alive connections are dropped after this long so that clients that vanish without
# closing don't pin a thread forever; httpx's own pool expiry (5 s) is well below it.
_IDLE_TIMEOUT_S: Final = 300.0
_MAX_HEADERS: Final = 100

_PLAN_ID_RE: Final = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
_MSISDN_IGNORED: Final = str.maketrans("", "", " \t-()[]")
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32HEX_TO_CROCKFORD: Final = str.maketrans("0123456789ABCDEFGHIJKLMNOPQRSTUV", _CROCKFORD)
_PARAM_RE: Final = re.compile(r"\$\{([^}]*)\}")

# GSM 03.38 default alphabet (ESC excluded: it cannot be sent on its own) and the extension
# table, whose characters take two septets.
_GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION: Final = frozenset("\f^{}\\[~]|€")


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass
class PlanSpec:
    """A service plan as the simulator knows it.

    ``burst`` defaults to ``rate`` but at least 1 (the project's contract), because a bucket
    smaller than one recipient could never accept any batch.
    """

    plan_id: str
    token: str = field(repr=False)
    rate: float
    burst: float | None = None

    def __post_init__(self) -> None:
        if not _PLAN_ID_RE.match(self.plan_id):
            raise ValueError(
                f"plan id {self.plan_id!r} must be 1-128 characters of letters, digits, . _ ~ -"
            )
        if not self.token:
            raise ValueError(f"plan {self.plan_id}: the token is empty")
        self.rate = float(self.rate)
        if not math.isfinite(self.rate):
            raise ValueError(f"plan {self.plan_id}: rate must be a finite number")
        if self.burst is not None:
            self.burst = float(self.burst)
            if not math.isfinite(self.burst) or self.burst <= 0:
                raise ValueError(f"plan {self.plan_id}: burst must be a number > 0")

    @property
    def effective_burst(self) -> float:
        if self.burst is not None:
            return self.burst
        return max(self.rate, 1.0)


def parse_plan(spec: str) -> PlanSpec:
    """Parse the CLI form ``ID:TOKEN:RATE`` (optionally ``:BURST``).

    Error messages name the plan id but never echo the spec, which holds the token.
    """
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(
            "plan must be ID:TOKEN:RATE[:BURST], e.g. acme:secret:30 (a token may not contain ':')"
        )
    plan_id, token, rate_s = parts[0].strip(), parts[1], parts[2].strip()
    if not plan_id:
        raise ValueError("plan must be ID:TOKEN:RATE[:BURST]: the id is empty")
    try:
        rate = float(rate_s)
    except ValueError:
        raise ValueError(f"plan {plan_id}: rate {rate_s!r} is not a number") from None
    burst: float | None = None
    if len(parts) == 4:
        try:
            burst = float(parts[3].strip())
        except ValueError:
            raise ValueError(f"plan {plan_id}: burst {parts[3]!r} is not a number") from None
    return PlanSpec(plan_id, token, rate, burst)


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


@dataclass(frozen=True)
class Arrival:
    """One POST /batches as the provider saw it: the raw material of the outside checks."""

    t: float
    plan: str
    client_reference: str | None
    to: tuple[str, ...]
    status: int
    code: str | None
    batch_id: str | None
    dropped: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "plan": self.plan,
            "client_reference": self.client_reference,
            "to": list(self.to),
            "status": self.status,
            "code": self.code,
            "batch_id": self.batch_id,
            "dropped": self.dropped,
        }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite")
    return f


def _status(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status (100-599)")
    return value


def _coerce_fault(name: str, value: Any) -> Any:
    """Check one Faults field, accepting the JSON shapes (lists for tuples and sets)."""
    if name in ("error_rate", "drop_rate"):
        f = _num(value, name)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1")
        return f
    if name == "latency_ms":
        f = _num(value, name)
        if f < 0:
            raise ValueError("latency_ms must be >= 0")
        return f
    if name == "error_statuses":
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("error_statuses must be a non-empty list of HTTP statuses")
        return tuple(_status(v, "error_statuses[]") for v in value)
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
            errors[str(plan)] = (_status(entry[0], f"plan_errors[{plan}]"), code)
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
            after_f = _num(after, f"throttle[{plan}] retry_after_s")
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
        seconds = _num(value, name)
        if seconds < 0:
            raise ValueError("unavailable_retry_after_s must be >= 0 or null")
        return seconds
    raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULT_FIELDS)})")


def normalize_msisdn(raw: str) -> str | None:
    """The API's MSISDN rule (seed 003): optional '+' or '00', spaces/dashes/brackets ignored.

    Returns the digits the API would echo back, or None when the value is not an MSISDN.
    """
    s = raw.translate(_MSISDN_IGNORED)
    if s.startswith("+"):
        s = s[1:]
    elif s.startswith("00"):
        s = s[2:]
    if 1 <= len(s) <= 15 and s.isascii() and s.isdigit():
        return s
    return None


_iso_cache: tuple[int, str] = (-1, "")


def _iso_ms(t: float) -> str:
    """UTC, millisecond precision, 'Z': the form every timestamp the API returns has."""
    global _iso_cache
    ms = int(t * 1000)
    sec = ms // 1000
    cached = _iso_cache
    if cached[0] != sec:
        cached = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
        _iso_cache = cached
    return f"{cached[1]}{ms % 1000:03d}Z"


def _parse_iso(value: str) -> float | None:
    """ISO-8601 to epoch seconds; no offset means UTC (seed 003)."""
    try:
        d = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def _new_batch_id(t: float, rng: random.Random) -> str:
    """A ULID (48-bit ms time, 80 random bits, Crockford base32) like real batch ids."""
    n = (int(t * 1000) << 80) | rng.getrandbits(80)
    # 160 bits encode to 32 base32 characters; the first 6 stand for the 30 zero bits above
    # the ULID's 130.  b32hexencode does the work in C; translate maps its alphabet to
    # Crockford's.
    return base64.b32hexencode(n.to_bytes(20, "big"))[6:].decode().translate(_B32HEX_TO_CROCKFORD)


def count_parts(text: str) -> tuple[str, int]:
    """Encoding ("GSM" or "UNICODE") and SMS part count: 160/153 septets or 70/67 units.

    Approximate on purpose: real segmentation never splits an escape sequence or a surrogate
    pair across parts, which can add a part near the boundaries.
    """
    septets = 0
    for ch in text:
        if ch in _GSM_BASIC:
            septets += 1
        elif ch in _GSM_EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return "UNICODE", 1 if units <= 70 else math.ceil(units / 67)
    return "GSM", 1 if septets <= 160 else math.ceil(septets / 153)


_date_cache: tuple[int, str] = (0, "")


def _http_date_now() -> str:
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, email.utils.formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(slots=True)
class _Reply:
    """What to answer; the HTTP layer turns it into bytes (or a dropped connection)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    code: str | None = None
    batch_id: str | None = None
    drop: bool = False
    close: bool = False
    delay: float = 0.0


def _error(status: int, code: str | None = None, text: str | None = None) -> _Reply:
    """Error bodies exist only where the API documents a code (400, 403, and our 429)."""
    if code is None:
        return _Reply(status)
    body = _json_bytes({"code": code, "text": text or HTTPStatus(status).phrase})
    return _Reply(status, body, code=code)


def _ok(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status, _json_bytes(obj))


class _BadRequest(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _invalid_json(text: str) -> _BadRequest:
    return _BadRequest("syntax_invalid_json", text)


def _constraint(text: str) -> _BadRequest:
    return _BadRequest("syntax_constraint_violation", text)


def _bad_format(text: str) -> _BadRequest:
    return _BadRequest("syntax_invalid_parameter_format", text)


@dataclass(slots=True)
class _SendRequest:
    to: list[str]  # normalized digits
    doc: dict[str, Any]  # the batch object minus id and timestamps
    body: str
    parameters: dict[str, dict[str, str]] | None


def _validate_send(payload: dict[str, Any], now: float) -> _SendRequest:
    """Check a send (or dry run) body in the order a client would fix its mistakes."""
    if "to" not in payload or payload["to"] is None:
        raise _constraint("to: required field is missing")
    to_raw = payload["to"]
    if not isinstance(to_raw, list):
        raise _invalid_json("to: expected an array of strings")
    if not 1 <= len(to_raw) <= MAX_RECIPIENTS:
        raise _constraint(f"to: must have 1 to {MAX_RECIPIENTS} items, got {len(to_raw)}")
    if "body" not in payload or payload["body"] is None:
        raise _constraint("body: required field is missing")
    body = payload["body"]
    if not isinstance(body, str):
        raise _invalid_json("body: expected a string")
    if len(body) > MAX_BODY_CHARS:
        raise _constraint(f"body: must be at most {MAX_BODY_CHARS} characters, got {len(body)}")
    mtype = payload.get("type")
    if mtype is not None and mtype != "mt_text":
        raise _constraint(f"type: {mtype!r} is not supported here (only mt_text)")

    to: list[str] = []
    for i, item in enumerate(to_raw):
        if not isinstance(item, str):
            raise _invalid_json(f"to[{i}]: expected a string")
        norm = normalize_msisdn(item)
        if norm is None:
            raise _bad_format(f"to[{i}]: invalid MSISDN format: {item!r}")
        to.append(norm)

    doc: dict[str, Any] = {}
    sender = payload.get("from")
    if sender is not None:
        if not isinstance(sender, str):
            raise _invalid_json("from: expected a string")
        doc["from"] = sender
    doc["to"] = to
    doc["body"] = body
    doc["type"] = "mt_text"
    doc["canceled"] = False

    report = payload.get("delivery_report")
    if report is None:
        report = "none"
    if not isinstance(report, str):
        raise _invalid_json("delivery_report: expected a string")
    if report not in DELIVERY_REPORTS:
        raise _constraint(
            f"delivery_report: {report!r} is not one of {', '.join(sorted(DELIVERY_REPORTS))}"
        )
    doc["delivery_report"] = report

    cref = payload.get("client_reference")
    if cref is not None:
        if not isinstance(cref, str):
            raise _invalid_json("client_reference: expected a string")
        if len(cref) > MAX_CLIENT_REFERENCE:
            raise _constraint(f"client_reference: must be at most {MAX_CLIENT_REFERENCE} chars")
        doc["client_reference"] = cref

    callback = payload.get("callback_url")
    if callback is not None:
        if not isinstance(callback, str):
            raise _invalid_json("callback_url: expected a string")
        if len(callback) > MAX_CALLBACK_URL:
            raise _constraint(f"callback_url: must be at most {MAX_CALLBACK_URL} chars")
        doc["callback_url"] = callback

    send_at = now
    for name in ("send_at", "expire_at"):
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _invalid_json(f"{name}: expected an ISO-8601 string")
        parsed = _parse_iso(value)
        if parsed is None:
            raise _constraint(f"{name}: {value!r} is not an ISO-8601 date-time")
        doc[name] = _iso_ms(parsed)
        if name == "send_at":
            send_at = max(parsed, now)
        else:
            if parsed <= now:
                raise _constraint("expire_at: the message is set to expire in the past")
            if parsed <= send_at:
                raise _constraint("expire_at: must be after send_at")
            if parsed > send_at + MAX_EXPIRY_S:
                raise _constraint("expire_at: must be at most 3 days after send_at")

    for name in ("flash_message", "feedback_enabled", "truncate_concat"):
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise _invalid_json(f"{name}: expected true or false")
        doc[name] = value
    doc.setdefault("flash_message", False)

    for name, low, high in (
        ("max_number_of_message_parts", 1, None),
        ("from_ton", 0, 6),
        ("from_npi", 0, 18),
    ):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_json(f"{name}: expected an integer")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"{low}-{high}"
            raise _constraint(f"{name}: must be {bounds}")
        doc[name] = value

    params = payload.get("parameters")
    parameters: dict[str, dict[str, str]] | None = None
    if params is not None:
        if not isinstance(params, dict):
            raise _bad_format("parameters: expected an object of parameter name -> object")
        for key, mapping in params.items():
            if not isinstance(mapping, dict):
                raise _bad_format(f"parameters.{key}: expected an object of MSISDN -> string")
            for who, value in mapping.items():
                if not isinstance(value, str):
                    raise _bad_format(f"parameters.{key}.{who}: expected a string")
        parameters = cast(dict[str, dict[str, str]], params)
        doc["parameters"] = parameters
    return _SendRequest(to=to, doc=doc, body=body, parameters=parameters)


def _parameter_lookup(
    parameters: dict[str, dict[str, str]] | None,
) -> dict[str, dict[str, str]]:
    """Parameter values keyed by normalized MSISDN, as the API matches '+46...' to '46...'."""
    return {
        key: {(normalize_msisdn(k) or k): v for k, v in mapping.items()}
        for key, mapping in (parameters or {}).items()
    }


def _render(body: str, lookup: dict[str, dict[str, str]], msisdn: str) -> str:
    """The body one recipient gets; an unmapped parameter stays as written (the real API aborts
    that recipient with code 405, which a dry run cannot show)."""
    if not lookup:
        return body

    def sub(m: re.Match[str]) -> str:
        mapping = lookup.get(m.group(1))
        if mapping is None:
            return m.group(0)
        return mapping.get(msisdn, mapping.get("default", m.group(0)))

    return _PARAM_RE.sub(sub, body)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class _Bucket:
    """Recipient-weighted token bucket; starts full.

    Capacity is burst plus ``tolerance * rate``: the envelope the project promises is checked
    at the provider with 250 ms of network and scheduling jitter allowed, so the simulator must
    not turn that jitter into 429s.
    """

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, spec: PlanSpec, tolerance_s: float, now: float) -> None:
        self.rate = spec.rate
        self.capacity = spec.effective_burst + max(tolerance_s, 0.0) * max(spec.rate, 0.0)
        self.tokens = self.capacity
        self.last = now

    def take(self, n: int, now: float) -> float | None:
        """None when the n recipients fit (and are taken), else seconds until they would.

        A batch larger than the capacity never fits; the wait returned is then the time to a
        full bucket, so a client that honours Retry-After backs off instead of hammering.
        """
        if self.rate <= 0:
            return None
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if n <= self.tokens + 1e-9:
            self.tokens -= n
            return None
        need = min(float(n), self.capacity) - self.tokens
        return max(need, 0.0) / self.rate


@dataclass(slots=True)
class _Batch:
    id: str
    plan: str
    created_ms: int
    sender: str | None
    client_reference: str | None
    doc: dict[str, Any]


class _Plan:
    __slots__ = ("batches", "bucket", "by_id", "by_ref", "spec", "stats")

    def __init__(self, spec: PlanSpec, bucket: _Bucket) -> None:
        self.spec = spec
        self.bucket = bucket
        self.batches: list[_Batch] = []
        self.by_id: dict[str, _Batch] = {}
        self.by_ref: dict[str, list[_Batch]] = {}
        self.stats: Counter[str] = Counter()


_BASE_STATS: Final = (
    "requests",
    "recipients_received",
    "201",
    "429",
    "batches_accepted",
    "recipients_accepted",
    "dropped",
    "lookups",
)


class _Headers(Protocol):
    def get(self, name: str, default: None = None) -> str | None: ...


class _FastHeaders:
    """Request headers by lower-cased name (repeated headers joined with ', ')."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, str]) -> None:
        self._d = d

    def get(self, name: str, default: None = None) -> str | None:
        return self._d.get(name.lower(), default)


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class Simulator:
    """A Sinch-like batches API on a local port, with an arrival log and fault injection."""

    def __init__(
        self,
        plans: Iterable[PlanSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        rate_tolerance_s: float = 0.25,
        keep_log: bool = True,
        seed: int | None = None,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        self.rate_tolerance_s = rate_tolerance_s
        self._host = host
        self._port = port
        self._keep_log = keep_log
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._plans: dict[str, _Plan] = {}
        self._log: list[tuple[Arrival, tuple[str, ...] | None]] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._foreground = False
        for spec in plans:
            if spec.plan_id in self._plans:
                raise ValueError(f"plan {spec.plan_id} is given twice")
            self._plans[spec.plan_id] = self._new_plan(spec)

    def _new_plan(self, spec: PlanSpec) -> _Plan:
        return _Plan(spec, _Bucket(spec, self.rate_tolerance_s, time.monotonic()))

    # ---- lifecycle ---------------------------------------------------------------------

    def _bind(self) -> _Server:
        if self._httpd is None:
            self._httpd = _Server((self._host, self._port), self)
            # Remember the port so that stop() and start() again come back on the same URL,
            # which is how a test simulates a provider outage.
            self._port = self._httpd.server_address[1]
        return self._httpd

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the simulator is not started")
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    def start(self) -> Simulator:
        """Serve from a daemon thread; returns at once, bound and ready for requests."""
        if self._thread is not None:
            return self
        if self._foreground:
            raise RuntimeError("serve_forever() is already serving this simulator")
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sinch-simulator:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open keep-alive connection.

        Cutting them matters: a pooled client would otherwise keep talking to a "stopped"
        provider through its old connections.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        if self._foreground:
            # serve_forever() runs on another thread and cleans up when its loop returns.
            httpd.shutdown()
            return
        if thread is not None:
            httpd.shutdown()
            thread.join()
        httpd.close_connections()
        httpd.server_close()
        self._httpd = None
        self._thread = None

    def serve_forever(self, on_ready: Callable[[Simulator], None] | None = None) -> None:
        """Serve in the foreground until Ctrl-C (or SIGTERM when on the main thread).

        ``on_ready`` runs once the port is bound, so a CLI can print the real port.
        """
        httpd = self._bind()
        self._foreground = True
        if on_ready is not None:
            on_ready(self)
        previous: Any = None
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            httpd.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, previous)
            httpd.close_connections()
            httpd.server_close()
            self._httpd = None
            self._foreground = False

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def describe(self) -> str:
        """One line for humans: where it listens, which plans; never a token."""
        plans = ", ".join(
            f"{p.spec.plan_id} ({_rate_text(p.spec)}, token ****)" for p in self._plans.values()
        )
        where = self.url if self._httpd is not None else f"{self._host}:{self._port}"
        line = f"Sinch SMS simulator listening on {where} - plans: {plans or 'none'}"
        defaults = Faults().to_json()
        active = {k: v for k, v in self.faults.to_json().items() if v != defaults[k]}
        if active:
            line += " - faults: " + " ".join(f"{k}={v}" for k, v in active.items())
        return line

    # ---- plans -------------------------------------------------------------------------

    def add_plan(self, spec: PlanSpec) -> None:
        """Add or replace a plan; a replaced plan keeps its batches and stats, gets a new bucket."""
        with self._lock:
            old = self._plans.get(spec.plan_id)
            new = self._new_plan(spec)
            if old is not None:
                new.batches, new.by_id, new.by_ref, new.stats = (
                    old.batches,
                    old.by_id,
                    old.by_ref,
                    old.stats,
                )
            self._plans[spec.plan_id] = new

    def set_token(self, plan_id: str, token: str) -> None:
        """Rotate a token without touching the plan's limiter (a 401 test in mid-run)."""
        with self._lock:
            plan = self._plans.get(plan_id)
            if plan is None:
                raise KeyError(plan_id)
            # A new spec rather than a mutation: the caller's PlanSpec object stays as it was.
            plan.spec = dataclasses.replace(plan.spec, token=token)

    def plans(self) -> list[PlanSpec]:
        with self._lock:
            return [p.spec for p in self._plans.values()]

    # ---- observations ------------------------------------------------------------------

    def _require_log(self) -> None:
        if not self._keep_log:
            raise RuntimeError("this simulator was started with keep_log=False")

    def arrivals(self, plan: str | None = None) -> list[Arrival]:
        self._require_log()
        with self._lock:
            return [a for a, _ in self._log if plan is None or a.plan == plan]

    def accepted_recipients(self, plan: str | None = None) -> list[str]:
        self._require_log()
        with self._lock:
            return [
                r
                for a, norm in self._log
                if norm is not None and (plan is None or a.plan == plan)
                for r in norm
            ]

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for plan_id, plan in self._plans.items():
                d = dict.fromkeys(_BASE_STATS, 0)
                d.update(plan.stats)
                out[plan_id] = d
            return out

    def reset(self) -> None:
        """Forget everything but the plans: log, batches, stats, faults, limiter state."""
        with self._lock:
            self._log.clear()
            for plan_id, plan in list(self._plans.items()):
                self._plans[plan_id] = self._new_plan(plan.spec)
        self.faults.clear()

    # ---- request handling --------------------------------------------------------------

    def _dispatch(
        self, method: str, target: str, headers: _Headers, body: bytes, client_ip: str
    ) -> _Reply:
        split = urlsplit(target)
        segs = split.path.split("/")
        if len(segs) >= 2 and segs[0] == "" and segs[1] == "_sim":
            if not _is_loopback(client_ip):
                return _Reply(403)
            return self._control(method, segs[2:], split.query, headers, body)
        if len(segs) < 5 or segs[0] != "" or segs[1] != "xms" or segs[2] != "v1":
            return _Reply(404)
        plan_id = unquote(segs[3])
        rest = segs[4:]
        with self._lock:
            plan = self._plans.get(plan_id)
        token_ok = plan is not None and _bearer_matches(
            headers.get("Authorization"), plan.spec.token
        )
        if plan is not None and method == "POST" and rest == ["batches"]:
            return self._send(plan, headers, body, token_ok)
        if plan is None or not token_ok:
            return _unauthorized()
        forced = self.faults.plan_errors.get(plan_id)
        if forced is not None:
            return self._unavailable(
                _error(forced[0], forced[1], f"forced by the simulator for plan {plan_id}")
            )
        if rest == ["batches"]:
            if method == "GET":
                return self._list(plan, split.query)
            return _not_allowed("GET, POST")
        if len(rest) == 2 and rest[0] == "batches" and rest[1] == "dry_run":
            if method == "POST":
                return self._dry_run(headers, body, split.query)
            return _not_allowed("POST")
        if len(rest) == 2 and rest[0] == "batches" and rest[1]:
            batch_id = unquote(rest[1])
            if method == "GET":
                return self._get(plan, batch_id)
            if method == "DELETE":
                return self._cancel(plan, batch_id)
            return _not_allowed("GET, DELETE")
        return _Reply(404)

    def _send(self, plan: _Plan, headers: _Headers, body: bytes, token_ok: bool) -> _Reply:
        plan_id = plan.spec.plan_id
        payload: Any = None
        parse_error: str | None = None
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            parse_error = f"invalid JSON: {exc}"
        if parse_error is None and not isinstance(payload, dict):
            parse_error = "the request body must be a JSON object"
            payload = None
        # What was sent, for the log, even when the request is then refused.
        to_sent: tuple[str, ...] = ()
        cref: str | None = None
        if isinstance(payload, dict):
            raw_to = payload.get("to")
            if isinstance(raw_to, list):
                to_sent = tuple(x if isinstance(x, str) else json.dumps(x) for x in raw_to)
            raw_ref = payload.get("client_reference")
            cref = raw_ref if isinstance(raw_ref, str) else None

        reply: _Reply | None = None
        request: _SendRequest | None = None
        forced = self.faults.plan_errors.get(plan_id)
        if not token_ok:
            reply = _unauthorized()
        elif forced is not None:
            reply = self._unavailable(
                _error(forced[0], forced[1], f"forced by the simulator for plan {plan_id}")
            )
        elif not _is_json(headers.get("Content-Type")):
            reply = _Reply(415)
        elif parse_error is not None:
            reply = _error(400, "syntax_invalid_json", parse_error)
        else:
            try:
                request = _validate_send(cast(dict[str, Any], payload), time.time())
            except _BadRequest as exc:
                reply = _error(400, exc.code, exc.text)

        accepted: tuple[str, ...] | None = None
        with self._lock:
            # Arrival time, limiter time and log order are all taken under one lock, so that
            # the log's order is the order decisions were made in and its times never go back.
            t = time.time()
            if reply is None:
                assert request is not None
                reply = self._decide(plan, request, t, time.monotonic())
                if reply.batch_id is not None:
                    accepted = tuple(request.to)
            stats = plan.stats
            stats["requests"] += 1
            stats["recipients_received"] += len(to_sent)
            key = str(reply.status)
            if reply.code is not None and reply.status in (400, 403):
                key += ":" + reply.code
            stats[key] += 1
            if accepted is not None:
                stats["batches_accepted"] += 1
                stats["recipients_accepted"] += len(accepted)
                if reply.drop:
                    stats["dropped"] += 1
            if self._keep_log:
                self._log.append(
                    (
                        Arrival(
                            t=t,
                            plan=plan_id,
                            client_reference=cref,
                            to=to_sent,
                            status=reply.status,
                            code=reply.code,
                            batch_id=reply.batch_id,
                            dropped=reply.drop,
                        ),
                        accepted,
                    )
                )
        latency = self.faults.latency_ms
        if latency > 0:
            reply.delay = latency / 1000.0 * self._rng.uniform(0.5, 1.5)
        return reply

    def _decide(self, plan: _Plan, request: _SendRequest, t: float, mono: float) -> _Reply:
        """Faults in their documented order, then the limiter, then creation (lock held)."""
        faults = self.faults
        plan_id = plan.spec.plan_id
        forced_after = faults.take_throttle(plan_id)
        if forced_after is not None:
            return self._too_many(forced_after, t, f"plan {plan_id} is throttled by the simulator")
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            status = self._rng.choice(faults.error_statuses)
            if status == 429:
                return self._too_many(1.0, t, "injected error")
            return self._unavailable(_Reply(status))
        n = len(request.to)
        wait = plan.bucket.take(n, mono)
        if wait is not None:
            spec = plan.spec
            if n > plan.bucket.capacity:
                text = (
                    f"a batch of {n} recipients can never fit plan {plan_id}'s bucket of "
                    f"{plan.bucket.capacity:g} ({_rate_text(spec)})"
                )
            else:
                text = f"plan {plan_id} is over its rate ({_rate_text(spec)}); {n} recipients"
            return self._too_many(max(1.0, wait), t, text)
        if faults.illegal_numbers:
            # Normalized here too, so that a test may add "+46..." to the set directly.
            illegal = {normalize_msisdn(x) or x for x in faults.illegal_numbers}
            for msisdn in request.to:
                if msisdn in illegal:
                    return _error(
                        403,
                        "illegal_number_type",
                        f"Illegal phone number type of MSISDN {msisdn} for the chosen region",
                    )
        return self._create(plan, request, t)

    def _unavailable(self, reply: _Reply) -> _Reply:
        """A 503 says when to come back, if the test asked for that."""
        after = self.faults.unavailable_retry_after_s
        if reply.status == 503 and after is not None:
            reply.headers = (*reply.headers, ("Retry-After", str(math.ceil(after))))
        return reply

    def _too_many(self, after_s: float, t: float, text: str) -> _Reply:
        seconds = max(0, math.ceil(after_s))
        if self.faults.retry_after_http_date:
            value = email.utils.formatdate(math.ceil(t) + seconds, usegmt=True)
        else:
            value = str(seconds)
        reply = _error(429, "too_many_requests", text)
        reply.headers = (("Retry-After", value),)
        return reply

    def _create(self, plan: _Plan, request: _SendRequest, t: float) -> _Reply:
        batch_id = _new_batch_id(t, self._rng)
        stamp = _iso_ms(t)
        doc: dict[str, Any] = {"id": batch_id, **request.doc}
        doc["created_at"] = stamp
        doc["modified_at"] = stamp
        sender = doc.get("from")
        cref = doc.get("client_reference")
        batch = _Batch(
            id=batch_id,
            plan=plan.spec.plan_id,
            created_ms=int(t * 1000),
            sender=sender,
            client_reference=cref,
            doc=doc,
        )
        plan.batches.append(batch)
        plan.by_id[batch_id] = batch
        if cref is not None:
            plan.by_ref.setdefault(cref, []).append(batch)
        drop = self.faults.drop_rate > 0 and self._rng.random() < self.faults.drop_rate
        if drop:
            return _Reply(201, batch_id=batch_id, drop=True)
        reply = _ok(doc, 201)
        reply.batch_id = batch_id
        return reply

    def _list(self, plan: _Plan, query: str) -> _Reply:
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            page = int(params.get("page", "0"))
            page_size = int(params.get("page_size", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            return _error(400, "syntax_invalid_parameter_format", "page, page_size: integers")
        if page < 0:
            return _error(400, "syntax_constraint_violation", "page: must be >= 0")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            return _error(
                400, "syntax_constraint_violation", f"page_size: must be 1-{MAX_PAGE_SIZE}"
            )
        now = time.time()
        start_ms = int((now - DEFAULT_LIST_WINDOW_S) * 1000)
        end_ms: int | None = None
        for name in ("start_date", "end_date"):
            if name in params:
                parsed = _parse_iso(params[name])
                if parsed is None:
                    return _error(
                        400,
                        "syntax_invalid_parameter_format",
                        f"{name}: {params[name]!r} is not an ISO-8601 date-time",
                    )
                if name == "start_date":
                    start_ms = math.ceil(parsed * 1000)
                else:
                    end_ms = math.ceil(parsed * 1000)
        senders: set[str] | None = None
        if "from" in params:
            senders = {s.strip() for s in params["from"].split(",") if s.strip()}
        cref = params.get("client_reference")
        with self._lock:
            plan.stats["lookups"] += 1
            candidates = plan.by_ref.get(cref, []) if cref is not None else plan.batches
            matched = [
                b
                for b in reversed(candidates)
                if b.created_ms >= start_ms
                and (end_ms is None or b.created_ms < end_ms)
                and (senders is None or b.sender in senders)
            ]
            chosen = matched[page * page_size : (page + 1) * page_size]
            return _ok(
                {
                    "count": len(matched),
                    "page": page,
                    "page_size": len(chosen),
                    "batches": [b.doc for b in chosen],
                }
            )

    def _get(self, plan: _Plan, batch_id: str) -> _Reply:
        with self._lock:
            batch = plan.by_id.get(batch_id)
            return _Reply(404) if batch is None else _ok(batch.doc)

    def _cancel(self, plan: _Plan, batch_id: str) -> _Reply:
        with self._lock:
            batch = plan.by_id.get(batch_id)
            if batch is None:
                return _Reply(404)
            batch.doc["canceled"] = True
            batch.doc["modified_at"] = _iso_ms(time.time())
            return _ok(batch.doc)

    def _dry_run(self, headers: _Headers, body: bytes, query: str) -> _Reply:
        if not _is_json(headers.get("Content-Type")):
            return _Reply(415)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, "syntax_invalid_json", f"invalid JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(400, "syntax_invalid_json", "the request body must be a JSON object")
        try:
            request = _validate_send(payload, time.time())
        except _BadRequest as exc:
            return _error(400, exc.code, exc.text)
        params = dict(parse_qsl(query, keep_blank_values=True))
        per_recipient = params.get("per_recipient", "false").lower() == "true"
        try:
            detail = int(params.get("number_of_recipients", "100"))
        except ValueError:
            return _error(400, "syntax_invalid_parameter_format", "number_of_recipients: int")
        if not 0 <= detail <= MAX_RECIPIENTS:
            return _error(
                400, "syntax_constraint_violation", "number_of_recipients: must be 0-1000"
            )
        total = 0
        details: list[dict[str, Any]] = []
        lookup = _parameter_lookup(request.parameters)
        for msisdn in request.to:
            text = _render(request.body, lookup, msisdn)
            encoding, parts = count_parts(text)
            total += parts
            if per_recipient and len(details) < detail:
                details.append(
                    {
                        "recipient": msisdn,
                        "number_of_parts": parts,
                        "body": text,
                        "encoding": encoding,
                    }
                )
        result: dict[str, Any] = {
            "number_of_recipients": len(request.to),
            "number_of_messages": total,
        }
        if per_recipient:
            result["per_recipient"] = details
        return _ok(result)

    # ---- control API -------------------------------------------------------------------

    def _control(
        self, method: str, segs: list[str], query: str, headers: _Headers, body: bytes
    ) -> _Reply:
        route = "/".join(segs)
        params = dict(parse_qsl(query, keep_blank_values=True))
        plan = params.get("plan") or None
        routes: dict[str, tuple[str, ...]] = {
            "arrivals": ("GET",),
            "accepted": ("GET",),
            "stats": ("GET",),
            "faults": ("GET", "POST"),
            "reset": ("POST",),
            "plans": ("GET", "POST"),
        }
        if route not in routes:
            return _Reply(404)
        if method not in routes[route]:
            return _not_allowed(", ".join(routes[route]))
        if route == "arrivals":
            if not self._keep_log:
                return _error(409, "log_disabled", "started with keep_log=False")
            return _ok([a.to_json() for a in self.arrivals(plan)])
        if route == "accepted":
            if not self._keep_log:
                return _error(409, "log_disabled", "started with keep_log=False")
            return _ok(self.accepted_recipients(plan))
        if route == "stats":
            return _ok(self.stats())
        if route == "reset":
            self.reset()
            return _ok({"reset": True})
        if method == "GET":
            if route == "faults":
                return _ok(self.faults.to_json())
            return _ok([_plan_json(p) for p in self.plans()])
        payload: Any
        try:
            payload = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, "syntax_invalid_json", f"invalid JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(400, "syntax_invalid_json", "expected a JSON object")
        if route == "faults":
            try:
                self.faults.update(**payload)
            except ValueError as exc:
                return _error(400, "syntax_constraint_violation", str(exc))
            return _ok(self.faults.to_json())
        try:
            spec = PlanSpec(
                plan_id=str(payload.get("plan_id", "")),
                token=str(payload.get("token") or ""),
                rate=_num(payload.get("rate"), "rate"),
                burst=None if payload.get("burst") is None else _num(payload["burst"], "burst"),
            )
        except ValueError as exc:
            return _error(400, "syntax_constraint_violation", str(exc))
        self.add_plan(spec)
        return _ok(_plan_json(spec))


def _plan_json(spec: PlanSpec) -> dict[str, Any]:
    return {"plan_id": spec.plan_id, "rate": spec.rate, "burst": spec.effective_burst}


def _rate_text(spec: PlanSpec) -> str:
    if spec.rate <= 0:
        return "no rate limit"
    return f"{spec.rate:g}/s, burst {spec.effective_burst:g}"


def _bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def _is_json(content_type: str | None) -> bool:
    """application/json, with no charset or a UTF-8 one: what the API documents accepting."""
    if not content_type:
        return False
    media, _, rest = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in rest.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def _unauthorized() -> _Reply:
    # No body: the seeds document none for 401; the header is what RFC 6750 asks for.
    return _Reply(401, headers=(("WWW-Authenticate", 'Bearer realm="xms"'),))


def _not_allowed(allow: str) -> _Reply:
    return _Reply(405, headers=(("Allow", allow),))


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall for
        # seconds on a machine without working DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is normal under load and in drop tests.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sinch-sms-simulator"
    disable_nagle_algorithm = True
    timeout = _IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a line per request on stderr would cost more than answering it."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    _fast_headers: _FastHeaders = _FastHeaders({})

    def parse_request(self) -> bool:
        """Request line and headers, without the email package the base class uses.

        Header parsing with ``http.client.parse_headers`` is the largest single cost of a small
        request; a plain loop is several times faster and is all this API needs.  Anything but
        an ordinary HTTP/1.0 or 1.1 request line goes to the base class, which answers it.
        """
        self.command = None  # type: ignore[assignment]  # the base class does the same
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        raw: bytes = getattr(self, "raw_requestline", b"")  # set by handle_one_request
        requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            if not super().parse_request():
                return False
            self._fast_headers = _FastHeaders({k.lower(): v for k, v in self.headers.items()})
            return True
        command, path, version = words
        self.command, self.request_version = command, version
        # As the base class does (gh-87389): '//x' must not read as a network path.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(65537)
            if len(line) > 65536:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("iso-8859-1").partition(":")
            if not sep:
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self._fast_headers = _FastHeaders(headers)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self.close_connection = version == "HTTP/1.0"
        if "close" in tokens:
            self.close_connection = True
        elif "keep-alive" in tokens:
            self.close_connection = False
        expect = headers.get("expect", "").lower()
        return not (
            expect == "100-continue" and version == "HTTP/1.1" and not self.handle_expect_100()
        )

    def _serve(self, method: str) -> None:
        body, problem = self._read_body()
        if problem is not None:
            # The stream position is unknown after a bad length, so the connection must go.
            self.close_connection = True
            self._write(problem, head_only=False)
            return
        sim = cast(_Server, self.server).sim
        try:
            reply = sim._dispatch(
                method, self.path, self._fast_headers, body, str(self.client_address[0])
            )
        except Exception:
            traceback.print_exc()
            reply = _Reply(500)
        if reply.delay > 0:
            time.sleep(reply.delay)
        if reply.drop:
            # Close without a byte of answer: the client cannot tell whether the batch exists.
            self.close_connection = True
            return
        if reply.close:
            self.close_connection = True
        self._write(reply, head_only=method == "HEAD")

    def _read_body(self) -> tuple[bytes, _Reply | None]:
        encoding = (self._fast_headers.get("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            data = self._read_chunked()
            if data is None:
                return b"", _error(400, "syntax_invalid_json", "malformed chunked body")
            return data, None
        length_s = self._fast_headers.get("content-length")
        if length_s is None:
            return b"", None
        try:
            length = int(length_s)
        except ValueError:
            length = -1
        if length < 0:
            return b"", _Reply(400)
        if length > _MAX_REQUEST_BYTES:
            return b"", _Reply(413)
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            return b"", _Reply(400)
        return data, None

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                break
            total += size
            if total > _MAX_REQUEST_BYTES:
                return None
            data = self.rfile.read(size)
            if len(data) < size:
                return None
            chunks.append(data)
            self.rfile.readline(1024)
        while True:  # trailers
            line = self.rfile.readline(1024)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(chunks)

    def _write(self, reply: _Reply, *, head_only: bool) -> None:
        """Status line, headers and body in one write: one packet for a small answer."""
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = ""
        head = [
            f"HTTP/1.1 {reply.status} {phrase}\r\n"
            f"Date: {_http_date_now()}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
        ]
        if reply.body:
            head.append("Content-Type: application/json\r\n")
        for name, value in reply.headers:
            head.append(f"{name}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if not head_only:
            data += reply.body
        self.wfile.write(data)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _plan_arg(value: str) -> PlanSpec:
    try:
        return parse_plan(value)
    except ValueError as exc:
        # ArgumentTypeError's message replaces argparse's default, which would echo the value
        # and with it the token.
        raise argparse.ArgumentTypeError(str(exc)) from None


def _plan_error_arg(value: str) -> tuple[str, tuple[int, str | None]]:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError("--plan-error must be ID:STATUS[:CODE]")
    try:
        status = _status(int(parts[1]), "STATUS")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--plan-error {parts[0]}: {exc}") from None
    return parts[0], (status, parts[2] if len(parts) == 3 and parts[2] else None)


def _throttle_arg(value: str) -> tuple[str, tuple[int, float]]:
    parts = value.split(":")
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError("--throttle must be ID:N:RETRY_AFTER_SECONDS")
    try:
        n, after = int(parts[1]), float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError("--throttle must be ID:N:RETRY_AFTER_SECONDS") from None
    if n < 0 or not after >= 0:
        raise argparse.ArgumentTypeError("--throttle: N and RETRY_AFTER_SECONDS must be >= 0")
    return parts[0], (n, after)


def _fraction_arg(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return f


def _statuses_arg(value: str) -> tuple[int, ...]:
    try:
        return tuple(_status(int(v), "status") for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--error-statuses: {exc}") from None


def _msisdn_arg(value: str) -> str:
    norm = normalize_msisdn(value)
    if norm is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an MSISDN")
    return norm


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dispatcher.simulator",
        description="A local Sinch-like SMS REST API (batches endpoints) for demos and tests.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8085, help="port (default 8085; 0 = any free)")
    p.add_argument(
        "--plan",
        action="append",
        type=_plan_arg,
        required=True,
        metavar="ID:TOKEN:RATE[:BURST]",
        help="a service plan; RATE is recipients/s (<= 0: no 429s); repeatable",
    )
    p.add_argument(
        "--rate-tolerance",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="extra bucket credit, in seconds of rate (default 0.25)",
    )
    p.add_argument(
        "--error-rate",
        type=_fraction_arg,
        default=0.0,
        metavar="P",
        help="fraction of sends answered with a 5xx (batch not created)",
    )
    p.add_argument(
        "--error-statuses",
        type=_statuses_arg,
        default=(500, 503),
        metavar="S,S",
        help="statuses --error-rate picks from (default 500,503)",
    )
    p.add_argument(
        "--drop-rate",
        type=_fraction_arg,
        default=0.0,
        metavar="P",
        help="fraction of sends created but answered by closing the connection",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="mean added latency per send (uniform 0.5x-1.5x)",
    )
    p.add_argument(
        "--illegal",
        type=_msisdn_arg,
        nargs="+",
        action="extend",
        default=[],
        metavar="MSISDN",
        help="numbers answered 403 illegal_number_type",
    )
    p.add_argument(
        "--plan-error",
        type=_plan_error_arg,
        action="append",
        default=[],
        metavar="ID:STATUS[:CODE]",
        help="force STATUS on every request of a plan",
    )
    p.add_argument(
        "--throttle",
        type=_throttle_arg,
        action="append",
        default=[],
        metavar="ID:N:SECONDS",
        help="answer the next N sends of a plan with 429",
    )
    p.add_argument(
        "--retry-after-date",
        action="store_true",
        help="send Retry-After as an HTTP date instead of seconds",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the fault dice")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the simulator in the foreground; 2 on bad arguments, 1 when it cannot listen."""
    parser = build_arg_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    faults = Faults(
        error_rate=args.error_rate,
        error_statuses=args.error_statuses,
        drop_rate=args.drop_rate,
        latency_ms=max(args.latency_ms, 0.0),
        illegal_numbers=set(args.illegal),
        plan_errors=dict(args.plan_error),
        throttle=dict(args.throttle),
        retry_after_http_date=args.retry_after_date,
    )
    try:
        sim = Simulator(
            args.plan,
            host=args.host,
            port=args.port,
            faults=faults,
            rate_tolerance_s=args.rate_tolerance,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    try:
        sim.serve_forever(on_ready=lambda s: print(s.describe(), flush=True))
    except OSError as exc:
        print(
            f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
