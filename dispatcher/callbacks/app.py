"""The receiver: one WSGI callable (and an ASGI wrapper) for every plan's callback URL.

It answers 2xx only once what it received is in Redis, 503 when Redis cannot be reached (Sinch
retries 5xx for ~23 h, so nothing is lost), 401 for a wrong or missing token (counted, nothing
changed), 400 for a body it cannot read.  It never calls the provider, so a slow provider can
never slow it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from dispatcher.callbacks.keywords import opt_action
from dispatcher.callbacks.parse import IGNORED, Callback, parse
from dispatcher.callbacks.tokens import split_path, verify
from dispatcher.config import PlanConfig, Settings
from dispatcher.errors import CallbackRejected, StorageError
from dispatcher.models import DELIVERY_STATUSES
from dispatcher.storage.connect import connect
from dispatcher.storage.control import Control
from dispatcher.storage.reports import Reports

log = logging.getLogger("dispatcher.callbacks")

# A full report of a 1,000-recipient batch is ~40 kB; anything far larger is not from Sinch, and
# a 4xx (which Sinch does not retry) is the right answer to it.
MAX_BODY = 1024 * 1024
_FAILED = frozenset(DELIVERY_STATUSES) - {"delivered", "cancelled"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Receiver:
    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client if client is not None else connect(settings.redis_url)
        retention = int(settings.retention_days * 86400)
        self.reports = Reports(self.client, retention_s=retention)
        self.control = Control(self.client, retention_s=retention)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, body = self.handle(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""),
            lambda: _read(environ), environ.get("CONTENT_TYPE", "application/json"),
        )  # fmt: skip
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def handle(
        self,
        method: str,
        path: str,
        read: Callable[[], bytes],
        content_type: str = "application/json",
    ) -> tuple[str, Any]:
        """(HTTP status line, JSON body) for one request; every 4xx is one Sinch won't retry."""
        if path in ("/healthz", "/health"):
            return "200 OK", {"ok": True}
        where = split_path(path)
        if where is None:
            return "404 Not Found", {"error": "not a callback URL"}
        if method != "POST":
            return "405 Method Not Allowed", {"error": "POST only"}
        plan_id, token = where
        plan = self.settings.plans.get(plan_id)
        secret = self.settings.callback_secret
        if plan is None or secret is None or not verify(secret.reveal(), plan_id, token):
            if plan is not None:  # unknown plans are not counted: no label an attacker mints
                self._count(plan_id, "unknown", "unauthorized")
            return "401 Unauthorized", {"error": "wrong or missing token"}
        try:
            if content_type.split(";")[0].strip().lower() not in ("application/json", ""):
                raise CallbackRejected(
                    f"content type {content_type[:60]!r} is not application/json"
                )
            cb = parse(read())
        except CallbackRejected as exc:
            self._count(plan_id, "unknown", "invalid")
            return "400 Bad Request", {"error": str(exc)}
        try:
            self._ingest(plan, cb)
        except StorageError:
            log.warning("plan %s: Redis unavailable; answering 503 so Sinch retries", plan_id)
            return "503 Service Unavailable", {"error": "storage unavailable, retry later"}
        return "200 OK", {"ok": True}

    def _count(self, plan: str, kind: str, result: str) -> None:
        # The answer is what matters: a lost count of a refusal loses no data.
        with contextlib.suppress(StorageError):
            self.reports.count(plan, kind, result)

    def _ingest(self, plan: PlanConfig, cb: Callback) -> None:
        if cb.type in IGNORED:
            self.reports.count(plan.id, cb.type, "ignored")
            return
        if cb.type == "mo_text":
            action = opt_action(cb.body)
            scope = None if plan.suppression == "global" else plan.id
            if action == "stop" and cb.sender:
                self.reports.suppress([cb.sender], scope)
            elif action == "start" and cb.sender:
                self.reports.unsuppress([cb.sender], scope)
            self.reports.count(plan.id, cb.type, "ok" if action else "ignored")
            return
        found = self.reports.ingest(
            plan.id, cb.type, cb.client_reference, cb.batch_id,
            recipients=cb.recipients or None, counts=cb.counts or None,
        )  # fmt: skip
        if found is not None and found[1] and plan.halt_failure_ratio is not None:
            self._maybe_halt(plan, found[0])

    def _maybe_halt(self, plan: PlanConfig, campaign: str) -> None:
        """A campaign whose reports say it is failing pauses itself (CONTRACT: halt on
        failure), before more of the same goes out."""
        counts = self.reports.delivery(plan.id, campaign)
        total = sum(counts.values())
        failed = sum(n for s, n in counts.items() if s in _FAILED)
        ratio = plan.halt_failure_ratio
        if ratio is None or total < plan.halt_min_reports or failed <= ratio * total:
            return
        if self.control.pause(plan.id, campaign, "halt", reason="failures") == "ok":
            log.error(
                "plan %s campaign %s: %d of %d final reports failed (above %.0f%%); paused it. "
                "`dispatcher campaigns resume %s` after checking",
                plan.id, campaign, failed, total, 100 * ratio, campaign,
            )  # fmt: skip


def _read(environ: dict[str, Any]) -> bytes:
    try:
        n = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        n = 0
    if n > MAX_BODY:
        raise CallbackRejected("body too large")
    return bytes(environ["wsgi.input"].read(n)) if n > 0 else b""


def make_wsgi_app(settings: Settings | None = None, client: Any = None) -> Receiver:
    return Receiver(settings or Settings.load(require_tokens=False), client)


_default: Receiver | None = None


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Mount me: ``gunicorn 'dispatcher.callbacks:wsgi_app'``.  Settings from the environment
    on the first request (as the worker reads them)."""
    global _default
    if _default is None:
        _default = make_wsgi_app()
    return _default(environ, start_response)


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Mount me: ``uvicorn 'dispatcher.callbacks:asgi_app'``.  Redis calls run in a thread, so
    the event loop never blocks on them."""
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        part = msg.get("body", b"")
        size += len(part)
        if size <= MAX_BODY:  # past the cap the rest is read and dropped, not kept in memory
            chunks.append(part)
        if not msg.get("more_body"):
            break
    global _default
    if _default is None:
        _default = await asyncio.to_thread(make_wsgi_app)
    receiver = _default
    body = b"".join(chunks)

    def read() -> bytes:
        if size > MAX_BODY:
            raise CallbackRejected("body too large")
        return body

    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    status, doc = await asyncio.to_thread(
        receiver.handle, scope["method"], scope["path"], read,
        headers.get("content-type", "application/json"),
    )  # fmt: skip
    data = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": int(status.split()[0]),
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})
