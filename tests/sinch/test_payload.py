"""sinch.payload: the batch-body codec keeps what a body says when it is split or re-referenced.

Build is the enqueue hot path and joins JSON strings by hand, so these check that what it
writes is the JSON a plain encoder would write, and that split and re-reference keep every
field but the ones they are meant to change.
"""

from __future__ import annotations

import json

from dispatcher.sinch import payload

TO = ["46701234567", "46701234568", "46701234569", "447400123456", "12125552368"]
PARAMS = {"name": {"46701234567": "Åsa", "447400123456": "Zoë", "default": "there"}}


def test_build_writes_the_fields_and_cuts_in_order() -> None:
    bodies = list(
        payload.build(
            "c1", "Acme", "Hi ${name}", TO, PARAMS, batch_size=2, send_at="2030-01-01T00:00:00.000Z"
        )
    )
    assert [(ref, n) for ref, n, _ in bodies] == [("c1.0", 2), ("c1.1", 2), ("c1.2", 1)]
    assert json.loads(bodies[0][2]) == {
        "from": "Acme",
        "body": "Hi ${name}",
        "delivery_report": "none",
        "send_at": "2030-01-01T00:00:00.000Z",
        "client_reference": "c1.0",
        "to": TO[:2],
        "parameters": {"name": {"46701234567": "Åsa", "default": "there"}},
    }
    assert "Åsa".encode() in bodies[0][2]  # UTF-8, not \u escapes
    plain = next(payload.build("c", "A", "x", TO, None, batch_size=9))
    assert "parameters" not in json.loads(plain[2])


def test_split_keeps_every_field_and_only_own_parameters() -> None:
    _, _, body = next(payload.build("c1", "Acme", "Hi ${name}", TO, PARAMS, batch_size=5))
    parts = payload.split(body, [3, 2], "c1.0")
    assert [(ref, n) for ref, n, _ in parts] == [("c1.0.1", 3), ("c1.0.2", 2)]
    left, right = (json.loads(b) for _, _, b in parts)
    original = json.loads(body)
    assert left == dict(
        original,
        to=TO[:3],
        client_reference="c1.0.1",
        parameters={"name": {"46701234567": "Åsa", "default": "there"}},
    )
    assert list(left) == list(original)  # field order kept
    assert right["to"] == TO[3:]
    assert right["parameters"] == {"name": {"447400123456": "Zoë", "default": "there"}}


def test_rereference_changes_only_the_reference() -> None:
    _, _, body = next(payload.build("c1", "Acme", "Hej ${name}", TO, PARAMS, batch_size=5))
    again = payload.rereference(body, "c1.0.rab12")
    assert json.loads(again) == dict(json.loads(body), client_reference="c1.0.rab12")
    assert payload.rereference(body.decode(), "c1.0.rab12") == again


def test_recipients_are_reported_without_plus() -> None:
    assert payload.recipients(b'{"to":["+46701234567","447400123456"]}') == [
        "46701234567",
        "447400123456",
    ]
    assert payload.recipients("{}") == []
