"""Request validation for a send or a dry run, in the order a client would fix its mistakes.

The checks, their order and their error codes follow seed 000 (codes), seed 003 (MSISDNs,
timestamps) and shared/sinch/API.md §1.1 (fields and limits); docs/simulator.md lists them.
Rendering of ``${name}`` parameters (for dry runs) lives here too, since it reads the same
validated request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from sinch_simulator.rules import (
    DELIVERY_REPORTS,
    MAX_BODY_CHARS,
    MAX_CALLBACK_URL,
    MAX_CLIENT_REFERENCE,
    MAX_EXPIRY_S,
    MAX_RECIPIENTS,
    PARAM_RE,
    iso_ms,
    normalize_msisdn,
    parse_iso,
)


class BadRequest(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _invalid_json(text: str) -> BadRequest:
    return BadRequest("syntax_invalid_json", text)


def _constraint(text: str) -> BadRequest:
    return BadRequest("syntax_constraint_violation", text)


def _bad_format(text: str) -> BadRequest:
    return BadRequest("syntax_invalid_parameter_format", text)


@dataclass(slots=True)
class SendRequest:
    to: list[str]  # normalized digits
    doc: dict[str, Any]  # the batch object minus id and timestamps
    body: str
    parameters: dict[str, dict[str, str]] | None


def validate_send(payload: dict[str, Any], now: float) -> SendRequest:
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
        parsed = parse_iso(value)
        if parsed is None:
            raise _constraint(f"{name}: {value!r} is not an ISO-8601 date-time")
        doc[name] = iso_ms(parsed)
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
    return SendRequest(to=to, doc=doc, body=body, parameters=parameters)


def parameter_lookup(
    parameters: dict[str, dict[str, str]] | None,
) -> dict[str, dict[str, str]]:
    """Parameter values keyed by normalized MSISDN, as the API matches '+46...' to '46...'."""
    return {
        key: {(normalize_msisdn(k) or k): v for k, v in mapping.items()}
        for key, mapping in (parameters or {}).items()
    }


def render(body: str, lookup: dict[str, dict[str, str]], msisdn: str) -> str:
    """The body one recipient gets; an unmapped parameter stays as written (the real API aborts
    that recipient with code 405, which a dry run cannot show)."""
    if not lookup:
        return body

    def sub(m: re.Match[str]) -> str:
        mapping = lookup.get(m.group(1))
        if mapping is None:
            return m.group(0)
        return mapping.get(msisdn, mapping.get("default", m.group(0)))

    return PARAM_RE.sub(sub, body)
