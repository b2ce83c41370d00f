"""Settings: one TOML file plus the environment, checked once at start.

A worker that starts with a bad plan would fail on the first batch at 3 a.m.; so every problem
is found at load time and reported as one line per problem naming the file and the key.  Tokens
are never in the file: a plan names the environment variable that holds its token, and the
token is wrapped in :class:`Secret` so that no repr, log line or exception can show it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dispatcher.errors import ConfigError
from dispatcher.sinch.limits import MAX_BATCH_RECIPIENTS

DEFAULT_CONFIG_PATH = "config/dispatch.toml"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_METRICS_PORT = 9808
MAX_BATCH = MAX_BATCH_RECIPIENTS

REGIONS: Mapping[str, str] = {
    "us": "https://us.sms.api.sinch.com",
    "eu": "https://eu.sms.api.sinch.com",
    "au": "https://au.sms.api.sinch.com",
    "br": "https://br.sms.api.sinch.com",
    "ca": "https://ca.sms.api.sinch.com",
    "gb": "https://gb.sms.api.sinch.com",
}


class Secret:
    """A token that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class PlanConfig:
    """One Sinch service plan: where to send, with which token, how fast."""

    id: str
    base_url: str
    token_env: str
    rate: float
    burst: float
    batch_size: int
    token: Secret | None = field(default=None, compare=False)
    # Delivery reports and opt-outs (CONTRACT.md): the batch's `delivery_report` mode, where
    # opt-outs apply, and when a failing campaign pauses itself (ratio None: never).
    delivery_report: str = "none"
    suppression: str = "plan"
    halt_failure_ratio: float | None = None
    halt_min_reports: int = 200
    # Batches of the plan POSTed at once (the window, docs/architecture.md): 1 keeps strict
    # lane order at the provider; more hides provider latency behind concurrent requests.
    max_in_flight: int = 1
    # With max_in_flight = 1: take the next batch while the POST before it is in flight, so
    # the Redis round trip overlaps the POST (its POST still waits for that one's answer).
    # False: the round trip waits between two POSTs (sending/overlap.py says what it costs).
    prefetch_take: bool = True

    @property
    def batches_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/xms/v1/{self.id}/batches"


@dataclass(frozen=True)
class WorkerConfig:
    """Every knob that governs the worker's guarantees, with the invariants between them.

    The ``[worker]`` table of the config file sets them; the defaults are the tested ones, and
    an operator rarely needs another.  Each invariant is checked at load, so a worker never
    starts with a lease that can expire in the middle of a POST.
    """

    # The drain (sending.drain): one sender per plan under a fenced lease.
    lease_ttl_s: float = 15.0  # renewed by every take; > http_timeout_s + COMMIT_MARGIN_S
    slice_s: float = 2.0  # a drain gives its worker slot back after this long
    inline_wait_s: float = 0.25  # shorter waits are slept in the task ...
    lead_s: float = 0.1  # ... longer ones are scheduled this much early, then slept
    sleep_budget_s: float = 0.25  # a drain sleeps at most this long in all, then gives back
    # A drain whose plan waits less than slice_s for tokens keeps the lease and the slot
    # (serving other due plans meanwhile) for at most this long, then passes its turn on.
    keep_s: float = 10.0
    # The ticker (sending.scheduler): starts due drains in every worker host.
    tick_s: float = 0.05
    claim_max: int = 50  # due plans claimed per tick
    queue_max: int = 50  # ... while fewer drain tasks than this wait in the broker
    claim_s: float = 20.0  # a claimed plan comes due again after this, should its drain be lost
    sweep_s: float = 10.0  # how often lanes without a schedule are looked for
    # The provider client and Redis.
    http_timeout_s: float = 10.0
    http_connect_timeout_s: float = 3.0
    redis_socket_timeout_s: float = 10.0
    # Backoff (sending.policy): failures and rate waits are counted apart (PEERS.md 4).
    max_attempts: int = 8  # failures (5xx, no answer) before the batch is dead-lettered
    max_failure_age_s: float = 600.0  # ... or this long after its first attempt
    retry_base_s: float = 0.5
    retry_cap_s: float = 30.0
    rate_wait_base_s: float = 1.0  # 429 without Retry-After
    rate_wait_cap_s: float = 60.0
    max_rate_wait_age_s: float = 6 * 3600.0  # a batch throttled this long goes to the DLQ
    circuit_base_s: float = 30.0  # first probe after the circuit opens
    circuit_cap_s: float = 600.0

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for every broken invariant; empty when all hold."""
        found: list[tuple[str, str]] = []
        for name, value in vars(self).items():
            if not _is_number(value) or value <= 0:
                found.append((name, "must be a number > 0"))
        if found:
            return found
        if self.lease_ttl_s < self.http_timeout_s + COMMIT_MARGIN_S:
            found.append(
                (
                    "lease_ttl_s",
                    f"must be >= http_timeout_s + {COMMIT_MARGIN_S:g} s (a POST and its commit "
                    f"must fit in the lease): {self.lease_ttl_s:g} < {self.http_timeout_s:g} "
                    f"+ {COMMIT_MARGIN_S:g}",
                )
            )
        if self.slice_s >= self.lease_ttl_s:
            found.append(("slice_s", "must be < lease_ttl_s"))
        if self.sleep_budget_s > self.slice_s:
            found.append(("sleep_budget_s", "must be <= slice_s"))
        if self.keep_s + self.slice_s >= BROKER_VISIBILITY_S / 2:
            # A task that runs past the broker's visibility timeout is delivered again.
            found.append(
                ("keep_s", f"keep_s + slice_s must be < {BROKER_VISIBILITY_S / 2:g} s "
                 f"(half the broker's visibility timeout)")
            )  # fmt: skip
        if self.lead_s >= self.inline_wait_s:
            found.append(("lead_s", "must be < inline_wait_s"))
        if self.http_connect_timeout_s > self.http_timeout_s:
            found.append(("http_connect_timeout_s", "must be <= http_timeout_s"))
        if self.redis_socket_timeout_s >= self.lease_ttl_s:
            found.append(("redis_socket_timeout_s", "must be < lease_ttl_s"))
        for base, cap in (
            ("retry_base_s", "retry_cap_s"),
            ("rate_wait_base_s", "rate_wait_cap_s"),
            ("circuit_base_s", "circuit_cap_s"),
        ):
            if getattr(self, base) > getattr(self, cap):
                found.append((base, f"must be <= {cap}"))
        found += [
            (k, "must be a whole number") for k in ("max_attempts", "claim_max", "queue_max")
            if not _is_int(getattr(self, k))
        ]  # fmt: skip
        return found


BROKER_VISIBILITY_S = 120.0
"""The Redis broker's visibility timeout (sending/app.py): a drain task must end well within it."""

