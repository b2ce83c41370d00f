"""The Sinch SMS REST API client: one pooled ``httpx.Client`` per worker process.

Sending never raises for what the provider says or for a broken connection: every attempt ends
in a :class:`ProviderResponse`, and ``policy.decide`` turns it into an action.  What went wrong
on the wire is told apart by what it means for a resend:

    ProviderResponse
    ├── status set                 the provider answered (2xx, 4xx, 5xx); code/text parsed
    └── status None, error set     no answer
        ├── ambiguous=False        it never reached the provider (connect failed, pool full):
        │                          safe to send again
        └── ambiguous=True         it may have been created (read timeout, connection dropped
                                   after the request was written): look the batch up by
                                   ``client_reference`` before sending again

Only :meth:`SinchClient.find_batch` raises, with :class:`LookupFailed`, when the lookup itself
gets no usable answer.  No token ever appears in a result, a log line or an exception: the
Authorization header is built once per plan and httpx's messages name only the URL.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from dispatcher.config import PlanConfig, WorkerConfig
from dispatcher.errors import LookupFailed
from dispatcher.sinch.limits import format_timestamp

USER_AGENT = "sms-dispatcher/0.1"


@dataclass(frozen=True)
class ProviderResponse:
    status: int | None
    code: str = ""
    text: str = ""
    batch_id: str | None = None
    retry_after_s: float | None = None
    error: str | None = None
    ambiguous: bool = False
    elapsed_s: float = 0.0

    @property
    def label(self) -> str:
        """``status:code`` for logs and metrics, e.g. ``403:illegal_number_type``."""
        return f"{self.status if self.status is not None else self.error}:{self.code}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_error_body(content: bytes) -> tuple[str, str]:
    """(code, text) from ``{"code","text"}`` or the Google-style ``{"error":{...}}``."""
    if not content:
        return "", ""
    raw = content[:500].decode("utf-8", "replace")
    try:
        data: Any = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return "", raw
    code: Any = ""
    text: Any = ""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            code, text = err.get("status") or err.get("code") or "", err.get("message") or ""
        else:
            code, text = data.get("code") or "", data.get("text") or ""
    # A body in neither shape is kept as it came (405 and unknown answers are dead-lettered
    # "with the raw status and body").
    return str(code), str(text) if (code or text) else raw


_ID_FIRST = b'{"id":"'


def batch_id_of(content: bytes) -> str | None:
    """The provider's id of a created batch, from the 2xx body.

    The body echoes the whole batch (every recipient), and parsing it costs ~40 us for 100
    recipients and ~70 us for 1,000 in the send loop; the API puts ``id`` first, so a body that
    starts ``{"id":"`` gives it up without a parse.  Any other shape (whitespace, another key
    first, an escape in the id) is parsed in full, as before.
    """
    if content.startswith(_ID_FIRST):
        end = content.find(b'"', len(_ID_FIRST))
        if end > len(_ID_FIRST) and b"\\" not in content[len(_ID_FIRST) : end]:
            with contextlib.suppress(UnicodeDecodeError):
                return content[len(_ID_FIRST) : end].decode()
    try:
        data: Any = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    return str(data.get("id") or "") or None


@dataclass(frozen=True)
class _Route:
    """A plan's ``POST /batches``, prepared once."""

    transport: httpx.BaseTransport
    url: httpx.URL
    headers: httpx.Headers


