"""The one place a Redis URL becomes a client: plain Redis, TLS, ACL users, or Redis Cluster.

``redis://`` and ``rediss://`` (and ``unix://``) give a ``redis.Redis``; ``redis+cluster://``
and ``rediss+cluster://host:port[,host:port...]`` give a ``redis.cluster.RedisCluster`` that
learns the slot map from any seed node that answers.  Everything else about the URL (``user:
password@``, the ``ssl_*`` query parameters) means the same in both forms.

A cluster client is typed as ``redis.Redis`` on purpose: it speaks the same commands, and the
few places where a cluster differs (no scripts or ``TIME`` inside a pipeline, a transaction
only within one slot) ask :func:`is_cluster` and are kept next to the code they change, so the
rest of the storage code has one client type.  redis-py's cluster client follows ``MOVED`` and
``ASK``, re-reads the slot map after a failover, and :class:`redis.commands.core.Script` loads a
script again (on every primary) when a node answers ``NOSCRIPT``.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from dispatcher.errors import ConfigError, RedisUnavailable

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)

_SSL_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_ca_path")


class _ClusterUnreachable(RedisUnavailable, redis.ConnectionError):
    """No seed node of a cluster URL answered when the client was built.

    Both a :class:`DispatcherError` (for callers of the API) and a ``redis.ConnectionError``
    (so the worker's outage handling, which waits for Redis, treats it like any other outage).
    """

    def __repr__(self) -> str:  # redis-py's repr reads attributes its own __init__ sets
        return f"{type(self).__name__}({str(self)!r})"


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_cluster(client: object) -> bool:
    """True for a client built from a cluster URL (or any RedisCluster, or its pipeline)."""
    return isinstance(client, RedisCluster)


def seeds(url: str) -> list[tuple[str, int]]:
    """The seed nodes of a cluster URL, in order; ConfigError (one line) when malformed."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    out: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                [f"redis_url: cluster seed {part.strip()!r} is not host:port"]  # no password
            )
        out.append((host.strip("[]"), int(port)))
    return out


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; ``options`` are redis-py connection options (timeouts, ...)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    parts = urlsplit(url)
    creds = parts.netloc.rpartition("@")[0]
    user, _, password = creds.partition(":")
    kwargs: dict[str, Any] = dict(options)
    if user:
        kwargs["username"] = unquote(user)
    if password:
        kwargs["password"] = unquote(password)
    if parts.scheme.lower() == "rediss+cluster":
        kwargs["ssl"] = True
    for key, value in parse_qsl(parts.query):
        if key in _SSL_PARAMS:
            kwargs[key] = value
    # Many health checks per node would only add round trips; the cluster client reconnects
    # (and re-reads the slot map) on any connection error anyway.
    kwargs.pop("health_check_interval", None)
    nodes = [ClusterNode(host, port) for host, port in seeds(url)]  # type: ignore[no-untyped-call]
    try:
        client = RedisCluster(startup_nodes=nodes, **kwargs)
    except (RedisClusterException, redis.RedisError) as exc:
        # The message names the failure only: redis-py's may hold the seeds' addresses, never
        # the password, but one rule for every URL error is simpler to keep.
        raise _ClusterUnreachable(
            f"cannot reach the Redis Cluster at any of its {len(nodes)} seed node(s) "
            f"({exc.__class__.__name__})"
        ) from None
    return cast(redis.Redis, client)
