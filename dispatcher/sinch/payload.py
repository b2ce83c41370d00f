"""Batch request bodies (``POST /xms/v1/{plan}/batches``): the one place that writes or reads them.

A body is built once at enqueue and stored as bytes; the send loop POSTs those bytes as they
are.  After that a stored body is only ever split (isolation halves, re-batching an oversize
batch), given a new ``client_reference`` (a dead letter replayed) or asked for its recipients
(a dead letter shown), and those four operations live here so that the field names and the
encoding rules are written down once: compact JSON, UTF-8 (non-ASCII text is not escaped),
``client_reference`` the batch id, ``to`` the MSISDNs, ``parameters`` only the values of the
batch's own recipients plus ``default``.

:func:`build` is the enqueue hot path (1000 bodies for a million recipients): the part that
is the same for every batch is encoded once and the rest joined in as JSON strings, which is
several times faster than encoding a dict per batch.  The other three are rare and simply
decode, change and re-encode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["Body", "build", "recipients", "rereference", "split"]


class Body(NamedTuple):
    """A batch ready to store and POST as it is: its id is its ``client_reference``."""

    batch_id: str
    recipients: int
    payload: bytes


_DEFAULT = "default"


def build(
    reference: str,
    originator: str,
    text: str,
    to: Sequence[str],
    parameters: Mapping[str, Mapping[str, str]] | None,
    *,
    batch_size: int,
    send_at: str | None = None,
    expire_at: str | None = None,
    delivery_report: str = "none",
    callback_url: str | None = None,
) -> Iterator[Body]:
    """The bodies of ``to`` cut into batches of ``batch_size``, ``reference.0``, ``.1``, ...

    ``originator`` and the times are written as given: the campaign checks normalized them.
    """
    common: dict[str, Any] = {"from": originator, "body": text, "delivery_report": delivery_report}
    if callback_url:
        common["callback_url"] = callback_url
    if send_at:
        common["send_at"] = send_at
    if expire_at:
        common["expire_at"] = expire_at
    head = json.dumps(common, ensure_ascii=False, separators=(",", ":"))[:-1]
    for i, start in enumerate(range(0, len(to), batch_size)):
        chunk = to[start : start + batch_size]
        batch_id = f"{reference}.{i}"
        parts = [head, ',"client_reference":"', batch_id, '","to":', json.dumps(chunk)]
        if parameters:
            parts += [
                ',"parameters":',
                json.dumps(_own_parameters(parameters, chunk), ensure_ascii=False),
            ]
        parts.append("}")
        yield Body(batch_id, len(chunk), "".join(parts).encode())


def split(body: bytes | str, sizes: Sequence[int], reference: str) -> list[Body]:
    """``body`` cut into consecutive batches of ``sizes`` recipients: ``reference.1``, ``.2``...

    Each part keeps every other field of the original; its ``parameters`` keep only its own
    recipients' values and the defaults.
    """
    fields = json.loads(body)
    to: list[str] = fields["to"]
    params: dict[str, dict[str, str]] | None = fields.get("parameters")
    parts: list[Body] = []
    start = 0
    for i, size in enumerate(sizes, 1):
        chunk = to[start : start + size]
        start += size
        part_id = f"{reference}.{i}"
        part = dict(fields, to=chunk, client_reference=part_id)
        if params:
            wanted = set(chunk) | {_DEFAULT}
            part["parameters"] = {
                k: {m: v for m, v in vals.items() if m in wanted} for k, vals in params.items()
            }
        parts.append(Body(part_id, len(chunk), _encode(part)))
    return parts


def rereference(body: bytes | str, reference: str) -> bytes:
    """``body`` under a new ``client_reference``: a resend the provider will not take for
    the original (whose lookup by reference would otherwise find the old batch)."""
    fields = json.loads(body)
    fields["client_reference"] = reference
    return _encode(fields)


def without(body: bytes | str, dropped: set[str]) -> tuple[bytes, int]:
    """``body`` minus recipients in ``dropped`` (MSISDNs without ``+``), same reference:
    (new body, recipients left).  For a number that opted out after enqueue."""
    fields = json.loads(body)
    to = [t for t in fields.get("to", []) if str(t).lstrip("+") not in dropped]
    fields["to"] = to
    params = fields.get("parameters")
    if params:
        wanted = {str(t) for t in to} | {_DEFAULT}
        fields["parameters"] = {
            k: {m: v for m, v in vals.items() if m in wanted} for k, vals in params.items()
        }
    return _encode(fields), len(to)


def recipients(body: bytes | str) -> list[str]:
    """The MSISDNs a body sends to, without ``+`` (the form the dispatcher reports)."""
    return [str(t).lstrip("+") for t in json.loads(body).get("to", [])]


def _encode(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def _own_parameters(
    params: Mapping[str, Mapping[str, str]], chunk: Sequence[str]
) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, values in params.items():
        sub = {m: values[m] for m in chunk if m in values}
        if _DEFAULT in values:
            sub[_DEFAULT] = values[_DEFAULT]
        out[key] = sub
    return out