class SinchClient:
    """Thread-safe; make one per process (after fork: connections must not be shared)."""

    def __init__(
        self,
        *,
        timeout_s: float = WorkerConfig.http_timeout_s,
        connect_timeout_s: float = WorkerConfig.http_connect_timeout_s,
        max_connections: int = 64,
    ) -> None:
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        self._headers: dict[tuple[str, str], dict[str, str]] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._timeouts = {"timeout": self._http.timeout.as_dict()}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _auth(self, plan: PlanConfig) -> dict[str, str]:
        key = (plan.id, plan.base_url)
        headers = self._headers.get(key)
        if headers is None:
            if plan.token is None:
                raise LookupError(f"plan {plan.id}: no token ({plan.token_env} is not set)")
            headers = {
                "Authorization": f"Bearer {plan.token.reveal()}",
                "Content-Type": "application/json",
            }
            with self._lock:
                self._headers[key] = headers
        return headers

    def _route(self, plan: PlanConfig) -> _Route:
        key = (plan.id, plan.base_url)
        route = self._routes.get(key)
        if route is None:
            url = httpx.URL(plan.batches_url)
            headers = httpx.Headers({**self._http.headers, **self._auth(plan)})
            # The transport the client itself would use for this URL: a proxy's, when the
            # environment names one (HTTPS_PROXY, NO_PROXY), else its own pool.
            route = _Route(self._http._transport_for_url(url), url, headers)
            with self._lock:
                self._routes[key] = route
        return route

    def send_batch(self, plan: PlanConfig, payload: bytes) -> ProviderResponse:
        """POST a ready-made batch body (it already carries its ``client_reference``).

        Straight to the client's transport, with the URL and headers prepared once per plan:
        ``Client.post`` builds them anew for every request, merges cookies and redirects,
        ~200 us of this process's CPU for a batch of 100 on the bench machine, as much as
        the whole Redis round trip (docs/benchmarks.md, "Where the time goes").  Connections,
        timeouts, TLS, proxies and the exceptions below are the client's own."""
        started = time.perf_counter()
        route = self._route(plan)
        request = httpx.Request(
            "POST", route.url, headers=route.headers, content=payload, extensions=self._timeouts
        )
        try:
            resp = route.transport.handle_request(request)
            try:
                resp.read()
            finally:
                resp.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return ProviderResponse(
                None, error=_kind(exc), text=_safe(exc), elapsed_s=time.perf_counter() - started
            )
        except httpx.TransportError as exc:
            # Read/write timeouts and dropped connections: the request may have arrived.
            return ProviderResponse(
                None,
                error=_kind(exc),
                text=_safe(exc),
                ambiguous=True,
                elapsed_s=time.perf_counter() - started,
            )
        elapsed = time.perf_counter() - started
        if 200 <= resp.status_code < 300:
            return ProviderResponse(
                resp.status_code, batch_id=batch_id_of(resp.content), elapsed_s=elapsed
            )
        code, text = parse_error_body(resp.content)
        return ProviderResponse(
            resp.status_code,
            code=code,
            text=text,
            retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
            elapsed_s=elapsed,
        )

    def cancel_batch(self, plan: PlanConfig, provider_batch_id: str) -> ProviderResponse:
        """DELETE a batch the provider accepted.  Messages already in progress may still go
        out (API.md); the delivery reports tell which did not."""
        started = time.perf_counter()
        url = f"{plan.batches_url}/{provider_batch_id}"
        try:
            resp = self._http.delete(url, headers=self._auth(plan))
        except httpx.TransportError as exc:
            return ProviderResponse(
                None, error=_kind(exc), text=_safe(exc), elapsed_s=time.perf_counter() - started
            )
        code, text = ("", "") if resp.is_success else parse_error_body(resp.content)
        return ProviderResponse(
            resp.status_code, code=code, text=text, batch_id=provider_batch_id,
            elapsed_s=time.perf_counter() - started,
        )  # fmt: skip

    def find_batch(self, plan: PlanConfig, client_reference: str, since: datetime) -> str | None:
        """The provider's id of our batch ``client_reference``, or None if it never arrived.

        Lists batches filtered by client_reference from a little before the first attempt,
        and matches the reference exactly on our side (the filter's semantics are not
        documented: it might match prefixes).
        """
        page = 0
        # Whole seconds, rounded down: start_date is inclusive, so earlier is the safe side.
        start = format_timestamp((since - timedelta(minutes=5)).replace(microsecond=0))
        while True:
            try:
                resp = self._http.get(
                    plan.batches_url,
                    params={
                        "client_reference": client_reference,
                        "start_date": start,
                        "page": page,
                        "page_size": 100,
                    },
                    headers=self._auth(plan),
                )
            except httpx.TransportError as exc:
                raise LookupFailed(f"lookup of {client_reference}: {_safe(exc)}") from None
            if resp.status_code != 200:
                code, _ = parse_error_body(resp.content)
                raise LookupFailed(
                    f"lookup of {client_reference}: HTTP {resp.status_code} {code}".rstrip()
                )
            try:
                data = resp.json()
                batches = data.get("batches") or []
                count = int(data.get("count", 0))
            except (ValueError, AttributeError, TypeError):
                raise LookupFailed(f"lookup of {client_reference}: unreadable answer") from None
            for b in batches:
                if isinstance(b, dict) and b.get("client_reference") == client_reference:
                    return str(b.get("id") or "") or "unknown-id"
            page += 1
            if not batches or page * 100 >= count:
                return None


def _kind(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "dropped"
    return "transport"


def _safe(exc: Exception) -> str:
    """An exception's message, one line; httpx messages carry no headers."""
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0][:200]
