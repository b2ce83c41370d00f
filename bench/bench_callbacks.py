"""Callbacks ingested per second by one receiver process (`dispatcher callbacks`), with
per-recipient delivery reports, against a private redis-server; beside, in the same run, the
same HTTP server answering without touching Redis (the ceiling of the HTTP stack itself), and
the Redis memory each reported recipient costs."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import ROOT, md_table
from dispatcher import Campaign, Dispatcher, Settings
from dispatcher.callbacks.app import Receiver
from dispatcher.callbacks.tokens import plan_token
from dispatcher.devtools.localredis import LocalRedis, free_port
from sinch_simulator.reporter import Reporter, ReportSettings

SECRET = "bench-secret-0123456789"
THREADS = 4
ROUNDS = 3


def _spread(xs: list[float]) -> str:
    """Median (min-max) of the rounds: on shared cores one round can be half another."""
    xs = sorted(xs)
    return f"{xs[len(xs) // 2]:,.0f} ({xs[0]:,.0f}-{xs[-1]:,.0f})"


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "callbacks", "--port", str(port),
         "--host", "127.0.0.1"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("receiver did not start")


def _post_all(port: int, path: str, bodies: list[bytes]) -> float:
    """Callbacks/s over THREADS keep-alive connections.  The client is a few lines on a raw
    socket, not httpx: on a shared 2-core machine httpx's own cost per request capped the
    figure below the server's, so the bench measured the client."""
    chunks = [bodies[i::THREADS] for i in range(THREADS)]
    errors: list[bytes] = []

    def worker(part: list[bytes]) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            replies = sock.makefile("rb")
            for b in part:
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(b)}\r\n\r\n"
                )
                sock.sendall(head.encode() + b)
                status, length = replies.readline(), 0
                while (line := replies.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                replies.read(length)
                if b" 200 " not in status:
                    errors.append(status)

    threads = [threading.Thread(target=worker, args=(p,)) for p in chunks]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise RuntimeError(f"{len(errors)} callbacks refused, e.g. {errors[0]!r}")
    return len(bodies) / elapsed


def _simulator_rate(url: str, n: int) -> float:
    """How fast the simulator's reporter posts per-recipient reports to ``url`` (one thread,
    as the simulator runs it), timed from the first post to the last answer."""
    rep = Reporter(random.Random(1), ReportSettings(delay_s=0.0))
    try:
        doc = {"delivery_report": "per_recipient", "callback_url": url}
        t = time.perf_counter()
        rep.accepted("bench", doc, "B", [f"4671{i:07d}" for i in range(n)])
        while rep.pending() or rep.delivered_posts + rep.failed_posts < n:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t
    finally:
        rep.close()
    return n / elapsed


def _direct(d: Dispatcher, client: redis.Redis, n: int) -> tuple[list[float], int]:
    """The receiver's own cost per callback (parse, token, the one Lua call), without the HTTP
    server and its threads: what one core could ingest if HTTP were free."""
    receiver = Receiver(d.settings, client)
    path = f"/callbacks/bench/{plan_token(SECRET, 'bench')}"
    rates: list[float] = []
    counted = 0
    for r in range(ROUNDS):
        numbers = [f"468{r}{i:07d}" for i in range(n)]
        cid = d.enqueue(Campaign(plan="bench", sender="Bench", body="Hi", recipients=numbers))
        bodies = [
            json.dumps({
                "type": "recipient_delivery_report_sms", "batch_id": "B",
                "client_reference": f"{cid}.{i // 1000}", "recipient": num, "code": 0,
                "status": "Delivered",
            }).encode()
            for i, num in enumerate(numbers)
        ]  # fmt: skip
        t = time.perf_counter()
        for body in bodies:
            receiver.handle("POST", path, lambda body=body: body)
        rates.append(n / (time.perf_counter() - t))
        counted += d.status(cid).delivery["delivered"]
    return rates, counted


def run(quick: bool = False) -> str:
    n = 2_000 if quick else 20_000
    rows: list[list[Any]] = []
    with LocalRedis() as server, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "dispatch.toml"
        cfg.write_text(
            f'redis_url = "{server.url}"\ncallback_base_url = "http://127.0.0.1:{port}"\n'
            '[plans.bench]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 100\n'
        )
        env = {
            **os.environ,
            "DISPATCH_CONFIG": str(cfg),
            "T": "t",
            "DISPATCH_CALLBACK_SECRET": SECRET,
        }
        client = redis.Redis.from_url(server.url)
        d = Dispatcher(Settings.load(cfg, env=env), client)
        campaigns: list[tuple[str, list[bytes]]] = []
        for r in range(ROUNDS):
            numbers = [f"467{r}{i:07d}" for i in range(n)]
            cid = d.enqueue(Campaign(plan="bench", sender="Bench", body="Hi", recipients=numbers))
            campaigns.append((cid, [
                json.dumps({
                    "type": "recipient_delivery_report_sms", "batch_id": "B",
                    "client_reference": f"{cid}.{i // 1000}", "recipient": num, "code": 0,
                    "status": "Delivered",
                }).encode()
                for i, num in enumerate(numbers)
            ]))  # fmt: skip
        before = int(client.info("memory")["used_memory"])
        proc = _serve(env, port)
        rates: list[float] = []
        ceilings: list[float] = []
        simulated: list[float] = []
        try:
            path = f"/callbacks/bench/{plan_token(SECRET, 'bench')}"
            for _, bodies in campaigns:  # alternating, so a neighbour's load hits every row
                rates.append(_post_all(port, path, bodies))
                ceilings.append(_post_all(port, "/healthz", bodies[: n // 2]))
                simulated.append(_simulator_rate(f"http://127.0.0.1:{port}/healthz", n // 10))
        finally:
            proc.terminate()
            proc.wait(10)
        after = int(client.info("memory")["used_memory"])
        counted = sum(d.status(cid).delivery["delivered"] for cid, _ in campaigns)
        rows.append([
            "per-recipient reports, ingested", f"{n:,}", _spread(rates), f"{counted:,}",
            f"{(after - before) / (n * ROUNDS):.0f}",
        ])  # fmt: skip
        rows.append(
            ["the same server, no Redis (`/healthz`)", f"{n // 2:,}", _spread(ceilings), "-", "-"]
        )
        rows.append([
            "the simulator's reporter posting to `/healthz`", f"{n // 10:,}",
            _spread(simulated), "-", "-",
        ])  # fmt: skip
        direct, direct_counted = _direct(d, client, n // 4)
        rows.append([
            "`Receiver.handle` called in a loop, no HTTP, one thread", f"{n // 4:,}",
            _spread(direct), f"{direct_counted:,}", "-",
        ])  # fmt: skip
    return "\n".join(
        [
            "## Callback receiver",
            "",
            "One `dispatcher callbacks` process (stdlib HTTP/1.1 keep-alive server, a thread per "
            f"connection); {THREADS} client threads, each on one keep-alive connection, post "
            "per-recipient `recipient_delivery_report_sms` callbacks; each is one Lua call in "
            "Redis. The simulator's reporter (one thread, one keep-alive connection) posts "
            f"to the same server in the same run. Per second: median (min-max) of {ROUNDS} "
            "alternating rounds; callbacks: per round. Target: 3,000/s.",
            "",
            md_table(
                [
                    "case",
                    "callbacks",
                    "per second",
                    "counted (all rounds)",
                    "Redis bytes per recipient",
                ],
                rows,
            ),
            "",
        ]
    )
