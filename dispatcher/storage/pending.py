"""A script call written to Redis now and its reply read later.

Why: the strict send loop's one round trip per batch (commit the batch just answered, take the
one after the next) need not wait between two POSTs.  Written before a POST and read after it,
the script runs in Redis while the provider answers, on the caller's own thread: a second
thread for the POST only traded the wait for the GIL (docs/benchmarks.md).

The call holds a connection of the client's pool until its reply is read or it is closed.  A
cluster client, whose connection depends on the key's slot, runs the call at once instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

T = TypeVar("T")


class Pending(Generic[T]):
    """One script call in flight; ``result()`` reads and decodes its reply (once)."""

    def __init__(
        self,
        client: redis.Redis,
        script: Script,
        keys: list[str],
        args: list[Any],
        decode: Callable[[Any], T],
        *,
        at_once: bool,
    ) -> None:
        self._script, self._keys, self._args, self._decode = script, keys, args, decode
        self._conn: Any = None
        self._reply: Any = None
        if at_once:  # a cluster client has no single pool: it picks the key's node per call
            self._reply = script(keys=keys, args=args)
            return
        self._pool = client.connection_pool
        conn: Any = self._pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except BaseException:
            self._pool.release(conn)
            raise
        self._conn = conn

    def result(self) -> T:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._reply = conn.read_response()
            except NoScriptError:
                # A restarted or flushed server: nothing ran; load it and run it now.
                self._reply = self._script(keys=self._keys, args=self._args)
            except BaseException:
                conn.disconnect()  # its reply may still come: no one else may read it
                raise
            finally:
                self._pool.release(conn)
        return self._decode(self._reply)

    def close(self) -> None:
        """Give the connection back unread (the caller stopped before it wanted the reply).
        The script may have run: its effects are the caller's, as for any sent command."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)
