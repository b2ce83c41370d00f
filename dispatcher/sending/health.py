"""A worker's liveness, as a file a supervisor can check without Redis or the broker.

A liveness probe must not depend on Redis: during a Redis outage every worker is healthy and
waiting, and a probe that asked Redis would have Kubernetes restart them all at once for
nothing.  What does mean a worker is broken is a ticker thread that stopped, or a worker whose
main process is wedged.  So the ticker rewrites a small JSON file on every pass, whether Redis
answers or not, and ``dispatcher health`` (or any probe that reads an mtime) checks its age.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEALTH_FILE_ENV = "DISPATCH_HEALTH_FILE"
DEFAULT_MAX_AGE_S = 30.0


def default_path() -> Path:
    """``$DISPATCH_HEALTH_FILE``, else one file per machine in the temp folder.

    Several worker hosts on one machine each set their own (as they do their metrics port).
    """
    return Path(
        os.environ.get(HEALTH_FILE_ENV) or Path(tempfile.gettempdir()) / "dispatcher-worker.health"
    )


class Heartbeat:
    """Written by the ticker; cheap enough for every pass (at most one write a second)."""

    def __init__(self, path: Path, hostname: str, *, every_s: float = 1.0) -> None:
        self.path = path
        self.hostname = hostname
        self.every_s = every_s
        self._last = 0.0

    def beat(self, *, redis_up: bool, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        data = {"pid": os.getpid(), "hostname": self.hostname, "at": time.time(), "redis": redis_up}
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a full or read-only disk must not stop sending; the probe will say so

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str
    age_s: float | None
    detail: dict[str, Any]


def check(path: Path, max_age_s: float = DEFAULT_MAX_AGE_S) -> Health:
    """Healthy when the file was rewritten within ``max_age_s`` by a process that still runs."""
    try:
        raw = path.read_text()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return Health(False, f"no heartbeat file at {path} (is a worker running?)", None, {})
    try:
        detail: dict[str, Any] = json.loads(raw)
    except ValueError:
        detail = {}
    if age > max_age_s:
        return Health(
            False, f"the ticker last beat {age:.0f} s ago (limit {max_age_s:.0f} s)", age, detail
        )
    pid = detail.get("pid")
    if isinstance(pid, int) and not _running(pid):
        return Health(False, f"the worker (pid {pid}) that wrote {path} is gone", age, detail)
    state = "Redis up" if detail.get("redis") else "Redis unreachable, waiting"
    return Health(True, f"ticker beat {age:.1f} s ago ({state})", age, detail)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
