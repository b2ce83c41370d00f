"""What every storage API raises: the library's errors, never redis-py's.

Like ``limits.storage.base``, the backend's failures are wrapped where the backend is called,
so callers catch :class:`StorageError` (or its :class:`RedisUnavailable`) without importing
``redis``; the message names the failure, never the URL (it may hold a password).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis

from dispatcher.errors import RedisUnavailable, StorageError

P = ParamSpec("P")
T = TypeVar("T")


def wraps_redis_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """An outage (no connection, a timeout) becomes :class:`RedisUnavailable`, which callers
    may retry; any other Redis error becomes :class:`StorageError`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis ({exc.__class__.__name__})") from exc
        except redis.RedisError as exc:
            raise StorageError(f"Redis failed: {exc.__class__.__name__}: {exc}") from exc

    return wrapper


def as_text(value: Any) -> str:
    """A Redis reply as ``str``: clients are built without ``decode_responses`` because batch
    bodies are bytes and are POSTed as they are, so every text reply is decoded here."""
    return value.decode() if isinstance(value, bytes) else str(value)
