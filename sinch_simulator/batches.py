"""The batches endpoints of the simulated Sinch API: send, list, get, cancel, dry run.

Answers follow seeds 000/001 (status codes, ``{"code", "text"}`` bodies) and
shared/sinch/API.md §1-§3; where they deliberately differ (a 429 instead of queueing) is listed
in docs/simulator.md.  Every send to a known plan is logged, whatever its answer, with its
decision time taken under the state's lock.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

from sinch_simulator.model import Arrival, rate_text
from sinch_simulator.rules import (
    DEFAULT_LIST_WINDOW_S,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_RECIPIENTS,
    count_parts,
    iso_ms,
    new_batch_id,
    normalize_msisdn,
    parse_iso,
)
from sinch_simulator.state import Batch, Plan, State
from sinch_simulator.validate import (
    BadRequest,
    SendRequest,
    parameter_lookup,
    render,
    validate_send,
)
from sinch_simulator.wire import (
    Headers,
    Reply,
    bearer_matches,
    error,
    is_json,
    not_allowed,
    ok,
    unauthorized,
)


def serve(
    state: State, method: str, segs: list[str], query: str, headers: Headers, body: bytes
) -> Reply:
    """``/xms/v1/{segs[0]}/{segs[1:]...}``: auth first, then forced plan errors, then the route."""
    plan_id = unquote(segs[0])
    rest = segs[1:]
    with state.lock:
        plan = state.plans.get(plan_id)
    token_ok = plan is not None and bearer_matches(headers.get("Authorization"), plan.spec.token)
    if plan is not None and method == "POST" and rest == ["batches"]:
        return _send(state, plan, headers, body, token_ok)
    if plan is None or not token_ok:
        return unauthorized()
    forced = state.faults.plan_errors.get(plan_id)
    if forced is not None:
        return _unavailable(
            state, error(forced[0], forced[1], f"forced by the simulator for plan {plan_id}")
        )
    if rest == ["batches"]:
        if method == "GET":
            return _list(state, plan, query)
        return not_allowed("GET, POST")
    if len(rest) == 2 and rest[0] == "batches" and rest[1] == "dry_run":
        if method == "POST":
            return _dry_run(headers, body, query)
        return not_allowed("POST")
    if len(rest) == 2 and rest[0] == "batches" and rest[1]:
        batch_id = unquote(rest[1])
        if method == "GET":
            return _get(state, plan, batch_id)
        if method == "DELETE":
            return _cancel(state, plan, batch_id)
        return not_allowed("GET, DELETE")
    return Reply(404)


def _send(state: State, plan: Plan, headers: Headers, body: bytes, token_ok: bool) -> Reply:
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

    reply: Reply | None = None
    request: SendRequest | None = None
    forced = state.faults.plan_errors.get(plan_id)
    if not token_ok:
        reply = unauthorized()
    elif forced is not None:
        reply = _unavailable(
            state, error(forced[0], forced[1], f"forced by the simulator for plan {plan_id}")
        )
    elif not is_json(headers.get("Content-Type")):
        reply = Reply(415)
    elif parse_error is not None:
        reply = error(400, "syntax_invalid_json", parse_error)
    else:
        try:
            request = validate_send(cast(dict[str, Any], payload), time.time())
        except BadRequest as exc:
            reply = error(400, exc.code, exc.text)

    accepted: tuple[str, ...] | None = None
    with state.lock:
        # Arrival time, limiter time and log order are all taken under one lock, so that
        # the log's order is the order decisions were made in and its times never go back.
        t = time.time()
        if reply is None:
            assert request is not None
            reply = _decide(state, plan, request, t, time.monotonic())
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
        if state.keep_log:
            state.log.append(
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
    if accepted is not None and reply.batch_id is not None and request is not None:
        state.reporter.accepted(plan_id, request.doc | {"client_reference": cref}, reply.batch_id,
                                list(accepted))  # fmt: skip
    latency = state.faults.latency_ms
    if latency > 0:
        reply.delay = latency / 1000.0 * state.rng.uniform(0.5, 1.5)
    return reply


def _decide(state: State, plan: Plan, request: SendRequest, t: float, mono: float) -> Reply:
    """Faults in their documented order, then the limiter, then creation (lock held)."""
    faults = state.faults
    plan_id = plan.spec.plan_id
    forced_after = faults.take_throttle(plan_id)
    if forced_after is not None:
        return _too_many(state, forced_after, t, f"plan {plan_id} is throttled by the simulator")
    if faults.error_rate > 0 and state.rng.random() < faults.error_rate:
        status = state.rng.choice(faults.error_statuses)
        if status == 429:
            return _too_many(state, 1.0, t, "injected error")
        return _unavailable(state, Reply(status))
    n = len(request.to)
    wait = plan.bucket.take(n, mono)
    if wait is not None:
        spec = plan.spec
        if n > plan.bucket.capacity:
            text = (
                f"a batch of {n} recipients can never fit plan {plan_id}'s bucket of "
                f"{plan.bucket.capacity:g} ({rate_text(spec)})"
            )
        else:
            text = f"plan {plan_id} is over its rate ({rate_text(spec)}); {n} recipients"
        return _too_many(state, max(1.0, wait), t, text)
    if faults.illegal_numbers:
        # Normalized here too, so that a test may add "+46..." to the set directly.
        illegal = {normalize_msisdn(x) or x for x in faults.illegal_numbers}
        for msisdn in request.to:
            if msisdn in illegal:
                return error(
                    403,
                    "illegal_number_type",
                    f"Illegal phone number type of MSISDN {msisdn} for the chosen region",
                )
    return _create(state, plan, request, t)


def _unavailable(state: State, reply: Reply) -> Reply:
    """A 503 says when to come back, if the test asked for that."""
    after = state.faults.unavailable_retry_after_s
    if reply.status == 503 and after is not None:
        reply.headers = (*reply.headers, ("Retry-After", str(math.ceil(after))))
    return reply


def _too_many(state: State, after_s: float, t: float, text: str) -> Reply:
    seconds = max(0, math.ceil(after_s))
    if state.faults.retry_after_http_date:
        value = email.utils.formatdate(math.ceil(t) + seconds, usegmt=True)
    else:
        value = str(seconds)
    reply = error(429, "too_many_requests", text)
    reply.headers = (("Retry-After", value),)
    return reply


def _create(state: State, plan: Plan, request: SendRequest, t: float) -> Reply:
    batch_id = new_batch_id(t, state.rng)
    stamp = iso_ms(t)
    doc: dict[str, Any] = {"id": batch_id, **request.doc}
    doc["created_at"] = stamp
    doc["modified_at"] = stamp
    sender = doc.get("from")
    cref = doc.get("client_reference")
    batch = Batch(
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
    drop = state.faults.drop_rate > 0 and state.rng.random() < state.faults.drop_rate
    if drop:
        return Reply(201, batch_id=batch_id, drop=True)
    reply = ok(doc, 201)
    reply.batch_id = batch_id
    return reply


def _list(state: State, plan: Plan, query: str) -> Reply:
    params = dict(parse_qsl(query, keep_blank_values=True))
    try:
        page = int(params.get("page", "0"))
        page_size = int(params.get("page_size", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        return error(400, "syntax_invalid_parameter_format", "page, page_size: integers")
    if page < 0:
        return error(400, "syntax_constraint_violation", "page: must be >= 0")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        return error(400, "syntax_constraint_violation", f"page_size: must be 1-{MAX_PAGE_SIZE}")
    now = time.time()
    start_ms = int((now - DEFAULT_LIST_WINDOW_S) * 1000)
    end_ms: int | None = None
    for name in ("start_date", "end_date"):
        if name in params:
            parsed = parse_iso(params[name])
            if parsed is None:
                return error(
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
    with state.lock:
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
        return ok(
            {
                "count": len(matched),
                "page": page,
                "page_size": len(chosen),
                "batches": [b.doc for b in chosen],
            }
        )


def _get(state: State, plan: Plan, batch_id: str) -> Reply:
    with state.lock:
        batch = plan.by_id.get(batch_id)
        return Reply(404) if batch is None else ok(batch.doc)


def _cancel(state: State, plan: Plan, batch_id: str) -> Reply:
    with state.lock:
        batch = plan.by_id.get(batch_id)
        if batch is None:
            return Reply(404)
        batch.doc["canceled"] = True
        batch.doc["modified_at"] = iso_ms(time.time())
        return ok(batch.doc)


def _dry_run(headers: Headers, body: bytes, query: str) -> Reply:
    if not is_json(headers.get("Content-Type")):
        return Reply(415)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, "syntax_invalid_json", f"invalid JSON: {exc}")
    if not isinstance(payload, dict):
        return error(400, "syntax_invalid_json", "the request body must be a JSON object")
    try:
        request = validate_send(payload, time.time())
    except BadRequest as exc:
        return error(400, exc.code, exc.text)
    params = dict(parse_qsl(query, keep_blank_values=True))
    per_recipient = params.get("per_recipient", "false").lower() == "true"
    try:
        detail = int(params.get("number_of_recipients", "100"))
    except ValueError:
        return error(400, "syntax_invalid_parameter_format", "number_of_recipients: int")
    if not 0 <= detail <= MAX_RECIPIENTS:
        return error(400, "syntax_constraint_violation", "number_of_recipients: must be 0-1000")
    total = 0
    details: list[dict[str, Any]] = []
    lookup = parameter_lookup(request.parameters)
    for msisdn in request.to:
        text = render(request.body, lookup, msisdn)
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
    return ok(result)
