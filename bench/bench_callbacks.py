"""Callbacks ingested per second by one receiver process (`dispatcher callbacks`), with
per-recipient delivery reports, against a private redis-server; beside, in the same run, the
same HTTP server answering without touching Redis (the ceiling of the HTTP stack itself), and
the Redis memory each reported recipient costs."""

from __future__ import annotations

import json
import os
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
from dispatcher.callbacks.tokens import plan_token
from dispatcher.devtools.localredis import LocalRedis, free_port

SECRET = "bench-secret-0123456789"
THREADS = 4


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


def _post_all(url: str, bodies: list[bytes]) -> float:
    chunks = [bodies[i::THREADS] for i in range(THREADS)]
    errors: list[int] = []

    def worker(part: list[bytes]) -> None:
        with httpx.Client(headers={"Content-Type": "application/json"}, timeout=10) as c:
            for b in part:
                if c.post(url, content=b).status_code != 200:
                    errors.append(1)

    threads = [threading.Thread(target=worker, args=(p,)) for p in chunks]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise RuntimeError(f"{len(errors)} callbacks refused")
    return len(bodies) / elapsed


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
        numbers = [f"4670{i:07d}" for i in range(n)]
        cid = d.enqueue(Campaign(plan="bench", sender="Bench", body="Hi", recipients=numbers))
        bodies = [
            json.dumps({
                "type": "recipient_delivery_report_sms", "batch_id": "B",
                "client_reference": f"{cid}.{i // 1000}", "recipient": num, "code": 0,
                "status": "Delivered",
            }).encode()
            for i, num in enumerate(numbers)
        ]  # fmt: skip
        before = int(client.info("memory")["used_memory"])
        proc = _serve(env, port)
        try:
            url = f"http://127.0.0.1:{port}/callbacks/bench/{plan_token(SECRET, 'bench')}"
            rate = _post_all(url, bodies)
            ceiling = _post_all(f"http://127.0.0.1:{port}/healthz", bodies[: n // 2])
        finally:
            proc.terminate()
            proc.wait(10)
        after = int(client.info("memory")["used_memory"])
        counted = d.status(cid).delivery["delivered"]
        rows.append([
            "per-recipient reports, ingested", f"{n:,}", f"{rate:,.0f}", f"{counted:,}",
            f"{(after - before) / n:.0f}",
        ])  # fmt: skip
        rows.append(
            ["the same server, no Redis (`/healthz`)", f"{n // 2:,}", f"{ceiling:,.0f}", "-", "-"]
        )
    return "\n".join(
        [
            "## Callback receiver",
            "",
            f"One `dispatcher callbacks` process (stdlib WSGI server, a thread per connection); "
            f"{THREADS} client threads with keep-alive httpx clients post per-recipient "
            "`recipient_delivery_report_sms` callbacks; each is one Lua call in Redis. Target: "
            "3,000/s.",
            "",
            md_table(
                ["case", "callbacks", "per second", "counted", "Redis bytes per recipient"], rows
            ),
            "",
        ]
    )
