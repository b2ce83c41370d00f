"""Keep a Celery worker alive when its Redis broker goes away (kombu 5.6/5.7, no upstream fix).

The failure, traced in celery 5.7.0 / kombu 5.7.0 (issue 16): when the broker dies while a
consumer channel has a BRPOP outstanding, ``Consumer.on_connection_error_after_connected``
calls ``connection.collect()``, which releases the transport (``transport.client = None``)
but leaves that channel half-closed.  The ``connection.close()`` that follows closes the channel
again; restoring its unacknowledged messages asks the channel for a connection pool, and
``Channel._connparams`` reads ``self.connection.client.hostname``: an ``AttributeError`` on
``None``.  That is not one of the transport's connection errors, so it escapes the consumer's
recovery and Celery exits with "Unrecoverable error".  The late ack of the drain that was running
then fails the same way.  Kombu #582 reported the same error in 2016; celery 5.7's extra close
(celery PR #10242) made it reachable on every broker restart with idle slots.

The fix is at that point, and nowhere else: a channel whose transport has been released raises
``redis.ConnectionError``, which kombu already treats as recoverable.  The consumer then
reconnects as it does after any other connection error; the unacknowledged drain messages stay
in Redis's unacked set and are redelivered after the visibility timeout.  That is safe for
exactly-once, which never rests on task delivery: a drain is only a request to look at a plan,
and it sends nothing unless it holds the plan's fenced lease, so a redelivered drain re-drains
the plan or finds it busy.

``install()`` is called by the worker's Celery app, not at import: it changes kombu's class for
the whole process, which only the worker process should ask for.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("dispatcher.worker")

_MARK = "_dispatcher_guarded"


def install() -> bool:
    """Guard ``kombu.transport.redis.Channel._connparams``; True if this call installed it."""
    channel: Any = kombu_redis.Channel
    original = channel._connparams
    if getattr(original, _MARK, False):
        return False

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis.ConnectionError("channel used after its broker connection was released")
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _MARK, True)
    _connparams.__wrapped__ = original  # type: ignore[attr-defined]
    channel._connparams = _connparams
    return True
