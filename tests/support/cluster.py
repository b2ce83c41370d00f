"""A real local Redis Cluster: 3 primaries and 3 replicas on free loopback ports.

Started with ``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``, as an
operator would; ``cluster-node-timeout`` is short so that a killed primary's replica takes over
within a few seconds.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from dispatcher.devtools.localredis import find_redis_server, free_port

NODE_TIMEOUT_MS = 2000


def cluster_support() -> str | None:
    if shutil.which("redis-cli") is None:
        return "no redis-cli on PATH to create a Redis Cluster"
    try:
        find_redis_server()
    except Exception as exc:
        return str(exc)
    return None


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


class LocalCluster:
    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        self.primaries, self.replicas = primaries, replicas
        self.ports = [_cluster_port() for _ in range(primaries * (1 + replicas))]
        self._dir = tempfile.TemporaryDirectory(prefix="dispatcher-cluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Two seeds: the client learns the rest from whichever answers."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def _start(self, port: int) -> None:
        d = Path(self._dir.name) / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "",
                # A replica of an idle primary may look stale to Redis 7.0 right after the
                # cluster is created; a test cluster always lets the replica take over.
                "--cluster-replica-validity-factor", "0", "--repl-ping-replica-period", "1",
                "--repl-diskless-sync-delay", "0",
                "--appendonly", "no", "--dir", str(d), "--logfile", str(d / "redis.log"),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> LocalCluster:
        for port in self.ports:
            self._start(port)
        for port in self.ports:
            self._wait_ping(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        self.wait_replicas()
        return self

    def wait_replicas(self, timeout: float = 30) -> None:
        """Every replica has finished its first sync: before that, a killed primary's replica
        would take over with none of its data."""
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            port = pending[0]
            c = self._node(port)
            try:
                info = c.info("replication")
            finally:
                c.close()
            if info.get("role") == "master" or info.get("master_link_status") == "up":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {port} did not finish its first sync")
            time.sleep(0.1)

    def _wait_ping(self, port: int, timeout: float = 10) -> None:
        c = redis.Redis(port=port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    c.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {port} did not start") from None
                    time.sleep(0.05)
        finally:
            c.close()

    def _node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2)

    def wait_ok(self, timeout: float = 30) -> None:
        """Every live node says ``cluster_state:ok`` and sees every slot covered."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    continue
                c = self._node(port)
                try:
                    info = c.cluster("info")
                    states.append(info.get("cluster_state") == "ok")
                except redis.RedisError:
                    states.append(False)
                finally:
                    c.close()
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.2)

    def primary_of(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot now."""
        c = self._node(next(p for p, proc in self.procs.items() if proc.poll() is None))
        try:
            slot = int(c.cluster("keyslot", key))
            for start, end, primary, *_ in c.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            c.close()
        raise RuntimeError(f"no primary serves slot of {key!r}")

    def kill(self, port: int) -> None:
        """SIGKILL one node (no failover handshake): its replica must take over on its own."""
        proc = self.procs[port]
        proc.kill()
        proc.wait()

    def flushall(self) -> None:
        for port, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            c = self._node(port)
            try:
                if c.execute_command("ROLE")[0] == b"master":
                    c.flushall()
            finally:
                c.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._dir.cleanup()
