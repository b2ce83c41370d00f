"""The HTTP server of `dispatcher callbacks`, over real sockets against a real redis-server:
keep-alive (many callbacks on one connection, each counted once), chunked bodies, a 10 MB body
refused with a counted 4xx and no change, HTTP/1.0 and `Connection: close` honoured, and a bug
in the application answered 500 without taking the server down."""

from __future__ import annotations

import http.client
import json
import socket
import tomllib
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis

from dispatcher import Campaign, Dispatcher, Settings
from dispatcher.callbacks import make_wsgi_app
from dispatcher.callbacks.server import Server, make_server, serve_in_thread
from dispatcher.callbacks.tokens import plan_token
from dispatcher.devtools.localredis import LocalRedis
from dispatcher.storage import keys
from tests.support.numbers import mobiles

PLAN = "acme"
SECRET = "srv-s3cr3t-value"
PATH = f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}"


def _settings(redis_url: str) -> Settings:
    return Settings.from_mapping(
        tomllib.loads(
            f'redis_url = "{redis_url}"\ncallback_base_url = "https://hooks.example.com"\n'
            f'[plans.{PLAN}]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 10\n'
        ),
        env={"T": "tok", "DISPATCH_CALLBACK_SECRET": SECRET},
    )


@pytest.fixture
def served(redis_server: LocalRedis, r: redis.Redis) -> Iterator[tuple[Server, Dispatcher]]:
    cfg = _settings(redis_server.url)
    server = make_server("127.0.0.1", 0, make_wsgi_app(cfg, r))
    serve_in_thread(server)
    yield server, Dispatcher(cfg, r)
    server.shutdown()
    server.server_close()


def _report(cid: str, number: str, status: str = "Delivered") -> bytes:
    return json.dumps({
        "type": "recipient_delivery_report_sms", "batch_id": "PB1",
        "client_reference": f"{cid}.0", "recipient": number, "code": 0, "status": status,
    }).encode()  # fmt: skip


