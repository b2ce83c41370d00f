"""The Sinch client: what each answer (or its absence) turns into, over real HTTP.

Two real servers: the project's simulator for the API's own answers, and a tiny local HTTP
server for what the simulator never says (the Google-style error body, a JSON body in neither
shape, a connection dropped before any answer, an answer slower than the timeout, a lookup
filter that matches prefixes).  No mocks.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import PlanConfig, Secret
from dispatcher.errors import LookupFailed
from dispatcher.sending.policy import Action, decide
from dispatcher.sinch.client import (
    ProviderResponse,
    SinchClient,
    batch_id_of,
    parse_error_body,
    parse_retry_after,
)
from sinch_simulator import PlanSpec, Simulator

TOKEN = "tok-client-s3cr3t-0123456789"


def plan_at(base_url: str, plan_id: str = "p1", token: str = TOKEN) -> PlanConfig:
    return PlanConfig(
        id=plan_id,
        base_url=base_url,
        token_env="P1_TOKEN",
        rate=1000,
        burst=1000,
        batch_size=100,
        token=Secret(token),
    )


def body(ref: str, *to: str) -> bytes:
    doc = {
        "from": "Acme",
        "body": "Hi",
        "client_reference": ref,
        "to": list(to) or ["+46701234567"],
    }
    return json.dumps(doc).encode()


def no_secret(resp: ProviderResponse) -> None:
    assert TOKEN not in repr(resp) and TOKEN not in resp.label


# ----------------------------------------------------------------------------- parsing
def test_error_body_sinch_shape() -> None:
    raw = b'{"code": "missing_callback_url", "text": "Requesting delivery report without any callback URL."}'
    assert parse_error_body(raw) == (
        "missing_callback_url",
        "Requesting delivery report without any callback URL.",
    )


def test_error_body_google_shape_uses_the_status_name() -> None:
    raw = json.dumps(
        {
            "error": {
                "code": 400,
                "message": 'parsing field "type": "XXX" is not a valid value',
                "status": "INVALID_ARGUMENT",
                "details": [],
            }
        }
    ).encode()
    assert parse_error_body(raw) == (
        "INVALID_ARGUMENT",
        'parsing field "type": "XXX" is not a valid value',
    )
    denied = (
        b'{"error": {"code": 403, "message": "", "status": "PERMISSION_DENIED", "details": []}}'
    )
    assert parse_error_body(denied) == ("PERMISSION_DENIED", "")
    # Without a status name, the numeric code is all there is.
    assert parse_error_body(b'{"error": {"code": 400, "message": "m"}}') == ("400", "m")


def test_error_body_empty_and_foreign_shapes() -> None:
    assert parse_error_body(b"") == ("", "")  # the 404 of the SMS API has no body
    assert parse_error_body(b"<html>Bad Gateway</html>") == ("", "<html>Bad Gateway</html>")
    # JSON in neither shape is kept raw: a dead letter must show what the provider said.
    assert parse_error_body(b'{"message": "nope"}') == ("", '{"message": "nope"}')
    assert parse_error_body(b"[1, 2]") == ("", "[1, 2]")
    assert parse_error_body(b"\xff\xfe") == ("", "\ufffd\ufffd")


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("1.5", now=now) == 1.5
    assert parse_retry_after("-3", now=now) == 0.0
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, now=now) == 42.0
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    for junk in (None, "", "soon", "Mon, 99 Foo 2026"):
        assert parse_retry_after(junk, now=now) is None


# ----------------------------------------------------------------------------- the simulator
@pytest.fixture
def sim_plan(sim: Simulator) -> PlanConfig:
    sim.add_plan(PlanSpec("p1", TOKEN, 10_000))
    return plan_at(sim.url)


@pytest.fixture
def client() -> Iterator[SinchClient]:
    c = SinchClient(timeout_s=2.0, connect_timeout_s=1.0)
    yield c
    c.close()


def test_created_carries_the_provider_batch_id(
    sim: Simulator, sim_plan: PlanConfig, client: SinchClient
) -> None:
    resp = client.send_batch(sim_plan, body("ref-201"))
    assert resp.status == 201 and resp.batch_id
    assert decide(resp).action is Action.ACCEPT
    assert sim.arrivals("p1")[-1].batch_id == resp.batch_id
    no_secret(resp)


@pytest.mark.parametrize(
    ("forced", "code"),
    [
        ((400, "syntax_invalid_json"), "syntax_invalid_json"),
        ((403, "blocked_account"), "blocked_account"),
        ((404, None), ""),  # no body at all
        ((415, None), ""),
        ((503, None), ""),
    ],
)
def test_error_answers_from_the_simulator(
    sim: Simulator,
    sim_plan: PlanConfig,
    client: SinchClient,
    forced: tuple[int, str | None],
    code: str,
) -> None:
    sim.faults.plan_errors = {"p1": forced}
    resp = client.send_batch(sim_plan, body("ref-err"))
    assert (resp.status, resp.code) == (forced[0], code)
    assert resp.error is None and not resp.ambiguous and resp.batch_id is None
    if code:
        assert "forced by the simulator" in resp.text
    no_secret(resp)


def test_wrong_token_is_401_and_never_echoed(sim: Simulator, client: SinchClient) -> None:
    sim.add_plan(PlanSpec("p1", "the-right-token", 100))
    resp = client.send_batch(plan_at(sim.url, token=TOKEN), body("ref-401"))
    assert resp.status == 401 and decide(resp).action is Action.CIRCUIT
    no_secret(resp)


def test_429_retry_after_seconds(sim: Simulator, sim_plan: PlanConfig, client: SinchClient) -> None:
    sim.faults.throttle = {"p1": (1, 3.0)}
    resp = client.send_batch(sim_plan, body("ref-429"))
    assert (resp.status, resp.code, resp.retry_after_s) == (429, "too_many_requests", 3.0)
    assert decide(resp).action is Action.RATE_WAIT


def test_429_retry_after_http_date(
    sim: Simulator, sim_plan: PlanConfig, client: SinchClient
) -> None:
    sim.faults.update(throttle={"p1": [1, 5]}, retry_after_http_date=True)
    resp = client.send_batch(sim_plan, body("ref-429-date"))
    assert resp.status == 429
    # The date has one-second resolution: 5 s from the start of the server's second.
    assert resp.retry_after_s is not None and 3.5 <= resp.retry_after_s <= 6.0


def test_dropped_after_creation_is_ambiguous_and_found_by_reference(
    sim: Simulator, sim_plan: PlanConfig, client: SinchClient
) -> None:
    sim.faults.drop_rate = 1.0
    since = datetime.now(UTC)
    resp = client.send_batch(sim_plan, body("ref-dropped"))
    assert resp.status is None and resp.ambiguous and resp.error in ("dropped", "transport")
    assert decide(resp).action is Action.RETRY
    no_secret(resp)
    sim.faults.drop_rate = 0.0
    found = client.find_batch(sim_plan, "ref-dropped", since)
    assert found is not None and found == sim.arrivals("p1")[-1].batch_id
    assert client.find_batch(sim_plan, "ref-never-sent", since) is None


def test_read_timeout_is_ambiguous(sim: Simulator, sim_plan: PlanConfig) -> None:
    sim.faults.latency_ms = 1500
    c = SinchClient(timeout_s=0.3)
    try:
        resp = c.send_batch(sim_plan, body("ref-slow"))
    finally:
        c.close()
    assert resp.status is None and resp.ambiguous and resp.error == "timeout"


def test_connection_refused_is_not_ambiguous(client: SinchClient) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    resp = client.send_batch(plan_at(f"http://127.0.0.1:{port}"), body("ref-refused"))
    assert resp.status is None and not resp.ambiguous and resp.error == "connect"
    assert decide(resp).action is Action.RETRY
    no_secret(resp)


# ----------------------------------------------------------------------------- a tiny server
class _Tiny(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    lookups: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        plan = self.path.split("/")[3]
        if plan == "google":
            self._reply(
                403,
                b'{"error":{"code":403,"message":"","status":"PERMISSION_DENIED","details":[]}}',
            )
        elif plan == "foreign":
            self._reply(409, b'{"message":"conflict"}')
        elif plan == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._reply(418, b"I'm a teapot", "text/plain")

    def do_GET(self) -> None:
        plan = self.path.split("/")[3]
        _Tiny.lookups.append(self.path)
        if plan == "prefix":
            # A filter that matches prefixes: only an exact match on our side is our batch.
            doc = {"count": 1, "batches": [{"id": "B10", "client_reference": "ref.10"}]}
            self._reply(200, json.dumps(doc).encode())
        elif plan == "garbage":
            self._reply(200, b"not json", "text/plain")
        else:
            self._reply(401, b"")


@pytest.fixture
def tiny() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tiny)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_google_shape_over_http_opens_the_circuit(tiny: str, client: SinchClient) -> None:
    resp = client.send_batch(plan_at(tiny, "google"), body("r"))
    assert (resp.status, resp.code) == (403, "PERMISSION_DENIED")
    assert decide(resp).action is Action.CIRCUIT


def test_unknown_status_keeps_raw_body(tiny: str, client: SinchClient) -> None:
    teapot = client.send_batch(plan_at(tiny, "teapot"), body("r"))
    assert (teapot.status, teapot.code, teapot.text) == (418, "", "I'm a teapot")
    foreign = client.send_batch(plan_at(tiny, "foreign"), body("r"))
    assert (foreign.status, foreign.text) == (409, '{"message":"conflict"}')
    for resp in (teapot, foreign):
        rule = decide(resp)
        assert (rule.action, rule.reason) == (Action.DEAD, "permanent")


def test_connection_dropped_before_answer_is_ambiguous(tiny: str, client: SinchClient) -> None:
    resp = client.send_batch(plan_at(tiny, "drop"), body("r"))
    assert resp.status is None and resp.ambiguous
    assert resp.error in ("dropped", "transport")
    no_secret(resp)


def test_lookup_matches_the_reference_exactly(tiny: str, client: SinchClient) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    assert client.find_batch(plan_at(tiny, "prefix"), "ref.1", since) is None
    assert client.find_batch(plan_at(tiny, "prefix"), "ref.10", since) == "B10"
    # The query covers the first attempt: start_date is before it, the filter is sent.
    path = _Tiny.lookups[-1]
    assert "client_reference=ref.10" in path and "start_date=" in path


def test_lookup_failures_raise_without_secrets(tiny: str, client: SinchClient) -> None:
    since = datetime.now(UTC)
    for plan_id in ("garbage", "denied"):
        with pytest.raises(LookupFailed) as info:
            client.find_batch(plan_at(tiny, plan_id), "ref", since)
        assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LookupFailed) as info:
        client.find_batch(plan_at(f"http://127.0.0.1:{port}"), "ref", since)
    assert TOKEN not in str(info.value)


_docs = st.dictionaries(
    st.sampled_from(["id", "to", "from", "body", "client_reference"]),
    st.one_of(st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3), st.none()),
    max_size=5,
)


@given(doc=_docs, id_first=st.booleans(), compact=st.booleans())
def test_batch_id_of_agrees_with_a_full_parse(
    doc: dict[str, Any], id_first: bool, compact: bool
) -> None:
    """The fast path (a body starting with the id) answers what parsing the body would."""
    if id_first and "id" in doc:
        doc = {"id": doc["id"], **{k: v for k, v in doc.items() if k != "id"}}
    body = json.dumps(doc, separators=(",", ":") if compact else None, ensure_ascii=False)
    raw = body.encode()
    want = doc.get("id")
    assert batch_id_of(raw) == (str(want or "") or None)


def test_batch_id_of_a_body_that_is_not_an_object() -> None:
    assert batch_id_of(b"[1, 2]") is None
    assert batch_id_of(b"not json") is None
    assert batch_id_of(b"") is None


class _Proxy(BaseHTTPRequestHandler):
    """An HTTP proxy that answers itself: it records the absolute URI a proxied request names."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers.get("Content-Type")))
        out = b'{"id":"via-proxy"}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_proxy_the_environment_names_carries_the_batches(
    sim: Simulator, sim_plan: PlanConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send_batch goes to the client's transport directly; it must still pick the one the
    client would (HTTP_PROXY / HTTPS_PROXY), as users behind a proxy rely on."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        c = SinchClient(timeout_s=2.0, connect_timeout_s=1.0)
        try:
            resp = c.send_batch(sim_plan, body("ref-proxied"))
        finally:
            c.close()
    finally:
        server.shutdown()
        server.server_close()
    assert resp.status == 201 and resp.batch_id == "via-proxy"
    assert _Proxy.seen == [(sim_plan.batches_url, "application/json")]
    assert sim.arrivals("p1") == []
