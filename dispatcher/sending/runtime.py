"""Per-process objects of a worker: settings, Redis, the pooled HTTP client, the sender.

Built lazily and rebuilt after a fork, because sockets (Redis, HTTP keep-alive) must never be
shared between Celery's prefork children.
"""

from __future__ import annotations

import os
import threading

import redis

from dispatcher.config import Settings
from dispatcher.sending.drain import Sender, Timing
from dispatcher.sending.policy import Backoff
from dispatcher.sinch.client import SinchClient
from dispatcher.storage.connect import connect


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = -1
        self._lock = threading.Lock()
        self._sender: Sender | None = None
        self._redis: redis.Redis | None = None

    def _ensure(self) -> None:
        if self._pid != os.getpid() or self._sender is None:
            with self._lock:
                if self._pid != os.getpid() or self._sender is None:
                    w = self.settings.worker
                    self._redis = connect(
                        self.settings.redis_url,
                        socket_timeout=w.redis_socket_timeout_s,
                        health_check_interval=30,
                    )
                    http = SinchClient(
                        timeout_s=w.http_timeout_s, connect_timeout_s=w.http_connect_timeout_s
                    )
                    self._sender = Sender(
                        self.settings,
                        self._redis,
                        http,
                        backoff=Backoff.from_config(w),
                        timing=Timing.from_config(w),
                    )
                    self._pid = os.getpid()

    @property
    def redis(self) -> redis.Redis:
        self._ensure()
        assert self._redis is not None
        return self._redis

    @property
    def sender(self) -> Sender:
        self._ensure()
        assert self._sender is not None
        return self._sender
