"""The three callback shapes Sinch posts (API.md 4.2, 4.3, 4.7), parsed into one value.

Sinch's docs spell statuses in Title case and its SDK in UPPER case, and type
``total_message_count`` once as a string and once as a number: both are accepted.  Only final
statuses count; Queued and Dispatched are progress, not outcomes.  A status that is in
neither list (a new one Sinch adds) counts for nothing and is logged: counting it as a final
``unknown`` would make the recipient's real final status, when it comes, be ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from dispatcher.errors import CallbackRejected
from dispatcher.models import DELIVERY_STATUSES

log = logging.getLogger("dispatcher.callbacks")

FINAL = frozenset(DELIVERY_STATUSES)
INTERMEDIATE = frozenset({"queued", "dispatched"})
# Types Sinch posts to a plan's URL that carry nothing for us (an inbound binary message, MMS
# reports): answered 2xx and counted as ignored, not refused as if they were garbage.
IGNORED = frozenset(
    {"mo_binary", "mo_media", "delivery_report_mms", "recipient_delivery_report_mms"}
)
Kind = Literal[
    "delivery_report_sms", "recipient_delivery_report_sms", "mo_text",
    "mo_binary", "mo_media", "delivery_report_mms", "recipient_delivery_report_mms",
]  # fmt: skip


@dataclass(frozen=True)
class Callback:
    type: Kind
    batch_id: str = ""  # the provider's
    client_reference: str = ""  # ours: the batch id
    # Final statuses only: (status, recipient) when recipients are listed, else (status, count).
    recipients: list[tuple[str, str]] = field(default_factory=list)
    counts: list[tuple[str, int]] = field(default_factory=list)
    sender: str = ""  # mo_text: the number that wrote to us
    body: str = ""


def _status(raw: Any) -> str | None:
    s = str(raw or "").strip().lower()
    s = "cancelled" if s == "canceled" else s
    if s in FINAL:
        return s
    if s and s not in INTERMEDIATE:
        log.warning("delivery report status %r is not one Sinch documents; not counted", s[:40])
    return None


def _number(raw: Any, what: str) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        raise CallbackRejected(f"{what} is not a number") from None


def msisdn(raw: Any) -> str:
    return str(raw or "").strip().lstrip("+")


def parse(body: bytes) -> Callback:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CallbackRejected("body is not JSON") from None
    if not isinstance(doc, dict):
        raise CallbackRejected("body is not a JSON object")
    kind = str(doc.get("type") or "")
    if kind == "delivery_report_sms":
        if "total_message_count" in doc:
            _number(doc["total_message_count"], "total_message_count")
        recipients: list[tuple[str, str]] = []
        counts: list[tuple[str, int]] = []
        for entry in doc.get("statuses") or []:
            if not isinstance(entry, dict):
                raise CallbackRejected("statuses holds a non-object")
            status = _status(entry.get("status"))
            if status is None:
                continue
            listed = entry.get("recipients")
            if isinstance(listed, list) and listed:
                recipients += [(status, msisdn(r)) for r in listed]
            else:
                counts.append((status, _number(entry.get("count", 0), "count")))
        return Callback(
            "delivery_report_sms", str(doc.get("batch_id") or ""),
            str(doc.get("client_reference") or ""), recipients, counts,
        )  # fmt: skip
    if kind == "recipient_delivery_report_sms":
        status = _status(doc.get("status"))
        if not doc.get("recipient"):
            raise CallbackRejected("recipient_delivery_report_sms without a recipient")
        listed = [(status, msisdn(doc["recipient"]))] if status else []
        return Callback(
            "recipient_delivery_report_sms", str(doc.get("batch_id") or ""),
            str(doc.get("client_reference") or ""), listed,
        )  # fmt: skip
    if kind == "mo_text":
        return Callback("mo_text", sender=msisdn(doc.get("from")), body=str(doc.get("body") or ""))
    if kind in IGNORED:
        return Callback(cast(Kind, kind))
    raise CallbackRejected(f"unknown callback type {kind[:40]!r}")
