"""Per-host serving of the per-process latency histograms (prometheus-client multiprocess mode).

Celery's prefork pool runs the sends in child processes.  A metrics server started inside each
child would let only the first one bind the port, and Prometheus would see one child's numbers
as if they were the host's.  So every child observes into its own files in
``PROMETHEUS_MULTIPROC_DIR`` and the pool's parent serves one registry that adds them up.

The order of events matters, and ``dispatcher.sending.app`` wires it:

1. ``worker_init`` (parent, before the pool forks, and before anything imports
   prometheus-client, which picks file-backed values at its first import):
   :func:`claim_dir` points ``PROMETHEUS_MULTIPROC_DIR`` at a private temporary directory
   (:data:`PRIVATE_PREFIX`) unless the operator set one;
2. the same call wipes the files of an earlier run of this host, which would otherwise be added
   to this run's counts forever;
3. ``worker_ready`` (parent, pool running): :func:`start_server` on
   ``DISPATCH_WORKER_METRICS_PORT`` (default 9809, 0 disables);
4. ``worker_process_shutdown`` (a child exiting): :func:`child_exited`;
5. ``worker_shutdown`` (parent): :func:`stop_server`, which also removes a private directory.

Private directories of workers that died without step 5 (SIGKILL) are swept by the next
worker that starts on the host (:func:`sweep_orphans`).

The directory must belong to one worker host process.  :func:`claim_dir` holds an advisory
lock on it, so a second worker pointed at the same directory keeps the first one's files
instead of wiping them (and says so).

prometheus-client is imported inside the functions, never at module level, so that importing
this module can never fix the value class too early.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from wsgiref.simple_server import WSGIServer

log = logging.getLogger("dispatcher.observability.procmetrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PORT_ENV = "DISPATCH_WORKER_METRICS_PORT"
DEFAULT_PORT = 9809
PRIVATE_PREFIX = "dispatcher-metrics-"
_LOCK_NAME = ".owner.lock"
ORPHAN_AGE_S = 600.0  # a private directory claimed this long ago by a dead worker is swept

_state_lock = threading.Lock()
_server: WSGIServer | None = None
_lock_file: IO[bytes] | None = None


def multiproc_dir(environ: Mapping[str, str] | None = None) -> str:
    """The operator's ``PROMETHEUS_MULTIPROC_DIR``, or a new private directory.

    For callers that run before prometheus-client is first imported (the worker's start-up).
    """
    env = os.environ if environ is None else environ
    return env.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix=PRIVATE_PREFIX)


def is_private(path: str | os.PathLike[str]) -> bool:
    """True for a directory made by :func:`multiproc_dir` (ours to delete at shutdown)."""
    p = Path(path).resolve()
    return p.name.startswith(PRIVATE_PREFIX) and p.parent == Path(tempfile.gettempdir()).resolve()


def _current_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def multiprocess_active() -> bool:
    """Whether this process's prometheus-client values go to files (multiprocess mode)."""
    from prometheus_client import values

    return bool(values.ValueClass.__name__ == "MmapedValue")


def claim_dir(*, create: bool = False) -> Path | None:
    """Create, lock and empty the directory; call in the worker parent before the pool forks.

    Files left by an earlier run of this host (same directory, dead pids) would be summed into
    every later scrape; a directory another live worker holds is left alone.  ``create`` sets
    ``PROMETHEUS_MULTIPROC_DIR`` to a private directory when the operator gave none: the one
    process-wide change the worker makes, at its own start-up, because prometheus-client reads
    its mode from the environment and nowhere else.
    """
    global _lock_file
    if create and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = multiproc_dir()
    path = _current_dir()
    if path is None:
        log.warning("%s is not set: per-process histograms are not served", MULTIPROC_ENV)
        return None
    if not multiprocess_active():
        log.error(
            "prometheus-client was imported before %s was set; histograms of pool processes "
            "cannot be aggregated (set it before importing dispatcher modules)",
            MULTIPROC_ENV,
        )
    path.mkdir(parents=True, exist_ok=True)
    with _state_lock:
        if _lock_file is None:
            fh = open(path / _LOCK_NAME, "ab")  # noqa: SIM115 - held for the process lifetime
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                log.warning(
                    "%s=%s is in use by another worker process; keeping its files (give each "
                    "worker host its own directory)",
                    MULTIPROC_ENV,
                    path,
                )
                return path
            _lock_file = fh
    removed = 0
    for f in path.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed += 1
    if removed:
        log.info("removed %d stale metrics files from %s", removed, path)
    if is_private(path):
        sweep_orphans(keep=path)
    return path


def sweep_orphans(keep: Path | None = None, min_age_s: float = ORPHAN_AGE_S) -> int:
    """Delete private directories of workers that died without a clean shutdown (SIGKILL,
    OOM): a directory whose owner lock nobody holds any more, claimed long enough ago that
    its owner cannot be between creating the lock and taking it.  Returns how many went.

    A directory without a lock file was never claimed by a worker (some other process
    imported the app); it is left alone, since its process may still write into it.
    """
    root = Path(tempfile.gettempdir())
    keep_resolved = keep.resolve() if keep is not None else None
    swept = 0
    for d in root.glob(PRIVATE_PREFIX + "*"):
        lock = d / _LOCK_NAME
        try:
            if d.resolve() == keep_resolved or time.time() - lock.stat().st_mtime < min_age_s:
                continue
            fh = open(lock, "ab")  # noqa: SIM115 - closed below, after the directory is gone
        except OSError:
            continue  # no lock file, or not ours to open
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue  # its worker (or one of its pool children) is alive
        shutil.rmtree(d, ignore_errors=True)
        fh.close()
        swept += 1
    if swept:
        log.info("removed %d metrics directories of workers that died in %s", swept, root)
    return swept


def port_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The port to serve on, or None when disabled (0) or unusable (logged)."""
    env = os.environ if environ is None else environ
    raw = env.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port < 65536:
        log.error("%s=%r is not a port number; worker metrics are not served", PORT_ENV, raw)
        return None
    return port or None


def start_server(port: int | None = None, addr: str = "0.0.0.0") -> int | None:
    """Serve the host's aggregated histograms; call once, in the worker parent.

    Returns the bound port, or None.  A busy port is logged, never fatal: sending matters more
    than its metrics.
    """
    global _server
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    path = _current_dir()
    if path is None:
        return None
    if port is None:
        port = port_from_env()
        if port is None:
            return None
    with _state_lock:
        if _server is not None:
            return int(_server.server_port)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
        try:
            httpd, _ = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            log.error(
                "cannot serve worker metrics on %s:%d (%s); this host's histograms are not "
                "served (set %s to another port, or 0)",
                addr,
                port,
                exc.strerror or exc,
                PORT_ENV,
            )
            return None
        _server = httpd
    log.info(
        "worker metrics (histograms of all pool processes) on http://%s:%d/metrics", addr, port
    )
    return int(httpd.server_port)


def child_exited(pid: int | None) -> None:
    """Let the aggregation forget the live gauges of a pool process that exited."""
    path = _current_dir()
    if pid is None or path is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def stop_server() -> None:
    """Stop serving and, if the directory is a private one, delete it with its files."""
    global _server, _lock_file
    with _state_lock:
        httpd, _server = _server, None
        fh, _lock_file = _lock_file, None
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()
    path = _current_dir()
    if fh is not None:
        if path is not None and is_private(path):
            shutil.rmtree(path, ignore_errors=True)
        fh.close()