def _raw(port: int, request: bytes, *, shut: bool = True) -> bytes:
    """Send bytes, read until the server closes: the whole exchange as the wire saw it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_many_callbacks_on_one_keep_alive_connection_each_counted_once(
    served: tuple[Server, Dispatcher],
) -> None:
    server, d = served
    nums = mobiles(5, seed=11)
    cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=nums))
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    socks = set()
    for n in nums + nums:  # every report twice, as Sinch's retries do
        conn.request("POST", PATH, _report(cid, n), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {"ok": True})
        assert resp.getheader("Connection") is None
        socks.add(id(conn.sock))
    conn.close()
    assert len(socks) == 1  # one connection served all ten
    assert d.status(cid).delivery["delivered"] == 5


def test_a_chunked_body_is_read_whole(served: tuple[Server, Dispatcher]) -> None:
    server, d = served
    (num,) = mobiles(1, seed=12)
    cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=[num]))
    body = _report(cid, num, "FAILED")
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    head = f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    out = _raw(
        server.server_port,
        head.encode() + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks
        + b"0\r\n\r\n",
    )  # fmt: skip
    assert out.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in out
    assert d.status(cid).delivery["failed"] == 1


def test_a_10_mb_body_gets_a_counted_4xx_and_changes_nothing(
    served: tuple[Server, Dispatcher], r: redis.Redis
) -> None:
    server, d = served
    nums = mobiles(2, seed=13)
    cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=nums))
    before = r.hgetall(keys.campaign(PLAN, cid))
    big = b" " * (10 * 1024 * 1024)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(big)}\r\n\r\n"
    )
    out = _raw(server.server_port, head.encode() + big, shut=False)
    status = int(out.split(b" ", 2)[1])
    assert 400 <= status < 500 and status != 429, out[:80]  # one Sinch does not retry
    assert b"Connection: close" in out.split(b"\r\n\r\n", 1)[0]
    assert r.hgetall(keys.campaign(PLAN, cid)) == before
    assert int(r.hget(keys.stats(PLAN), "cb:unknown:invalid") or 0) == 1
    # and the server still serves
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    conn.request("POST", PATH, _report(cid, nums[0]), {"Content-Type": "application/json"})
    assert conn.getresponse().status == 200
    conn.close()


def test_http_1_0_and_connection_close_get_one_answer_then_the_close(
    served: tuple[Server, Dispatcher],
) -> None:
    server, _ = served
    for request in (
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ):
        out = _raw(server.server_port, request, shut=False)  # returns only once the server closes
        assert out.count(b"HTTP/1.1 ") == 1 and out.startswith(b"HTTP/1.1 200 ")
        assert out.endswith(b'{"ok": true}')


def test_a_bug_in_the_application_is_a_500_and_the_server_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        calls.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("bug")
        start_response("204 No Content", [("X-Test", "1")])
        return [b""]

    server = make_server("127.0.0.1", 0, app)
    serve_in_thread(server)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("POST", "/boom", b"{}")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (500, b'{"error": "internal error"}')
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("POST", "/fine", b"{}")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("X-Test")) == (204, "1")
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert calls == ["/boom", "/fine"]
    logged = [r.getMessage() for r in caplog.records if r.name == "dispatcher.callbacks"]
    assert logged == ["request failed: RuntimeError: bug"]
    assert not any(r.exc_info for r in caplog.records)  # no traceback with the request in it


def test_while_redis_is_down_callbacks_get_503_and_their_retries_count_once() -> None:
    """Redis SIGKILLed under the running server, then back on the same port from its AOF: the
    callbacks of the outage are refused with 503 (which Sinch retries), and their retries are
    counted once each."""
    with LocalRedis(appendonly=True, appendfsync="always") as own:
        client = redis.Redis.from_url(own.url)
        cfg = _settings(own.url)
        d = Dispatcher(cfg, client)
        nums = mobiles(3, seed=14)
        cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=nums))
        server = make_server("127.0.0.1", 0, make_wsgi_app(cfg, client))
        serve_in_thread(server)
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)

        def post(body: bytes) -> int:
            conn.request("POST", PATH, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status

        stop = json.dumps({"type": "mo_text", "from": "+" + nums[2], "body": "STOP"}).encode()
        try:
            assert post(_report(cid, nums[0])) == 200
            own.crash()
            outage = [_report(cid, nums[0]), _report(cid, nums[1], "Expired"), stop]
            assert [post(b) for b in outage] == [503, 503, 503]  # same connection, still open
            own.start()
            for _ in range(2):  # Sinch's retry, and one more
                assert [post(b) for b in outage] == [200, 200, 200]
        finally:
            conn.close()
            server.shutdown()
            server.server_close()
        delivery = d.status(cid).delivery
        assert (delivery["delivered"], delivery["expired"], sum(delivery.values())) == (1, 1, 2)
        assert d.suppressed(PLAN) == [nums[2]]
        client.close()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /healthz HTTP/1.1\r\nHost t\r\n", 400),  # no colon
        (b"POST /healthz HTTP/1.1\r\nHost: t\r\n folded: on\r\n", 400),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n", 400),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: two\r\n", 400),
        (
            b"POST /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n"
            b"Content-Length: 2\r\n",
            200,
        ),  # the same length twice is one length
        (b"POST /healthz\r\n", 400),
        (b"POST /healthz HTTP/2.0\r\n", 505),
        (b"POST /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101, 431),
    ],
)
def test_a_malformed_request_gets_one_refusal_and_the_close(
    served: tuple[Server, Dispatcher], head: bytes, status: int
) -> None:
    server, _ = served
    out = _raw(server.server_port, head + b"\r\n{}", shut=False)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()) or out.startswith(
        f"HTTP/1.0 {status} ".encode()
    ), out[:60]
    assert out.count(b"HTTP/1.") == 1  # one answer, then the server closed


def test_expect_100_continue_and_header_names_in_any_case(
    served: tuple[Server, Dispatcher],
) -> None:
    server, d = served
    (num,) = mobiles(1, seed=15)
    cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=[num]))
    body = _report(cid, num)
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: t\r\ncontent-TYPE: application/json\r\n"
        f"CONTENT-LENGTH: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
        sock.sendall(head.encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 ")
    assert d.status(cid).delivery["delivered"] == 1
