"""Is the state Redis configured so that the guarantees can hold?  Checked when a worker starts.

Two settings decide it (docs/operations.md):
- eviction: a Redis that evicts keys under memory pressure silently drops lanes, batches and
  fencing tokens, which loses recipients and can send twice.  A worker refuses to start on a
  Redis that has a memory limit and an evicting policy, and warns when the policy evicts but no
  limit is set yet (one ``CONFIG SET maxmemory`` away from data loss);
- persistence: without AOF a Redis restart forgets every queued campaign, and with
  ``appendfsync everysec`` a crash may lose the last second of writes.  Those are warnings:
  a demo or a test may knowingly run without them.

Managed Redis often refuses ``CONFIG GET``; ``INFO`` is enough for the eviction check, and
what cannot be read is said, not guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import redis

from dispatcher.storage.connect import is_cluster

log = logging.getLogger("dispatcher.worker")


@dataclass(frozen=True)
class Finding:
    level: Literal["fatal", "warning"]
    message: str


def check(client: redis.Redis) -> list[Finding]:
    """What is wrong with the state Redis for this dispatcher; empty when nothing is.

    On a cluster every primary holds part of the state, so each is checked (its findings
    name it); a replica is checked once it is promoted, when the worker checks again.
    """
    if is_cluster(client):
        found: list[Finding] = []
        for node in client.get_primaries():  # type: ignore[attr-defined]
            conn = client.get_redis_connection(node)  # type: ignore[attr-defined]
            found += [Finding(f.level, f"{node.name}: {f.message}") for f in check(conn)]
        return found
    info = client.info()  # the default sections hold both memory and persistence: one call
    policy = str(info.get("maxmemory_policy", "noeviction"))
    limit = int(info.get("maxmemory", 0) or 0)
    found = []
    if policy != "noeviction":
        if limit > 0:
            found.append(
                Finding(
                    "fatal",
                    f"Redis evicts keys (maxmemory-policy {policy}, maxmemory {limit} bytes): "
                    "queued recipients would be lost; set maxmemory-policy noeviction",
                )
            )
        else:
            found.append(
                Finding(
                    "warning",
                    f"Redis has maxmemory-policy {policy}: once a maxmemory is set it will evict "
                    "queued recipients; set maxmemory-policy noeviction",
                )
            )
    if not int(info.get("aof_enabled", 0) or 0):
        found.append(
            Finding(
                "warning",
                "Redis runs without AOF (appendonly no): a Redis restart loses every queued "
                "campaign; see docs/operations.md",
            )
        )
    else:
        try:
            fsync = str(client.config_get("appendfsync").get("appendfsync", ""))
        except redis.ResponseError:
            fsync = ""  # CONFIG is disabled (managed Redis): nothing to say
        if fsync and fsync != "always":
            found.append(
                Finding(
                    "warning",
                    f"Redis has appendfsync {fsync}: a Redis crash may lose the last second of "
                    "writes, and a batch posted in that second may be posted again; "
                    "see docs/operations.md",
                )
            )
    return found


def report(client: redis.Redis) -> bool:
    """Log every finding; False when one is fatal (the caller must not start)."""
    findings = check(client)
    for f in findings:
        (log.critical if f.level == "fatal" else log.warning)("%s", f.message)
    return not any(f.level == "fatal" for f in findings)
