"""The ``/_sim`` control API: the simulator's log, stats, faults and plans over HTTP.

For tests and tools when the simulator runs in another process.  No auth; the HTTP layer
answers only loopback clients (others get 403).  Never returns a token.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from sinch_simulator.faults import number
from sinch_simulator.model import PlanSpec
from sinch_simulator.state import State
from sinch_simulator.wire import Headers, Reply, error, not_allowed, ok


def serve(
    state: State, method: str, segs: list[str], query: str, headers: Headers, body: bytes
) -> Reply:
    """``/_sim/{segs...}``; the routes and their answers are listed in docs/simulator.md."""
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
        "inbound": ("POST",),
    }
    if route not in routes:
        return Reply(404)
    if method not in routes[route]:
        return not_allowed(", ".join(routes[route]))
    if route == "arrivals":
        if not state.keep_log:
            return error(409, "log_disabled", "started with keep_log=False")
        return ok([a.to_json() for a in state.arrivals(plan)])
    if route == "accepted":
        if not state.keep_log:
            return error(409, "log_disabled", "started with keep_log=False")
        return ok(state.accepted_recipients(plan))
    if route == "stats":
        return ok(state.stats())
    if route == "reset":
        state.reset()
        return ok({"reset": True})
    if method == "GET":
        if route == "faults":
            return ok(state.faults.to_json())
        return ok([_plan_json(p) for p in state.specs()])
    payload: Any
    try:
        payload = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, "syntax_invalid_json", f"invalid JSON: {exc}")
    if not isinstance(payload, dict):
        return error(400, "syntax_invalid_json", "expected a JSON object")
    if route == "inbound":
        url, sender = payload.get("url"), payload.get("from")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return error(400, "syntax_constraint_violation", "url: an http(s) callback URL")
        if not isinstance(sender, str) or not sender:
            return error(400, "syntax_constraint_violation", "from: the sender's number")
        state.reporter.inbound(url, sender, str(payload.get("body") or ""))
        return ok({"queued": True})
    if route == "faults":
        try:
            state.faults.update(**payload)
        except ValueError as exc:
            return error(400, "syntax_constraint_violation", str(exc))
        return ok(state.faults.to_json())
    try:
        spec = PlanSpec(
            plan_id=str(payload.get("plan_id", "")),
            token=str(payload.get("token") or ""),
            rate=number(payload.get("rate"), "rate"),
            burst=None if payload.get("burst") is None else number(payload["burst"], "burst"),
        )
    except ValueError as exc:
        return error(400, "syntax_constraint_violation", str(exc))
    state.add_plan(spec)
    return ok(_plan_json(spec))


def _plan_json(spec: PlanSpec) -> dict[str, Any]:
    return {"plan_id": spec.plan_id, "rate": spec.rate, "burst": spec.effective_burst}
