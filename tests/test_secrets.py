"""Guarantee 6: API tokens appear in no log line, metric, DLQ entry, CLI output or exception text.

``assert_no_secrets`` is the check; the storm (test_storm.py) and the wrong-token run
(test_circuit.py) end with it, and the test here drives every path that handles a token
(a wrong token and its circuit, refusals into the DLQ, 5xx, dropped connections and lookups,
an unreachable provider, bad configuration, an unreachable Redis) and then looks everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import httpx
import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.config import Settings
from dispatcher.errors import ConfigError, LookupFailed
from dispatcher.sinch.client import SinchClient
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.conftest import ROOT, Deployment, wait_until


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def tokens_of(dep: Deployment) -> set[str]:
    return {v for k, v in dep.env.items() if k.endswith("_TOKEN") and v}


def redis_dump(r: redis.Redis) -> str:
    """Every key and value in Redis: plan state, stats (the metrics' source), DLQ, broker."""
    out: list[str] = []
    for key in r.scan_iter(count=1000):
        kind = _s(r.type(key))
        value: object
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        out.append(f"{key!r} {value!r}")
    return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics_text(dep: Deployment) -> str:
    """What Prometheus would scrape from `dispatcher metrics` for the whole deployment."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "metrics", "--port", str(port), "--host", "127.0.0.1"],
        env=dep.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                if resp.status_code == 200:
                    return resp.text
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"dispatcher metrics did not serve: {out[-2000:]}")
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            rest = proc.stdout.read().decode()
            for token in tokens_of(dep):
                assert token not in rest


def cli_outputs(dep: Deployment, r: redis.Redis) -> str:
    outs: list[str] = []
    campaigns = [_s(c) for c in r.hkeys(keys.CAMPAIGNS)]
    commands = [("plans",), ("plans", "--json"), ("dlq", "list"), ("dlq", "list", "--json")]
    commands += [("status", c, "--json") for c in campaigns[:5]]
    entries = json.loads(dep.cli("dlq", "list", "--json").stdout or "[]")
    commands += [("dlq", "show", e["id"]) for e in entries[:5]]
    for args in commands:
        out = dep.cli(*args)
        outs.append(f"$ {' '.join(args)}\n{out.stdout}{out.stderr}")
    return "\n".join(outs)


def assert_no_secrets(
    dep: Deployment, r: redis.Redis, texts: Iterable[str] = (), *, also: Iterable[str] = ()
) -> dict[str, int]:
    """Fail if any token of the deployment (or in ``also``) is in any output of the run.

    Returns the number of characters looked at per source (so a caller can show it is not
    looking at nothing).
    """
    tokens = tokens_of(dep) | set(also)
    assert tokens and all(len(t) >= 8 for t in tokens)
    sources = {
        "worker logs": dep.log_text(),
        "redis (state, stats, DLQ, broker)": redis_dump(r),
        "cli": cli_outputs(dep, r),
        "metrics": metrics_text(dep),
        "other": "\n".join(texts),
    }
    for where, text in sources.items():
        for token in tokens:
            assert token not in text, f"a token appears in the {where}"
    assert "Bearer " not in sources["worker logs"] + sources["redis (state, stats, DLQ, broker)"]
    return {k: len(v) for k, v in sources.items()}


def mobiles(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"4670{x:07d}" for x in rng.sample(range(10_000_000), n)]


@pytest.mark.slow
def test_no_token_anywhere(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([("sec-ok", 500, {"batch_size": 20}), ("sec-wrong", 500, {"batch_size": 20})])
    right = dep.env["SEC_WRONG_TOKEN"]
    wrong = "tok-wrong-b3arer-9f8e7d6c"
    dep.env["SEC_WRONG_TOKEN"] = wrong
    d = Dispatcher(dep.settings, r)
    ok_numbers = mobiles(200, 1)
    sim.faults.update(
        error_rate=0.2, drop_rate=0.1, illegal_numbers=[ok_numbers[5], ok_numbers[150]]
    )
    ok = d.enqueue(
        Campaign(plan="sec-ok", sender="Acme", body="Hi", recipients=["+" + n for n in ok_numbers])
    )
    bad = d.enqueue(
        Campaign(
            plan="sec-wrong", sender="Acme", body="Hi", recipients=["+" + n for n in mobiles(50, 2)]
        )
    )
    dep.start_worker(concurrency=2)
    wait_until(lambda: d.status(ok).state == "done", 60, "the healthy plan to finish")
    wait_until(lambda: d.status(bad).state == "paused", 30, "the wrong token's circuit to open")
    assert len(d.dead_letters("sec-ok")) == 2

    # Exception texts and reprs of everything that holds a token.
    texts: list[str] = []
    settings = dep.settings
    texts += [repr(settings), str(settings.plans), repr(settings.plans["sec-ok"])]
    client = SinchClient(timeout_s=2)
    try:
        resp = client.send_batch(settings.plans["sec-wrong"], b'{"to":["+46700000000"],"body":"x"}')
        texts.append(repr(resp))
        with pytest.raises(LookupFailed) as lookup:
            client.find_batch(settings.plans["sec-wrong"], "ref", datetime.now(UTC))
        texts += [str(lookup.value), repr(lookup.value)]
        unreachable = dataclasses.replace(
            settings.plans["sec-ok"], base_url=f"http://127.0.0.1:{free_port()}"
        )
        texts.append(repr(client.send_batch(unreachable, b"{}")))
        with pytest.raises(LookupFailed) as lookup:
            client.find_batch(unreachable, "ref", datetime.now(UTC))
        texts.append(str(lookup.value))
    finally:
        client.close()
    with pytest.raises(ConfigError) as config:  # a missing token names the variable only
        Settings.load(dep.config, env={k: v for k, v in dep.env.items() if k != "SEC_OK_TOKEN"})
    texts.append(str(config.value))
    assert "SEC_OK_TOKEN" in str(config.value)
    # A worker that cannot start: one line, no traceback, no token.
    broken = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency", "1"],
        env={**dep.env, "SEC_OK_TOKEN": ""}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert broken.returncode == 2, broken.stderr
    assert "Traceback" not in broken.stderr
    (line,) = broken.stderr.strip().splitlines()
    assert line.startswith(f"{dep.config}: ") and "SEC_OK_TOKEN" in line, line
    texts.append(broken.stdout + broken.stderr)
    # The CLI with an unreachable Redis whose URL carries a password.
    no_redis = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "plans"],
        env={**dep.env, "DISPATCH_REDIS_URL": f"redis://:{right}@127.0.0.1:{free_port()}/0"},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_redis.returncode == 1 and "cannot reach Redis" in no_redis.stderr
    texts.append(no_redis.stdout + no_redis.stderr)

    seen = assert_no_secrets(dep, r, texts, also=[right, wrong])
    assert all(seen.values()), seen
    assert "circuit open after 401" in dep.log_text()