COMMIT_MARGIN_S = 2.0
"""What a commit after the POST may take, inside the lease (the fenced commit is one script)."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = DEFAULT_REDIS_URL
    metrics_port: int = DEFAULT_METRICS_PORT
    retention_days: float = 7.0
    plans: Mapping[str, PlanConfig] = field(default_factory=dict)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    source: str = "<defaults>"
    callback_base_url: str | None = None  # the receiver's public address
    callback_secret: Secret | None = field(default=None, compare=False)  # DISPATCH_CALLBACK_SECRET

    def __repr__(self) -> str:
        """The URLs without their passwords: a Settings in a log line or a traceback's locals
        must not show them (guarantee 6)."""
        return (
            f"Settings(redis_url={redacted_url(self.redis_url)!r}, "
            f"broker_url={redacted_url(self.broker_url)!r}, metrics_port={self.metrics_port}, "
            f"retention_days={self.retention_days}, plans={dict(self.plans)!r}, "
            f"worker={self.worker!r}, source={self.source!r})"
        )

    def plan(self, plan_id: str) -> PlanConfig:
        try:
            return self.plans[plan_id]
        except KeyError:
            known = ", ".join(sorted(self.plans)) or "none configured"
            raise ConfigError(
                [f"unknown plan {plan_id!r} (known plans: {known}; see {self.source})"]
            ) from None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        require_tokens: bool = True,
    ) -> Settings:
        """Read ``path`` (default ``$DISPATCH_CONFIG`` or config/dispatch.toml) and the env.

        ``require_tokens=False`` is for processes that only enqueue or read status: they never
        talk to the provider, so a missing token is not their problem.
        """
        env = os.environ if env is None else env
        file = Path(path or env.get("DISPATCH_CONFIG") or DEFAULT_CONFIG_PATH)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{file}: config file not found (set DISPATCH_CONFIG)"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{file}: cannot read: {exc.__class__.__name__}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
        return cls.from_mapping(data, env=env, source=str(file), require_tokens=require_tokens)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        source: str = "<config>",
        require_tokens: bool = True,
    ) -> Settings:
        env = os.environ if env is None else env
        problems: list[str] = []

        def bad(key: str, what: str) -> None:
            problems.append(f"{source}: {key}: {what}")

        known_top = {
            "redis_url", "broker_url", "metrics_port", "retention_days", "plans", "worker",
            "callback_base_url",
        }  # fmt: skip
        for key in data:
            if key not in known_top:
                bad(key, f"unknown key (expected one of: {', '.join(sorted(known_top))})")

        redis_url = env.get("DISPATCH_REDIS_URL") or data.get("redis_url", DEFAULT_REDIS_URL)
        if not isinstance(redis_url, str) or not redis_url.startswith(_STATE_SCHEMES):
            bad(
                "redis_url",
                "must be a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL",
            )
            redis_url = DEFAULT_REDIS_URL
        explicit_broker = env.get("DISPATCH_BROKER_URL") or data.get("broker_url")
        if redis_url.startswith(_CLUSTER_SCHEMES) and not explicit_broker:
            # Celery cannot use a Redis Cluster as its broker (celery #2852).
            bad(
                "broker_url",
                "required when redis_url is a Redis Cluster: Celery's broker cannot be a cluster; "
                "set broker_url (or DISPATCH_BROKER_URL) to a plain Redis or amqp:// URL",
            )
        broker_url = explicit_broker or redis_url
        if not isinstance(broker_url, str) or "://" not in broker_url:
            bad("broker_url", "must be a broker URL such as redis://host:6379/0")
            broker_url = redis_url
        metrics_port = data.get("metrics_port", DEFAULT_METRICS_PORT)
        if not _is_int(metrics_port) or not 0 < metrics_port < 65536:
            bad("metrics_port", "must be a port number between 1 and 65535")
            metrics_port = DEFAULT_METRICS_PORT
        retention = data.get("retention_days", 7)
        if not _is_number(retention) or retention <= 0:
            bad("retention_days", "must be a number of days > 0")
            retention = 7

        callback_base = data.get("callback_base_url")
        if callback_base is not None and (
            not isinstance(callback_base, str)
            or not callback_base.startswith(("http://", "https://"))
        ):
            bad("callback_base_url", "must be an http:// or https:// URL")
            callback_base = None
        secret_value = env.get(CALLBACK_SECRET_ENV)
        if callback_base and not secret_value:
            bad(
                "callback_base_url",
                f"needs the environment variable {CALLBACK_SECRET_ENV} (the callback URLs' secret)",
            )
        plans: dict[str, PlanConfig] = {}
        raw_plans = data.get("plans", {})
        if not isinstance(raw_plans, Mapping):
            bad("plans", "must be a table of [plans.<service_plan_id>] sections")
            raw_plans = {}
        for plan_id, raw in raw_plans.items():
            plan = _load_plan(str(plan_id), raw, env, bad, require_tokens, bool(callback_base))
            if plan is not None:
                plans[plan.id] = plan
        worker = _load_worker(data.get("worker", {}), bad)
        if problems:
            raise ConfigError(problems)
        return cls(
            redis_url=redis_url,
            broker_url=broker_url,
            metrics_port=int(metrics_port),
            retention_days=float(retention),
            plans=plans,
            worker=worker,
            source=source,
            callback_base_url=callback_base,
            callback_secret=Secret(secret_value) if secret_value else None,
        )


_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
_STATE_SCHEMES = ("redis://", "rediss://", "unix://", *_CLUSTER_SCHEMES)

CALLBACK_SECRET_ENV = "DISPATCH_CALLBACK_SECRET"
DELIVERY_REPORTS = ("none", "summary", "full", "per_recipient", "per_recipient_final")
_PLAN_KEYS = {
    "region", "base_url", "token_env", "rate", "burst", "batch_size", "delivery_report",
    "suppression", "halt_failure_ratio", "halt_min_reports", "max_in_flight",
    "prefetch_take",
}  # fmt: skip
# The window's cap: each in-flight batch holds an HTTP connection and a thread, and the take
# checks the lane's prefix against the window, so it stays small.
MAX_IN_FLIGHT = 16


def _load_plan(
    plan_id: str,
    raw: Any,
    env: Mapping[str, str],
    bad: Callable[[str, str], None],
    require_tokens: bool,
    callbacks: bool = False,
) -> PlanConfig | None:
    key = f"plans.{plan_id}"
    if not isinstance(raw, Mapping):
        bad(key, "must be a table")
        return None
    ok = True
    if not plan_id or not all(c.isalnum() or c in "-_." for c in plan_id):
        bad(key, "service plan id may contain only letters, digits, '-', '_' and '.'")
        ok = False
    for k in raw:
        if k not in _PLAN_KEYS:
            bad(f"{key}.{k}", f"unknown key (expected one of: {', '.join(sorted(_PLAN_KEYS))})")
            ok = False

    region, base_url = raw.get("region"), raw.get("base_url")
    if base_url is not None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            bad(f"{key}.base_url", "must be an http:// or https:// URL")
            ok = False
    elif region is None:
        bad(key, f"needs region ({' | '.join(REGIONS)}) or base_url")
        ok = False
    elif region not in REGIONS:
        bad(f"{key}.region", f"unknown region {region!r} (expected one of: {', '.join(REGIONS)})")
        ok = False
    else:
        base_url = REGIONS[region]

    token_env = raw.get("token_env")
    token: Secret | None = None
    if not isinstance(token_env, str) or not token_env:
        bad(f"{key}.token_env", "required: the name of the environment variable with the token")
        ok = False
    else:
        value = env.get(token_env)
        if value:
            token = Secret(value)
        elif require_tokens:
            bad(f"{key}.token_env", f"environment variable {token_env} is not set")
            ok = False

    rate: Any = raw.get("rate")
    if not _is_number(rate) or rate <= 0:
        bad(f"{key}.rate", "must be a number of messages per second > 0")
        return None
    burst: Any = raw.get("burst", max(float(rate), 1.0))
    if not _is_number(burst) or burst < 1:
        bad(f"{key}.burst", "must be a number >= 1")
        return None
    batch_size = raw.get("batch_size", min(MAX_BATCH, int(burst)))
    if not _is_int(batch_size) or batch_size < 1:
        bad(f"{key}.batch_size", "must be a whole number >= 1")
        return None
    if batch_size > MAX_BATCH:
        bad(f"{key}.batch_size", f"{batch_size} is more than the API's {MAX_BATCH} recipients")
        return None
    if batch_size > burst:
        bad(
            f"{key}.batch_size",
            f"{batch_size} is more than burst {burst:g}: such a batch could never be granted",
        )
        return None
    report = raw.get("delivery_report", "full" if callbacks else "none")
    if report not in DELIVERY_REPORTS:
        bad(f"{key}.delivery_report", f"must be one of: {', '.join(DELIVERY_REPORTS)}")
        ok = False
    elif report != "none" and not callbacks:
        bad(f"{key}.delivery_report", "needs callback_base_url (where Sinch posts the reports)")
        ok = False
    suppression = raw.get("suppression", "plan")
    if suppression not in ("plan", "global"):
        bad(f"{key}.suppression", 'must be "plan" or "global"')
        ok = False
    halt: Any = raw.get("halt_failure_ratio")
    if halt is not None and (not _is_number(halt) or not 0 <= halt <= 1):
        bad(f"{key}.halt_failure_ratio", "must be a number from 0 to 1")
        ok = False
    halt_min: Any = raw.get("halt_min_reports", 200)
    if not _is_int(halt_min) or halt_min < 1:
        bad(f"{key}.halt_min_reports", "must be a whole number >= 1")
        ok = False
    in_flight: Any = raw.get("max_in_flight", 1)
    if not _is_int(in_flight) or not 1 <= in_flight <= MAX_IN_FLIGHT:
        bad(f"{key}.max_in_flight", f"must be a whole number from 1 to {MAX_IN_FLIGHT}")
        ok = False
    prefetch: Any = raw.get("prefetch_take", True)
    if not isinstance(prefetch, bool):
        bad(f"{key}.prefetch_take", "must be true or false")
        ok = False
    if not ok:
        return None
    assert isinstance(base_url, str) and isinstance(token_env, str)
    return PlanConfig(
        id=plan_id,
        base_url=base_url,
        token_env=token_env,
        rate=float(rate),
        burst=float(burst),
        batch_size=int(batch_size),
        token=token,
        delivery_report=str(report),
        suppression=str(suppression),
        halt_failure_ratio=float(halt) if halt is not None else None,
        halt_min_reports=int(halt_min),
        max_in_flight=int(in_flight),
        prefetch_take=prefetch,
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load_worker(raw: Any, bad: Callable[[str, str], None]) -> WorkerConfig:
    if not isinstance(raw, Mapping):
        bad("worker", "must be a table")
        return WorkerConfig()
    known = set(WorkerConfig.__dataclass_fields__)
    values: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in known:
            bad(f"worker.{k}", f"unknown key (expected one of: {', '.join(sorted(known))})")
        else:
            values[k] = v
    worker = WorkerConfig(**values)
    broken = worker.problems()
    for key, what in broken:
        bad(f"worker.{key}", what)
    return WorkerConfig() if broken else worker


def redacted_url(url: str) -> str:
    """A Redis or broker URL without its user, password and query (which may hold key files),
    for log lines and error messages (guarantee 6)."""
    parts = urlsplit(url)
    # The hosts as written: a cluster URL lists several host:port seeds, which urlsplit's
    # .hostname/.port cannot parse.
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}{parts.path}"
