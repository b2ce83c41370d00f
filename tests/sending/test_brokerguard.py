"""The kombu failure behind issue 16, reproduced with kombu alone against a real redis-server.

The sequence is what ``Consumer.on_connection_error_after_connected`` does after the broker dies
while a channel has a BRPOP outstanding: ``collect()``, then ``close()``.  Unguarded, the close
raises ``AttributeError`` (not a connection error, so Celery exits); guarded, it is a
``redis.ConnectionError`` that kombu's ``ignore_errors`` swallows, and the consumer reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Queue
from kombu.common import ignore_errors
from kombu.message import Message
from kombu.transport import redis as kombu_redis

from dispatcher.devtools.localredis import LocalRedis
from dispatcher.sending import brokerguard


def _kill_broker_with_a_brpop_outstanding() -> tuple[Connection, Message]:
    server = LocalRedis(appendonly=True).start()
    conn = Connection(server.url, transport_options={"visibility_timeout": 120})
    queue = Queue("guard-q")
    with conn.Producer() as producer:
        producer.publish({"plan": "p1"}, routing_key="guard-q", declare=[queue])
    got: list[Message] = []
    channel = conn.default_channel
    conn.Consumer(
        [queue], callbacks=[lambda _b, m: got.append(m)], channel=channel, prefetch_count=4
    ).consume()
    # A second channel with an auto-delete fanout queue, like Celery's pidbox.
    fanout = Queue(
        "guard-bcast", Exchange("guard-bx", type="fanout"), auto_delete=True, exclusive=True
    )
    conn.Consumer([fanout], channel=conn.channel(), callbacks=[lambda _b, _m: None]).consume()
    for _ in range(20):
        if got:
            break
        conn.drain_events(timeout=0.5)
    assert got, "the message was not delivered"
    channel._brpop_start()  # the idle slot's outstanding BRPOP
    server.crash()
    server.stop()
    ignore_errors(conn, lambda: conn.collect(socket_timeout=5.0))
    return conn, got[0]


@pytest.fixture
def unguarded() -> Iterator[None]:
    """Run one test with kombu as shipped, then put back whatever was there."""
    channel = kombu_redis.Channel
    saved = channel._connparams
    channel._connparams = getattr(saved, "__wrapped__", saved)
    yield
    channel._connparams = saved


def test_unguarded_kombu_raises_attribute_error_on_close(unguarded: None) -> None:
    conn, _ = _kill_broker_with_a_brpop_outstanding()
    with pytest.raises(AttributeError, match="hostname"):
        ignore_errors(conn, conn.close)


def test_guarded_close_and_late_ack_are_recoverable_connection_errors() -> None:
    brokerguard.install()
    assert brokerguard.install() is False, "installing twice wraps once"
    conn, message = _kill_broker_with_a_brpop_outstanding()
    ignore_errors(conn, conn.close)  # nothing escapes
    # The drain's late ack after the loss: logged and swallowed by kombu, not raised.
    message.ack_log_error(logging.getLogger("test"), conn.connection_errors)
