"""The simulator's callback poster answers to the receiver as Sinch does (API.md 4.7): a 5xx or
no answer is retried, a 429 is retried and slows the posting, any other 4xx is not retried, and
connections are kept alive.  Real HTTP to a scripted receiver; only counts are asserted."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from dispatcher.callbacks.server import Server, make_server, serve_in_thread
from dispatcher.devtools.localredis import free_port
from sinch_simulator import ReportSettings
from sinch_simulator.reporter import Reporter
from tests.support.deploy import wait_until


class Sink:
    """A receiver whose answer to each post is ``answer(body, nth time this body came)``."""

    def __init__(self, answer: Callable[[bytes, int], str]) -> None:
        self.answer = answer
        self.seen: Counter[bytes] = Counter()
        self.ports: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        with self.lock:
            self.seen[body] += 1
            self.ports.add(environ["REMOTE_PORT"])
            status = self.answer(body, self.seen[body])
        headers = [("Content-Type", "application/json")]
        if status.endswith("+close"):
            status, headers = status.removesuffix("+close"), [*headers, ("Connection", "close")]
        start_response(status, headers)
        return [b"{}"]


@pytest.fixture
def serve() -> Iterator[Callable[[Sink], str]]:
    servers: list[Server] = []

    def start(sink: Sink) -> str:
        server = make_server("127.0.0.1", 0, sink)
        serve_in_thread(server)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/cb"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _reporter(**kw: Any) -> Reporter:
    return Reporter(random.Random(3), ReportSettings(delay_s=0.0, retry_base_s=0.01, **kw))


def _send(rep: Reporter, url: str, n: int) -> list[str]:
    numbers = [f"4670{i:07d}" for i in range(n)]
    rep.accepted("p", {"delivery_report": "per_recipient", "callback_url": url}, "B1", numbers)
    return numbers


def test_a_5xx_is_retried_until_a_2xx(serve: Callable[[Sink], str]) -> None:
    sink = Sink(lambda body, nth: "503 Service Unavailable" if nth <= 3 else "200 OK")
    rep = _reporter()
    try:
        _send(rep, serve(sink), 5)
        wait_until(lambda: rep.pending() == 0, 30, "every report answered 2xx")
    finally:
        rep.close()
    assert sorted(sink.seen.values()) == [4] * 5  # three 503s, then the 200
    assert (rep.delivered_posts, rep.failed_posts, rep.refused_posts) == (5, 0, 0)


@pytest.mark.parametrize("status", ["400 Bad Request", "401 Unauthorized", "413 Too Large"])
def test_another_4xx_is_not_retried(serve: Callable[[Sink], str], status: str) -> None:
    sink = Sink(lambda body, nth: status)
    rep = _reporter()
    try:
        _send(rep, serve(sink), 3)
        wait_until(lambda: rep.pending() == 0, 30, "every report answered")
    finally:
        rep.close()
    assert list(sink.seen.values()) == [1, 1, 1]
    assert (rep.delivered_posts, rep.refused_posts) == (0, 3)


def test_a_429_is_retried_and_slows_the_posting(serve: Callable[[Sink], str]) -> None:
    sink = Sink(lambda body, nth: "429 Too Many Requests" if nth == 1 else "200 OK")
    rep = _reporter(slowdown_s=0.01)
    try:
        _send(rep, serve(sink), 4)
        wait_until(lambda: rep.pending() == 0, 30, "every report answered 2xx")
    finally:
        rep.close()
    assert list(sink.seen.values()) == [2] * 4
    assert (rep.delivered_posts, rep.throttled_posts) == (4, 4)


def test_no_answer_is_retried_and_max_tries_ends_it(serve: Callable[[Sink], str]) -> None:
    rep = _reporter(max_tries=3)
    try:
        url = serve(Sink(lambda body, nth: "200 OK"))
        rep.inbound(f"http://127.0.0.1:{free_port()}/cb", "46700000001", "STOP")  # nobody there
        rep.inbound(url, "46700000002", "STOP")
        wait_until(lambda: rep.pending() == 0, 30, "both posts settled")
    finally:
        rep.close()
    assert (rep.delivered_posts, rep.failed_posts) == (1, 1)


def test_connections_are_kept_alive_and_reopened_when_the_receiver_closes(
    serve: Callable[[Sink], str],
) -> None:
    sink = Sink(lambda body, nth: "200 OK")
    rep = _reporter()
    try:
        _send(rep, serve(sink), 50)
        wait_until(lambda: rep.pending() == 0, 30, "every report answered 2xx")
        assert len(sink.ports) == 1  # fifty callbacks, one connection
        closing = Sink(lambda body, nth: "200 OK+close")
        url = serve(closing)
        _send(rep, url, 5)
        wait_until(lambda: rep.pending() == 0, 30, "every report answered 2xx")
    finally:
        rep.close()
    assert len(closing.ports) == 5 and sum(closing.seen.values()) == 5
    assert rep.delivered_posts == 55
    bodies = [json.loads(b) for b in sink.seen]
    assert {b["type"] for b in bodies} == {"recipient_delivery_report_sms"}


def test_late_callbacks_wait_for_late_s(serve: Callable[[Sink], str]) -> None:
    sink = Sink(lambda body, nth: "200 OK")
    url = serve(sink)
    late = _reporter(late_ratio=1.0, late_s=3600.0)
    on_time = _reporter(late_ratio=0.0)
    try:
        _send(late, url, 4)
        _send(on_time, url, 3)
        wait_until(lambda: on_time.pending() == 0, 30, "the on-time reports answered")
        assert (late.pending(), late.delivered_posts, on_time.delivered_posts) == (4, 0, 3)
    finally:
        late.close()
        on_time.close()
